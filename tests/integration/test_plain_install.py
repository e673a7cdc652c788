"""Every command after a plain ``pip install flowsql`` and after each extra alone.

Each command runs in a fresh interpreter whose import system hides the optional
modules that install lacks (a ``sys.meta_path`` finder raising
``ModuleNotFoundError`` for them), then calls ``flowsql.cli.main()``. A command
works, or exits with one line naming the extra to install; never a traceback.
The commands of one install run in parallel, once; each is checked by its own
test.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Top-level modules of each extra in pyproject.toml.
KAFKA = ("confluent_kafka", "fastavro", "google.protobuf", "grpc_tools")
BENCH = ("duckdb", "matplotlib")
PEERS = ("quixstreams", "bytewax")
DEV = ("pytest", "hypothesis", *BENCH)  # the dev extra also installs duckdb and matplotlib
OPTIONAL = (*KAFKA, *BENCH, *PEERS, "pytest", "hypothesis")

#: What each install imports besides the core dependencies.
INSTALLS: dict[str, tuple[str, ...]] = {
    "plain": (),
    "kafka": KAFKA,
    "bench": BENCH,
    "dev": DEV,
    # the Kafka client installed by hand, without the extra's Avro/Protobuf modules
    "confluent-kafka-only": ("confluent_kafka",),
}

#: ``python -c BOOTSTRAP <blocked,modules> <flowsql argv...>``; with ``--screens
#: JSON`` instead of an argv, every argv of the JSON list in turn (help screens:
#: one interpreter instead of fourteen), each followed by an exit line on stdout.
BOOTSTRAP = """
import json
import sys

blocked = tuple(name for name in sys.argv[1].split(",") if name)


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
from flowsql.cli import main

if sys.argv[2:3] == ["--screens"]:
    for argv in json.loads(sys.argv[3]):
        sys.argv = ["flowsql", *argv]
        try:
            main()
        except SystemExit as stop:
            print(f"--- exit {stop.code} ---", flush=True)
else:
    sys.argv = ["flowsql", *sys.argv[2:]]
    main()
"""
SCREEN_END = re.compile(r"^--- exit (\S+) ---$", re.MULTILINE)

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1
TRADES = [
    {"symbol": "AAA", "price": 10.5, "quantity": 3, "timestamp": 1_704_067_200_000},
    {"symbol": "BBB", "price": 20.0, "quantity": 1, "timestamp": 1_704_067_200_400},
]
AVRO_SCHEMA = '{"type": "record", "name": "T", "fields": [{"name": "symbol", "type": "string"}]}'
PROTO = 'syntax = "proto3";\nmessage Trade { string symbol = 1; double price = 2; }\n'


@dataclass(frozen=True)
class Outcome:
    """One command's exit code and output, and the directory it ran in."""

    code: int
    stdout: str
    stderr: str
    cwd: Path

    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def _kafka_sql(data: Path, source_format: str = "json", sink_format: str = "json") -> str:
    props = {
        "trades.type": "kafka_source",
        "trades.topic": "in",
        "trades.format": source_format,
        "trades.bootstrap.servers": "127.0.0.1:1",
        "trades.group.id": "g",
        "trades.bounded": "latest",
        "trades.avro.schema": AVRO_SCHEMA,
        "trades.proto.file": str(data / "trade.proto"),
        "out.type": "kafka_sink",
        "out.topic": "out",
        "out.format": sink_format,
        "checkpoint.dir": "ckpt",
    }
    with_clause = ",\n  ".join(f"'{k}' = '{v}'" for k, v in props.items())
    return f"CREATE STREAM out AS SELECT symbol FROM trades\nWITH (\n  {with_clause}\n)\n"


