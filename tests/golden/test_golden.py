"""Golden cases run through the CLI: ``flowsql run CASE.sql --input NAME=CASE.input.jsonl
--output out.jsonl`` must write exactly ``CASE.expected.jsonl``.

Each case in ``cases/`` is:

- ``<name>.sql``: one statement; its FROM name is bound to the input file;
- ``<name>.input.jsonl``: the input records;
- ``<name>.expected.jsonl``: the expected output rows, in order. They were
  worked out by hand or with DuckDB from the definitions in docs/sql.md, never
  copied from flowsql's output;
- optional ``<name>.args``: extra CLI arguments (e.g. ``--batch-size 2``);
- optional ``<name>.stderr``: lines that must appear in the run summary.

Rows are compared in order, value by value: floats within 1e-9 relative,
decimals (JSON strings) by numeric value, everything else exactly. The V2 run
(``--processor v2 --partitions 3``) must give the same rows in any order.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.sql import parse

CASES_DIR = Path(__file__).parent / "cases"
CASES = sorted(p.name.removesuffix(".sql") for p in CASES_DIR.glob("*.sql"))


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def case_args(name: str, output: Path) -> list[str]:
    sql_path = CASES_DIR / f"{name}.sql"
    (statement,) = parse(sql_path.read_text())
    (source,) = statement.sources
    args = [
        "run",
        str(sql_path),
        "--input",
        f"{source}={CASES_DIR / f'{name}.input.jsonl'}",
        "--output",
        str(output),
    ]
    extra = CASES_DIR / f"{name}.args"
    if extra.exists():
        args += shlex.split(extra.read_text())
    return args


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def value_matches(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, str) and isinstance(got, str) and got != want:
        try:
            return Decimal(got) == Decimal(want)
        except InvalidOperation:
            return False
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    return bool(got == want and type(got) is type(want))


def rows_match(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str | None:
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}:\n got {got}\nwant {want}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if list(g) != list(w):
            return f"row {i}: columns {list(g)}, expected {list(w)}"
        bad = [c for c in w if not value_matches(g[c], w[c])]
        if bad:
            return f"row {i}: {bad} differ\n got {g}\nwant {w}"
    return None


def check_stderr(name: str, stderr: str) -> None:
    expected = CASES_DIR / f"{name}.stderr"
    if expected.exists():
        for line in expected.read_text().splitlines():
            assert line in stderr, f"{name}: {line!r} not in the summary: {stderr}"


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, case_args(name, out))
    assert result.exit_code == 0, result.output
    check_stderr(name, result.output)
    problem = rows_match(read_jsonl(out), read_jsonl(CASES_DIR / f"{name}.expected.jsonl"))
    assert problem is None, f"{name}: {problem}"


#: EMIT CHANGES cases -> their key columns.
CHANGELOGS = {"emit_changes_changelog": ("symbol",)}


def _last_per_key(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    last = {tuple(r[k] for k in keys): r for r in rows}
    return list(last.values())


@pytest.mark.parametrize("name", CASES)
def test_golden_at_batch_size_one(name: str, app: typer.Typer, tmp_path: Path) -> None:
    """Cutting the input into one-row batches changes no result (a changelog
    gets more intermediate rows but ends on the same row per key)."""
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, [*case_args(name, out), "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    check_stderr(name, result.output)
    want = read_jsonl(CASES_DIR / f"{name}.expected.jsonl")
    got = read_jsonl(out)
    if name in CHANGELOGS:
        got, want = _last_per_key(got, CHANGELOGS[name]), _last_per_key(want, CHANGELOGS[name])
    problem = rows_match(got, want)
    assert problem is None, f"{name} at batch size 1: {problem}"


def _sort(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_golden_on_v2(name: str, app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = case_args(name, out) + ["--processor", "v2", "--partitions", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    check_stderr(name, result.output)
    want = read_jsonl(CASES_DIR / f"{name}.expected.jsonl")
    got = read_jsonl(out)
    if name in CHANGELOGS:  # batch boundaries differ on V2: compare each key's last row
        got, want = _last_per_key(got, CHANGELOGS[name]), _last_per_key(want, CHANGELOGS[name])
    problem = rows_match(_sort(got), _sort(want))
    assert problem is None, f"{name} on V2: {problem}"


def test_console_script_runs_a_golden_case(tmp_path: Path) -> None:
    """The installed ``flowsql`` command (not only the Typer app) runs a case."""
    out = tmp_path / "out.jsonl"
    name = "decimal_exact"
    script = Path(sys.executable).parent / "flowsql"
    if not script.exists():
        pytest.skip("the flowsql console script is not installed next to this interpreter")
    done = subprocess.run(
        [str(script), *case_args(name, out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert read_jsonl(out) == read_jsonl(CASES_DIR / f"{name}.expected.jsonl")
