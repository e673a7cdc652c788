"""File roots are checked when a file is opened, not only at deploy (issue 9).

A directory under ``server.file_roots`` swapped for a symlink after the job was
deployed must not let a sink write (or a source read) outside the roots: the
open fails with the reason and nothing is written outside.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowsql.connectors.files import open_sink, open_source
from flowsql.connectors.paths import Directory, open_readable
from flowsql.errors import ConnectorError
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer

ROWS = [{"symbol": "a", "price": 1.5}, {"symbol": "b", "price": 2.5}]
BATCH = pa.record_batch({"a": [1, 2]})


def _outside(root: Path) -> Path:
    return root.parent / "outside"


def _swap_for_symlink(directory: Path, target: Path) -> None:
    """Replace ``directory`` with a symlink to ``target`` (what an attacker does)."""
    directory.rename(directory.with_name(directory.name + ".old"))
    directory.symlink_to(target, target_is_directory=True)


def _write_input(directory: Path, name: str) -> Path:
    path = directory / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif name.endswith(".csv"):
        path.write_text("symbol,price\na,1.5\nb,2.5\n")
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ------------------------------------------------------------------------------ sinks


@pytest.mark.parametrize("atomic", [True, False])
def test_sink_directory_swapped_for_a_symlink_before_opening(root: Path, atomic: bool) -> None:
    sink = open_sink(root / "sub" / "out.jsonl", roots=(root,), atomic=atomic)
    _swap_for_symlink(root / "sub", _outside(root) / "sub")
    with pytest.raises(ConnectorError, match="outside the file roots"):
        sink.write(BATCH)
    sink.abort()
    assert _files(_outside(root)) == ["sub"]


def test_sink_target_symlink_out_of_the_roots(root: Path) -> None:
    (root / "sub" / "out.jsonl").symlink_to(_outside(root) / "sub" / "stolen.jsonl")
    sink = open_sink(root / "sub" / "out.jsonl", roots=(root,))
    with pytest.raises(ConnectorError, match="outside the file roots"):
        sink.close()
    assert _files(_outside(root)) == ["sub"]


def test_sink_directory_moved_out_while_writing(root: Path) -> None:
    sink = open_sink(root / "sub" / "out.jsonl", roots=(root,))
    sink.write(BATCH)
    (root / "sub").rename(_outside(root) / "moved")
    with pytest.raises(ConnectorError, match="moved outside the file roots"):
        sink.close()
    assert list((_outside(root) / "moved").iterdir()) == []  # temporary file deleted too


def test_symlink_swapped_in_between_the_check_and_the_open(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race itself: the path resolves inside the root, then a directory on it
    becomes a symlink before the open; the open walks without following it."""
    import flowsql.connectors.paths as paths

    checked = paths.confined

    def check_then_swap(path: Path, roots: tuple[Path, ...], *, what: str = "file") -> Path:
        resolved = checked(path, roots, what=what)
        if (root / "sub").is_dir() and not (root / "sub").is_symlink():
            _swap_for_symlink(root / "sub", _outside(root) / "sub")
        return resolved

    monkeypatch.setattr(paths, "confined", check_then_swap)
    with pytest.raises(ConnectorError, match="symlink"):
        Directory(root / "sub", (root,), what="output directory")
    assert _files(_outside(root)) == ["sub"]


def test_confined_sink_writes_atomically_in_place(root: Path) -> None:
    target = root / "sub" / "out.jsonl"
    sink = open_sink(target, roots=(root,))
    sink.write(BATCH)
    assert [p.name for p in (root / "sub").iterdir()][0].endswith(".tmp")
    sink.close()
    assert target.read_text() == '{"a":1}\n{"a":2}\n'
    assert _files(root) == ["sub", "sub/out.jsonl"]


def test_unconfined_sink_follows_symlinks(tmp_path: Path) -> None:
    """The CLI has no roots: a symlinked output directory is fine."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    sink = open_sink(tmp_path / "link" / "out.jsonl")
    sink.write(BATCH)
    sink.close()
    assert (tmp_path / "real" / "out.jsonl").read_text() == '{"a":1}\n{"a":2}\n'


def test_missing_output_directory(root: Path) -> None:
    sink = open_sink(root / "nope" / "out.jsonl", roots=(root,))
    with pytest.raises(ConnectorError, match="nope"):
        sink.write(BATCH)
    sink = open_sink(root / "nope" / "out.jsonl")
    with pytest.raises(ConnectorError, match="output directory does not exist"):
        sink.write(BATCH)


# ---------------------------------------------------------------------------- sources


@pytest.mark.parametrize("name", ["in.jsonl", "in.csv", "in.parquet"])
def test_source_directory_swapped_for_a_symlink(root: Path, name: str) -> None:
    _write_input(root / "sub", name)
    _write_input(_outside(root) / "sub", name)
    source = open_source(root / "sub" / name, roots=(root,))
    assert source.schema.names[:2] == ["symbol", "price"]  # read from inside the root
    _swap_for_symlink(root / "sub", _outside(root) / "sub")
    with pytest.raises(ConnectorError, match="outside the file roots"):
        list(source.batches())


@pytest.mark.parametrize("name", ["in.jsonl", "in.csv", "in.parquet"])
def test_confined_source_reads_inside_its_root(root: Path, name: str) -> None:
    source = open_source(_write_input(root / "sub", name), roots=(root,))
    rows = pa.Table.from_batches(list(source.batches())).select(["symbol", "price"])
    assert rows.to_pylist() == ROWS


def test_source_must_be_a_regular_file(root: Path) -> None:
    os.mkfifo(root / "sub" / "in.jsonl")  # would block a reader forever
    with pytest.raises(ConnectorError, match="not a regular file"):
        open_readable(root / "sub" / "in.jsonl", (root,))


# ------------------------------------------------------------------- the job server


def test_job_fails_when_its_sink_directory_becomes_a_symlink(root: Path) -> None:
    """Deployed with the sink under root/sub (allowed), paused before the sink
    opened its file (no row passes the filter, so it opens when the input ends),
    then root/sub is swapped for a symlink to a directory outside: once resumed
    the job fails with the reason and writes nothing there."""
    server = StreamJobServer(ServerSettings(file_roots=[str(root)]))
    sql = (
        "CREATE STREAM out AS SELECT symbol, price FROM trades WHERE price < 0"
        " WITH ('trades.type' = 'generator', 'trades.records' = '10000000',"
        f" 'out.type' = 'file_sink', 'out.path' = '{root / 'sub' / 'out.jsonl'}')"
    )
    try:
        server.deploy(sql)
        assert server.pause("out").state == "PAUSED"
        _swap_for_symlink(root / "sub", _outside(root) / "sub")
        server.resume("out")
        deadline = time.monotonic() + 120
        while server.status("out").state not in ("FINISHED", "FAILED"):
            assert time.monotonic() < deadline, server.status("out")
            time.sleep(0.05)
        status = server.status("out")
    finally:
        server.shutdown()
    assert status.state == "FAILED", status
    assert status.last_error and "outside the file roots" in status.last_error
    assert _files(_outside(root)) == ["sub"]
    assert _files(root) == ["sub", "sub.old"]