def _write_inputs(data: Path) -> None:
    (data / "trades.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRADES))
    (data / "q.sql").write_text("SELECT symbol, price FROM trades WHERE price > 11\n")
    (data / "trade.proto").write_text(PROTO)
    (data / "kafka.sql").write_text(_kafka_sql(data))
    (data / "avro_in.sql").write_text(_kafka_sql(data, source_format="avro"))
    (data / "avro_out.sql").write_text(
        "CREATE STREAM out AS SELECT symbol FROM trades\nWITH ('out.type' = 'kafka_sink',"
        " 'out.topic' = 'out', 'out.format' = 'avro', 'out.bootstrap.servers' = '127.0.0.1:1')\n"
    )
    (data / "proto_in.sql").write_text(_kafka_sql(data, source_format="protobuf"))


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSQL_")}
    return env | {"COLUMNS": "200"}


def _command(install: str, argv: list[str]) -> list[str]:
    blocked = [m for m in OPTIONAL if m not in INSTALLS[install]]
    return [sys.executable, "-c", BOOTSTRAP, ",".join(blocked), *argv]


def _run(install: str, argv: list[str], cwd: Path) -> Outcome:
    cwd.mkdir(parents=True)
    done = subprocess.run(
        _command(install, argv),
        cwd=cwd,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, cwd)


@functools.cache
def _importable(module: str) -> bool:
    """Whether this test's own interpreter has ``module`` (nothing hidden here)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


# ------------------------------------------------------------------ the commands

SUBCOMMANDS = (
    "run",
    "demo",
    "explain",
    "validate",
    "server",
    "deploy",
    "jobs",
    "status",
    "stop",
    "pause",
    "resume",
    "switch",
    "bench",
)
SCREENS = [["--help"], *([sub, "--help"] for sub in SUBCOMMANDS)]
BENCH_ARGS = "--records 2000 --repeat 1 --partitions 1 --scenarios 0_select"

#: Case name -> argv ({data} is the shared inputs' directory).
COMMANDS: dict[str, str] = {
    "help": "--screens " + json.dumps(SCREENS, separators=(",", ":")),
    "demo": "demo --records 2000 --batch-size 500",
    "validate": "validate {data}/q.sql",
    "explain": "explain {data}/q.sql",
    "run": "run {data}/q.sql --input trades={data}/trades.jsonl --output - --quiet",
    "run-generator": "run {data}/q.sql --input trades=generator:records=500 --output out.jsonl",
    "run-kafka": "run {data}/kafka.sql",
    "run-kafka-avro-source": "run {data}/avro_in.sql",
    "run-kafka-avro-sink": "run {data}/avro_out.sql --input trades={data}/trades.jsonl",
    "run-kafka-protobuf": "run {data}/proto_in.sql",
    "bench": f"bench {BENCH_ARGS} --json bench.json --plot bench.png",
    "bench-peers": f"bench {BENCH_ARGS} --peers --peer-records 500",
    "deploy": f"deploy {{data}}/q.sql --server {CLOSED}",
    "jobs": f"jobs --server {CLOSED}",
}
KAFKA_CASES = ("run-kafka", "run-kafka-avro-source", "run-kafka-avro-sink", "run-kafka-protobuf")
#: The cases each install runs: the hand-made Kafka client install only the Kafka
#: ones; an install with fastavro does not run the Avro sink, whose producer would
#: wait a minute for the closed port's broker.
CASES = {
    name: tuple(
        case
        for case in (KAFKA_CASES if name == "confluent-kafka-only" else COMMANDS)
        if not (case == "run-kafka-avro-sink" and "fastavro" in have)
    )
    for name, have in INSTALLS.items()
}


class Runs:
    """Every case of an install, run in parallel on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir()
        _write_inputs(self.data)
        self.done: dict[str, dict[str, Outcome]] = {}

    def of(self, install: str, case: str) -> Outcome:
        if install not in self.done:
            self.done[install] = self._run_all(install)
        return self.done[install][case]

    def _run_all(self, install: str) -> dict[str, Outcome]:
        def one(case: str) -> Outcome:
            argv = COMMANDS[case].format(data=self.data).split()
            return _run(install, argv, self.root / install / case)

        cases = CASES[install]
        workers = (os.cpu_count() or 2) + 2  # the Kafka cases mostly wait
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(cases, pool.map(one, cases), strict=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("installs"))


# ------------------------------------------------------------------ what each must do

Have = tuple[str, ...]


def _ok(out: Outcome, have: Have = ()) -> None:
    assert out.code == 0, out.stderr


def _needs(out: Outcome, extra: str, *words: str) -> None:
    """Exit 2 with one line naming the extra (and ``words``)."""
    assert out.code == 2, out.stderr
    assert len(out.lines()) == 1, out.stderr
    assert f"pip install 'flowsql[{extra}]'" in out.stderr
    for word in words:
        assert word in out.stderr


def _help(out: Outcome, have: Have) -> None:
    _ok(out)
    screens = SCREEN_END.split(out.stdout)  # text, code, text, code, ..., ""
    assert len(screens) == 2 * len(SCREENS) + 1, out.stdout
    for argv, text, code in zip(SCREENS, screens[0::2], screens[1::2], strict=False):
        usage = " ".join(["flowsql", *argv[:-1]])
        assert code == "0" and f"Usage: {usage} " in text, (argv, text)


def _run_file(out: Outcome, have: Have) -> None:
    _ok(out)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows == [{"symbol": "BBB", "price": 20.0}]


def _run_generator(out: Outcome, have: Have) -> None:
    _ok(out)
    assert (out.cwd / "out.jsonl").read_text().strip()


def _run_kafka(out: Outcome, have: Have) -> None:
    if "confluent_kafka" not in have:
        _needs(out, "kafka")
        return
    assert out.code == 2, out.stderr  # the broker cannot be reached: nothing ran
    assert out.lines()[-1].startswith("error: job 'out': Kafka cluster at 127.0.0.1:1")


def _run_avro(out: Outcome, have: Have) -> None:
    if "confluent_kafka" in have and "fastavro" not in have:
        _needs(out, "kafka", "avro format needs fastavro")
    else:
        _run_kafka(out, have)


def _run_protobuf(out: Outcome, have: Have) -> None:
    if "confluent_kafka" in have and "grpc_tools" not in have:
        _needs(out, "kafka", "protobuf format needs protobuf and grpcio-tools")
    else:
        _run_kafka(out, have)


def _bench(out: Outcome, have: Have) -> None:
    _ok(out)
    duck_note = "note: skipping the DuckDB reference: duckdb is not installed"
    chart_note = "note: skipping the chart: matplotlib is not installed"
    results = json.loads((out.cwd / "bench.json").read_text())["results"]
    assert [r["error"] for r in results] == [None] * len(results)
    runners = {r["runner"] for r in results}
    assert runners == {"direct", "V1", "V2", "ceiling"} | ({"duckdb"} & set(have))
    assert (duck_note in out.stderr) == ("duckdb" not in have)
    assert (out.cwd / "bench.png").exists() == ("matplotlib" in have)
    assert (chart_note in out.stderr) == ("matplotlib" not in have)
    notes = [line for line in out.lines() if line.startswith("note: ")]
    assert all(line.endswith("(pip install 'flowsql[bench]')") for line in notes)


def _bench_peers(out: Outcome, have: Have) -> None:
    if all(_importable(m) for m in PEERS):  # the peers probe runs an unblocked interpreter
        pytest.skip("quixstreams and bytewax are installed here: cannot hide them from the probe")
    _needs(out, "peers", "--peers")


def _unreachable(out: Outcome, have: Have) -> None:
    assert out.code == 1, out.stderr
    assert len(out.lines()) == 1, out.stderr
    assert out.stderr.startswith(f"error: cannot reach the flowsql server at {CLOSED}")


CHECKS: dict[str, Callable[[Outcome, Have], None]] = {
    "help": _help,
    "demo": _ok,
    "validate": _ok,
    "explain": _ok,
    "run": _run_file,
    "run-generator": _run_generator,
    "run-kafka": _run_kafka,
    "run-kafka-avro-source": _run_avro,
    "run-kafka-avro-sink": _run_avro,
    "run-kafka-protobuf": _run_protobuf,
    "bench": _bench,
    "bench-peers": _bench_peers,
    "deploy": _unreachable,
    "jobs": _unreachable,
}


def _available(install: str) -> None:
    missing = [m for m in INSTALLS[install] if not _importable(m)]
    if missing:
        pytest.skip(f"this environment lacks {', '.join(missing)}: cannot stand for {install!r}")


@pytest.mark.parametrize(
    ("install", "case"), [(install, case) for install, cases in CASES.items() for case in cases]
)
def test_command_works_or_names_the_extra(runs: Runs, install: str, case: str) -> None:
    _available(install)
    out = runs.of(install, case)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert "ModuleNotFoundError" not in out.stderr, out.stderr
    CHECKS[case](out, INSTALLS[install])


def test_every_case_is_checked() -> None:
    assert set(CHECKS) == set(COMMANDS)


# ------------------------------------------------------------------ a live job server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("flowsql server did not start")


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[str]:
    """``flowsql server`` of a plain install on a free port; yields its URL."""
    port = _free_port()
    argv = ["server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        _command("plain", argv),
        cwd=tmp_path,
        env=_environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
        assert "Traceback" not in err


def test_plain_install_serves_and_queries_jobs(plain_server: str, tmp_path: Path) -> None:
    listed = _run("plain", ["jobs", "--server", plain_server, "--json"], tmp_path / "jobs")
    assert listed.code == 0, listed.stderr
    assert json.loads(listed.stdout)["jobs"] == []
    missing = _run("plain", ["status", "nosuch", "--server", plain_server], tmp_path / "status")
    assert missing.code == 1, missing.stderr
    assert missing.stderr.startswith("error: ") and "nosuch" in missing.stderr
    assert "Traceback" not in missing.stderr
