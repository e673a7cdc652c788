"""Hostile input files through ``flowsql run`` on V1 and V2 (issue 9).

Every file of a corpus built here either runs to the end with each record
accounted for (``output rows + dead letters = input records``, exit 0) or is
refused with one clean line naming the file (exit 2, no output written); never
a traceback, never a value silently changed. Parametrized in-process over
files x processors (typer's runner), and through the console script for a few.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.connectors.jsonl import MAX_JSON_DEPTH

FLOWSQL = str(Path(sys.executable).with_name("flowsql"))
INT64_MAX = (1 << 63) - 1
GOOD = [{"id": i, "name": f"n{i}", "price": i + 0.5} for i in range(6)]
PROCESSORS = {"v1": ["--processor", "v1"], "v2": ["--processor", "v2", "--partitions", "2"]}
SUMMARY = {"v1": "V1 x1)", "v2": "V2 x2)"}


@dataclass(frozen=True)
class Case:
    """A hostile file and what must come of it."""

    name: str
    write: Callable[[Path], None]
    records: int  # records in the file (non-blank lines; rows for Parquet)
    dead: int | None  # expected dead letters (None: all records minus the output)
    exit_code: int = 0
    reason: str = ""  # in every dead letter's error (or the error line when refused)


def _lines(rows: list[object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _all_bad(path: Path) -> None:
    path.write_bytes(b'nope\n{"unterminated": \n[1, 2]\n"a string"\n{"a": 1}{"b": 2}\n')


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(9).randbytes(6000))


def _random_records() -> int:
    data = random.Random(9).randbytes(6000)
    return sum(1 for line in data.split(b"\n") if line.strip())


def _deep_line(path: Path) -> None:
    deep = b'{"id": 99, "name": ' + b"[" * 50_000 + b"]" * 50_000 + b', "price": 1.0}\n'
    path.write_bytes(_lines(GOOD[:3]) + deep + _lines(GOOD[3:]))


def _bad_utf8_csv(path: Path) -> None:
    rows = [f"{r['id']},{r['name']},{r['price']}".encode() for r in GOOD]
    rows.insert(3, b"77,caf\xe9 \xff,1.5")
    path.write_bytes(b"id,name,price\n" + b"\n".join(rows) + b"\n")


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(GOOD), sink)
    return bytes(sink.getvalue().to_pybytes())


def _corrupt_parquet(path: Path) -> None:
    path.write_bytes(b"PAR1" + random.Random(3).randbytes(300) + b"PAR1")


def _truncated_parquet(path: Path) -> None:
    data = _parquet_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty_parquet(path: Path) -> None:
    path.write_bytes(b"")


BIG_INTS = [INT64_MAX + 1, 99_999_999_999_999_999_999, -(1 << 63) - 1]


def _big_ints(path: Path) -> None:
    rows: list[object] = [{"id": INT64_MAX, "v": 1}, {"id": -(1 << 63), "v": 2}]
    rows += [{"id": big, "v": 3} for big in BIG_INTS]
    rows += [{"id": 7, "v": 4}, {"id": 9_007_199_254_740_993, "v": 5}]
    path.write_bytes(_lines(rows))


CASES = [
    Case("all_bad.jsonl", _all_bad, 5, 5),
    Case("random.jsonl", _random_bytes, _random_records(), None, reason="invalid JSON"),
    Case("deep.jsonl", _deep_line, 7, 1, reason="nested too deep"),
    Case("bad_utf8.csv", _bad_utf8_csv, 7, 1, reason="invalid UTF-8"),
    Case("corrupt.parquet", _corrupt_parquet, 0, 0, 2, "cannot read Parquet file"),
    Case("truncated.parquet", _truncated_parquet, 0, 0, 2, "cannot read Parquet file"),
    Case("empty.parquet", _empty_parquet, 0, 0, 2, "cannot read Parquet file"),
    Case("big_ints.jsonl", _big_ints, 7, 3, reason="does not fit in int64"),
]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check(
    case: Case, work: Path, source: str, processor: str, exit_code: int, stderr: str
) -> None:
    """What every run must show: the exit code, no traceback, every record accounted
    for (``source``: the input path as given, which dead-letter positions start with)."""
    assert "Traceback" not in stderr
    assert exit_code == case.exit_code, stderr
    out, dlq = work / "out.jsonl", work / "dlq.jsonl"
    if case.exit_code:
        assert not out.exists()
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and case.reason in lines[0] and case.name in lines[0], stderr
        return
    rows, letters = _read_jsonl(out), _read_jsonl(dlq)
    assert len(rows) + len(letters) == case.records, stderr
    if case.dead is not None:
        assert len(letters) == case.dead
    assert f"{len(letters):,} dead-lettered" in stderr and SUMMARY[processor] in stderr
    for letter in letters:
        assert case.reason in str(letter["error"])
        assert str(letter["position"]).startswith(f"{source}:")


@pytest.mark.parametrize("processor", sorted(PROCESSORS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_record_is_output_or_dead_letter(
    app: typer.Typer, tmp_path: Path, case: Case, processor: str
) -> None:
    source = str(tmp_path / case.name)
    case.write(Path(source))
    (tmp_path / "q.sql").write_text("SELECT * FROM t\n")
    args = ["run", str(tmp_path / "q.sql"), "--input", f"t={source}"]
    args += ["--output", str(tmp_path / "out.jsonl"), "--dlq", str(tmp_path / "dlq.jsonl")]
    result = CliRunner().invoke(app, [*args, *PROCESSORS[processor]])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    _check(case, tmp_path, source, processor, result.exit_code, result.stderr)


@pytest.mark.parametrize(
    ("name", "processor"),
    [("deep.jsonl", "v2"), ("bad_utf8.csv", "v1"), ("truncated.parquet", "v2")],
)
def test_console_script(tmp_path: Path, name: str, processor: str) -> None:
    case = next(c for c in CASES if c.name == name)
    case.write(tmp_path / case.name)
    (tmp_path / "q.sql").write_text("SELECT * FROM t\n")
    done = subprocess.run(
        [FLOWSQL, "run", "q.sql", "--input", f"t={case.name}", "--output", "out.jsonl"]
        + ["--dlq", "dlq.jsonl", *PROCESSORS[processor]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _check(case, tmp_path, case.name, processor, done.returncode, done.stderr)


def test_values_are_kept_exactly(app: typer.Typer, tmp_path: Path) -> None:
    """Integers beyond int64 are dead letters naming column and value; the others
    stay integers (int64's extremes and 2**53 + 1 included), never floats."""
    _big_ints(tmp_path / "big.jsonl")
    (tmp_path / "q.sql").write_text("SELECT id, v FROM t\n")
    result = CliRunner().invoke(
        app,
        ["run", str(tmp_path / "q.sql"), "--input", f"t={tmp_path / 'big.jsonl'}"]
        + ["--output", str(tmp_path / "out.jsonl"), "--dlq", str(tmp_path / "dlq.jsonl")],
    )
    assert result.exit_code == 0, result.output
    ids = [row["id"] for row in _read_jsonl(tmp_path / "out.jsonl")]
    assert ids == [INT64_MAX, -(1 << 63), 7, 9_007_199_254_740_993]
    assert all(type(i) is int for i in ids)
    errors = [x["error"] for x in _read_jsonl(tmp_path / "dlq.jsonl")]
    assert errors == [f"column 'id': integer {big} does not fit in int64" for big in BIG_INTS]


def test_deep_line_letter_has_line_and_reason(app: typer.Typer, tmp_path: Path) -> None:
    _deep_line(tmp_path / "deep.jsonl")
    (tmp_path / "q.sql").write_text("SELECT * FROM t\n")
    result = CliRunner().invoke(
        app,
        ["run", str(tmp_path / "q.sql"), "--input", f"t={tmp_path / 'deep.jsonl'}"]
        + ["--output", str(tmp_path / "out.jsonl"), "--dlq", str(tmp_path / "dlq.jsonl")],
    )
    assert result.exit_code == 0, result.output
    [letter] = _read_jsonl(tmp_path / "dlq.jsonl")
    assert letter["position"] == f"{tmp_path / 'deep.jsonl'}:4"
    assert letter["error"] == f"JSON nested too deep (more than {MAX_JSON_DEPTH} levels)"


@pytest.mark.parametrize(
    "select",
    [
        "SELECT " + "(" * 60 + "price" + ")" * 60 + " AS x FROM trades",
        "SELECT " + "ARRAY[" * 30 + "price" + "]" * 30 + " AS x FROM trades",
        "SELECT price FROM trades WHERE " + "NOT " * 400 + "price > 0",
    ],
)
def test_the_job_server_refuses_deep_sql_with_a_syntax_error(tmp_path: Path, select: str) -> None:
    """Was a RecursionError (HTTP 500); a SqlSyntaxError is a 400 with line and column."""
    from flowsql.errors import SqlSyntaxError
    from flowsql.server.config import ServerSettings
    from flowsql.server.jobserver import StreamJobServer

    server = StreamJobServer(ServerSettings(file_roots=[str(tmp_path)]))
    try:
        sql = f"CREATE STREAM j AS {select} WITH ('trades.type' = 'generator')"
        with pytest.raises(SqlSyntaxError, match="at line 1, column"):
            server.deploy(sql)
        assert server.jobs() == []
    finally:
        server.shutdown()


def _at_limit_queries() -> dict[str, tuple[str, int]]:
    """Queries at each SQL limit over ``t`` of GOOD: (sql, rows expected)."""
    from flowsql.sql.statements import MAX_EXPRESSION_DEPTH, MAX_NESTING

    n = MAX_NESTING
    return {
        "calls": (f"SELECT id, {'ABS(' * n}price{')' * n} AS x FROM t", 6),
        "case": (f"SELECT {'CASE WHEN id > 0 THEN ' * n}id{' END' * n} AS x FROM t", 6),
        "not": (f"SELECT id FROM t WHERE {'NOT (' * (n // 2)}id > 2{')' * (n // 2)}", 3),
        "plus": (f"SELECT {' + '.join(['id'] * (MAX_EXPRESSION_DEPTH - 3))} AS x FROM t", 6),
        "or": ("SELECT id FROM t WHERE " + " OR ".join(f"id = {i}" for i in range(3, 403)), 3),
        "grouped": (
            f"SELECT name, SUM({'ABS(' * (n - 1)}price{')' * (n - 1)}) AS s FROM t GROUP BY name",
            6,
        ),
    }


@pytest.mark.parametrize("processor", sorted(PROCESSORS))
@pytest.mark.parametrize("name", sorted(_at_limit_queries()))
def test_sql_at_the_limits_runs_on_both_processors(
    app: typer.Typer, tmp_path: Path, name: str, processor: str
) -> None:
    sql, rows = _at_limit_queries()[name]
    (tmp_path / "t.jsonl").write_bytes(_lines(GOOD))
    (tmp_path / "q.sql").write_text(sql + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", str(tmp_path / "q.sql"), "--input", f"t={tmp_path / 't.jsonl'}"]
        + ["--output", str(out), *PROCESSORS[processor]],
    )
    assert result.exit_code == 0, result.output
    assert len(_read_jsonl(out)) == rows and SUMMARY[processor] in result.stderr
