"""File roots checked at open time where the first pass missed them (issue 9).

- V2 reads a JSON lines input as splits, each opened by a worker: a split
  carries the job's file roots and opens the file as the source would, so a
  directory swapped for a symlink fails the run as it fails V1.
- The dead-letter file (``'dlq.path'``) obeys the sink-name rule and is opened
  under the file roots like a sink.
- Ctrl-C on the whole process group stops a V2 run without worker tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flowsql.connectors.dlq import JsonlDeadLetters
from flowsql.connectors.files import open_sink, open_source
from flowsql.errors import ConfigError, ConnectorError, FlowSQLError
from flowsql.records import DeadLetter
from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.runner import run_job
from flowsql.runtime.splits import jsonl_splits, source_splits
from flowsql.server.api import create_app
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer
from flowsql.sql import parse_one
from tests.security.test_paths import _outside, _swap_for_symlink

FLOWSQL = str(Path(sys.executable).with_name("flowsql"))
QUERY = "SELECT symbol, price FROM trades WHERE price > 0"
LETTER = DeadLetter("bad", "{not json", "trades", "in.jsonl:3", "decode")


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _trades(path: Path, symbol: str, rows: int = 2_000) -> Path:
    path.write_text(
        "".join(json.dumps({"symbol": symbol, "price": 1.0 + i}) + "\n" for i in range(rows))
    )
    return path


def _wait_terminal(server: StreamJobServer, name: str) -> str:
    deadline = time.monotonic() + 120
    while (state := server.status(name).state) not in ("FINISHED", "FAILED"):
        assert time.monotonic() < deadline, server.status(name)
        time.sleep(0.05)
    return state


# -------------------------------------------------------------------- V2 splits


def test_v2_splits_fail_like_v1_when_the_source_directory_becomes_a_symlink(root: Path) -> None:
    path = _trades(root / "sub" / "in.jsonl", "inside")
    _trades(_outside(root) / "sub" / "in.jsonl", "stolen")
    splits = jsonl_splits(path, source="trades", split_bytes=4_096, roots=(root,))
    assert splits is not None and len(splits) > 3
    v1 = open_source(path, name="trades", roots=(root,))
    _swap_for_symlink(root / "sub", _outside(root) / "sub")
    with pytest.raises(ConnectorError, match="outside the file roots") as v1_error:
        list(v1.batches())
    rows: list[dict[str, object]] = []
    with (
        PartitionedJobCoordinator(parse_one(QUERY), num_partitions=2) as v2,
        pytest.raises(FlowSQLError) as v2_error,
    ):
        for batch in v2.run_splits(splits):
            rows += batch.to_pylist()
    assert str(v1_error.value) in str(v2_error.value)
    assert rows == []


def test_source_splits_carry_the_sources_roots_into_a_v2_run(root: Path) -> None:
    path = _trades(root / "sub" / "in.jsonl", "inside", rows=50)
    source = open_source(path, name="trades", roots=(root,))
    assert [s.roots for s in source_splits(source) or []] == [(root,)]
    report = run_job(
        parse_one(QUERY),
        source,
        open_sink(root / "out.jsonl", roots=(root,)),
        processor=lambda stmt, _: PartitionedJobCoordinator(stmt, num_partitions=2),
    )
    assert report.records_in == report.records_out == 50
    out = [json.loads(line) for line in (root / "out.jsonl").read_text().splitlines()]
    assert {row["symbol"] for row in out} == {"inside"}


def test_unconfined_splits_follow_symlinks(tmp_path: Path) -> None:
    """The CLI has no roots: an input reached through a symlink is fine."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    _trades(tmp_path / "real" / "in.jsonl", "a", rows=50)
    splits = jsonl_splits(tmp_path / "link" / "in.jsonl", source="trades", split_bytes=512)
    assert splits is not None and len(splits) > 1
    assert sum(s.lines() for s in splits) == 50
    assert sum(b.num_rows for s in splits for b in s.read().batches) == 50


# ------------------------------------------------------------- dead-letter file


def _deploy_over_http(server: StreamJobServer, sql: str) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.post("/jobs", json={"sql": sql}, headers={"X-FlowSQL-Request": "1"})

    return asyncio.run(post())


def _generator_job(dlq: Path, records: int = 100) -> str:
    return (
        "CREATE STREAM out AS SELECT symbol, price FROM trades WHERE price < 0"
        f" WITH ('trades.type' = 'generator', 'trades.records' = '{records}',"
        f" 'dlq.path' = '{dlq}')"
    )


