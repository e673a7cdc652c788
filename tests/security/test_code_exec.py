"""No code execution from the working directory (issue 9).

A job's file sink could write ``secrets.py`` (a CSV header is enough Python) into
the server's working directory; V2 worker processes used to start with that
directory first on ``sys.path`` and import it. Shown refused twice: workers
import nothing from the working directory, and sinks never take such a name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowsql.connectors.files import open_sink
from flowsql.connectors.paths import check_sink_path, environment_dirs
from flowsql.errors import ConfigError
from flowsql.runtime.worker import PACKAGE_HOME, clean_sys_path, worker_preparation
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer

FLOWSQL = str(Path(sys.executable).with_name("flowsql"))
#: Modules the fork server, a worker or the engine import: planted in the working directory.
HIJACKED = (
    "socket",
    "selectors",
    "secrets",
    "json",
    "numpy",
    "pyarrow",
    "polars",
    "sqlglot",
    "msgspec",
    "multiprocessing",
)


def _plant(directory: Path, marker: Path) -> None:
    for name in HIJACKED:
        (directory / f"{name}.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).open('a').write({name!r} + '\\n')\n"
            f"raise ImportError('imported {name} from the working directory')\n"
        )


@pytest.mark.parametrize("processor", ["v1", "v2"])
def test_run_imports_nothing_from_the_working_directory(tmp_path: Path, processor: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "imported.txt"
    _plant(work, marker)
    (work / "q.sql").write_text("SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol")
    (work / "in.jsonl").write_text('{"symbol": "a", "price": 1.0}\n{"symbol": "b", "price": 2}\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    done = subprocess.run(
        [FLOWSQL, "run", "q.sql", "-i", "in.jsonl", "-o", "out.jsonl"]
        + ["--processor", processor, "--partitions", "2"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not marker.exists(), marker.read_text()
    assert done.returncode == 0, done.stderr
    assert len((work / "out.jsonl").read_text().splitlines()) == 2


def test_clean_sys_path_drops_the_working_directory(tmp_path: Path) -> None:
    cwd = str(tmp_path)
    path = ["", ".", cwd, cwd + "/", cwd + "/./", "/usr/lib/python3", "lib"]
    assert clean_sys_path(path, cwd) == ["/usr/lib/python3", "lib"]
    (tmp_path / "link").symlink_to(tmp_path)
    assert clean_sys_path([str(tmp_path / "link"), "/x"], cwd) == ["/x"]


def test_the_checkout_holding_flowsql_stays_importable() -> None:
    path = ["", PACKAGE_HOME, "/x"]
    assert clean_sys_path(path, PACKAGE_HOME) == path


def test_worker_preparation_has_a_clean_path_and_no_main_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), *sys.path])
    data = worker_preparation("flowsql-test-p0")
    assert "" not in data["sys_path"] and str(tmp_path) not in data["sys_path"]
    assert "init_main_from_path" not in data and "init_main_from_name" not in data
    assert data["dir"] == str(tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "secrets.py",
        "SECRETS.PY",
        "x.py.",
        "x.py ",
        "x.py. . ",
        "evil.pth",
        "m.pyc",
        "ext.cpython-311-x86_64-linux-gnu.so",
        "libx.so.1",
        "run.sh",
        "a.bat",
        "pkg.whl",
        "app.pyz",
        ".bashrc",
        ".envrc",
    ],
)
def test_sinks_refuse_names_python_or_a_shell_would_run(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_sink(tmp_path / name, format="csv", key="out.path")
    assert caught.value.key == "out.path" and name in str(caught.value)
    assert ".py" in caught.value.allowed
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.jsonl", "report.py.csv", "data.parquet", "x.csv"])
def test_ordinary_names_are_fine(tmp_path: Path, name: str) -> None:
    check_sink_path(tmp_path / name)


def test_sinks_refuse_the_package_and_the_environment() -> None:
    package = Path(__file__).resolve().parents[2] / "flowsql"
    for path in (
        package / "out.jsonl",
        Path(sys.prefix) / "out.jsonl",
        *(d / "out.csv" for d in environment_dirs()),
    ):
        with pytest.raises(ConfigError, match="Python environment"):
            check_sink_path(path, key="out.path")


def _csv_sink_job(path: Path, name: str = "out") -> str:
    return (
        f"CREATE STREAM {name} AS SELECT symbol, price FROM trades"
        " WITH ('trades.type' = 'generator', 'trades.records' = '100',"
        f" '{name}.type' = 'file_sink', '{name}.path' = '{path}', '{name}.format' = 'csv')"
    )


def test_server_refuses_a_python_file_sink_in_its_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.chdir(root)  # the working directory lies inside the file root
    server = StreamJobServer(ServerSettings(file_roots=[str(root)]))
    try:
        for name in ("secrets.py", "Json.PY.", "x.pth"):
            with pytest.raises(ConfigError) as caught:
                server.deploy(_csv_sink_job(root / name))
            assert caught.value.key == "out.path" and name in str(caught.value)
        assert server.jobs() == [] and list(root.iterdir()) == []
    finally:
        server.shutdown()


def test_server_refuses_a_sink_inside_the_python_environment(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    server = StreamJobServer(ServerSettings(file_roots=[str(venv), str(tmp_path)]))
    try:
        target = venv / "flowsql-test-out.csv"
        with pytest.raises(ConfigError, match="Python environment"):
            server.deploy(_csv_sink_job(target))
        assert not target.exists() and server.jobs() == []
    finally:
        server.shutdown()