@pytest.mark.parametrize("name", ["x.py", "sitecustomize.PY.", "evil.pth", ".bashrc"])
def test_server_refuses_a_dead_letter_file_python_would_run(root: Path, name: str) -> None:
    settings = ServerSettings(file_roots=[str(root)], allowed_hosts=["127.0.0.1"])
    server = StreamJobServer(settings)
    try:
        response = _deploy_over_http(server, _generator_job(root / name))
        assert response.status_code == 400, response.text
        assert response.json()["key"] == "dlq.path"
        assert server.jobs() == []
    finally:
        server.shutdown()
    assert _files(root) == ["sub"]


def test_dead_letter_file_refuses_python_names_whoever_opens_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.py"):
        JsonlDeadLetters(tmp_path / "x.py")
    assert list(tmp_path.iterdir()) == []


def test_dead_letter_directory_swapped_for_a_symlink(root: Path) -> None:
    letters = JsonlDeadLetters(root / "sub" / "dlq.jsonl", roots=(root,))
    _swap_for_symlink(root / "sub", _outside(root) / "sub")
    with pytest.raises(ConnectorError, match="outside the file roots"):
        letters.write([LETTER])
    with pytest.raises(ConnectorError, match="outside the file roots"):
        letters.close()
    assert _files(_outside(root)) == ["sub"]


def test_dead_letter_directory_swapped_between_the_check_and_the_open(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race itself: root/sub resolves inside the root, then becomes a symlink
    before the open, which walks to it without following symlinks."""
    import flowsql.connectors.paths as paths

    checked = paths.confined

    def check_then_swap(path: Path, roots: tuple[Path, ...], *, what: str = "file") -> Path:
        resolved = checked(path, roots, what=what)
        if not (root / "sub").is_symlink():
            _swap_for_symlink(root / "sub", _outside(root) / "sub")
        return resolved

    monkeypatch.setattr(paths, "confined", check_then_swap)
    letters = JsonlDeadLetters(root / "sub" / "dlq.jsonl", roots=(root,))
    with pytest.raises(ConnectorError, match="symlink"):
        letters.write([LETTER])
    assert _files(_outside(root)) == ["sub"]


def test_confined_dead_letters_are_written_and_appended(root: Path) -> None:
    path = root / "sub" / "dlq.jsonl"
    letters = JsonlDeadLetters(path, roots=(root,))
    letters.write([LETTER])
    letters.close()
    letters.write([LETTER])  # reopened after close(): appended
    letters.close()
    assert [json.loads(x)["error"] for x in path.read_text().splitlines()] == ["bad", "bad"]


def test_unconfined_dead_letters_follow_symlinks(tmp_path: Path) -> None:
    """The CLI's --dlq has no roots: a symlinked directory is fine."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    letters = JsonlDeadLetters(tmp_path / "link" / "dlq.jsonl", key="--dlq")
    letters.write([LETTER])
    letters.close()
    assert json.loads((tmp_path / "real" / "dlq.jsonl").read_text())["error"] == "bad"


def test_server_job_writes_no_dead_letter_file_outside_after_a_swap(root: Path) -> None:
    """Deployed with 'dlq.path' under root/sub (allowed) and paused before the
    file was opened (it is created when the job ends), then root/sub becomes a
    symlink to a directory outside: nothing is created there."""
    server = StreamJobServer(ServerSettings(file_roots=[str(root)]))
    try:
        server.deploy(_generator_job(root / "sub" / "dlq.jsonl", records=10_000_000))
        assert server.pause("out").state == "PAUSED"
        _swap_for_symlink(root / "sub", _outside(root) / "sub")
        server.resume("out")
        _wait_terminal(server, "out")
    finally:
        server.shutdown()
    assert _files(_outside(root)) == ["sub"]
    assert _files(root) == ["sub", "sub.old"]


# ------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_on_the_process_group_stops_v2_without_tracebacks(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals every process of the group, V2 workers too:
    they leave stopping to the coordinator instead of dying with a traceback."""
    (tmp_path / "q.sql").write_text(QUERY)
    run = subprocess.Popen(
        [FLOWSQL, "run", "q.sql", "-i", "trades=generator:records=500000000", "-o", "out.jsonl"]
        + ["--processor", "v2", "--partitions", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # workers busy
            assert run.poll() is None and time.monotonic() < deadline, "no output started"
            time.sleep(0.02)
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "interrupted by SIGINT" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.sql"]
