"""The flowsql command: run, demo, explain, validate, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register

TRADES = [
    {"symbol": "AAA", "price": 10.5, "quantity": 3, "timestamp": 1_704_067_200_000},
    {"symbol": "BBB", "price": 20.0, "quantity": 1, "timestamp": 1_704_067_200_400},
    {"symbol": "AAA", "price": 11.5, "quantity": 2, "timestamp": 1_704_067_200_900},
    {"symbol": "AAA", "price": 12.0, "quantity": 5, "timestamp": 1_704_067_201_100},
    {"symbol": "BBB", "price": 21.0, "quantity": 4, "timestamp": 1_704_067_202_050},
]
WINDOWED = (
    "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price, _window_start, _window_end\n"
    "FROM trades\nGROUP BY symbol\nWINDOW TUMBLING(1s)\n"
)


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def trades(tmp_path: Path) -> Path:
    path = tmp_path / "trades.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TRADES))
    return path


def _sql(tmp_path: Path, text: str, name: str = "q.sql") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _invoke(app: typer.Typer, *args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_windowed_query_to_jsonl(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = _invoke(
        app, "run", _sql(tmp_path, WINDOWED), "--input", f"trades={trades}", "--output", out
    )
    assert result.exit_code == 0, result.output
    rows = sorted(_jsonl(out), key=lambda r: (r["_window_start"], r["symbol"]))
    assert rows == [
        {
            "symbol": "AAA",
            "count": 2,
            "avg_price": 11.0,
            "_window_start": 1_704_067_200_000,
            "_window_end": 1_704_067_201_000,
        },
        {
            "symbol": "BBB",
            "count": 1,
            "avg_price": 20.0,
            "_window_start": 1_704_067_200_000,
            "_window_end": 1_704_067_201_000,
        },
        {
            "symbol": "AAA",
            "count": 1,
            "avg_price": 12.0,
            "_window_start": 1_704_067_201_000,
            "_window_end": 1_704_067_202_000,
        },
        {
            "symbol": "BBB",
            "count": 1,
            "avg_price": 21.0,
            "_window_start": 1_704_067_202_000,
            "_window_end": 1_704_067_203_000,
        },
    ]
    assert "5 records in, 4 out, 0 late, 0 dead-lettered" in result.stderr


def test_bad_sql_exits_2_with_line_and_column_and_writes_nothing(
    app: typer.Typer, tmp_path: Path, trades: Path
) -> None:
    out = tmp_path / "out.jsonl"
    sql = _sql(tmp_path, "SELECT symbol,\n  COUNT(* AS n\nFROM trades GROUP BY symbol\n")
    result = _invoke(app, "run", sql, "--input", f"trades={trades}", "--output", out)
    assert result.exit_code == 2
    assert "line 2" in result.stderr and "column" in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.sql", "trades.jsonl"]


def test_unknown_column_exits_2(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    out = tmp_path / "out.jsonl"
    sql = _sql(tmp_path, "SELECT symbol, prise FROM trades\n")
    result = _invoke(app, "run", sql, "--input", f"trades={trades}", "--output", out)
    assert result.exit_code == 2
    assert "prise" in result.stderr and "price" in result.stderr
    assert not out.exists()


def test_missing_input_exits_2_naming_the_path(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    missing = tmp_path / "nowhere" / "trades.jsonl"
    result = _invoke(
        app, "run", _sql(tmp_path, WINDOWED), "--input", f"trades={missing}", "--output", out
    )
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert not out.exists()


def test_unbound_and_misnamed_inputs_exit_2(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    sql = _sql(tmp_path, WINDOWED)
    result = _invoke(app, "run", sql)
    assert result.exit_code == 2 and "--input trades=PATH" in result.stderr
    result = _invoke(app, "run", sql, "--input", f"trade={trades}")
    assert result.exit_code == 2 and "did you mean 'trades'" in result.stderr


def test_missing_sql_file_exits_2(app: typer.Typer, tmp_path: Path) -> None:
    result = _invoke(app, "run", tmp_path / "none.sql")
    assert result.exit_code == 2 and "none.sql" in result.stderr


def test_bad_lines_go_to_the_dlq_and_the_job_goes_on(
    app: typer.Typer, tmp_path: Path, trades: Path
) -> None:
    lines = trades.read_text().splitlines()
    lines.insert(1, "this is not json")
    lines.insert(
        3, '{"symbol": "CCC", "price": "cheap", "quantity": 1, "timestamp": 1704067200500}'
    )
    trades.write_text("\n".join(lines) + "\n")
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    args = (
        "run",
        _sql(tmp_path, WINDOWED),
        "--input",
        f"trades={trades}",
        "--output",
        out,
        "--dlq",
        dlq,
    )
    result = _invoke(app, *args)
    assert result.exit_code == 0, result.output
    assert len(_jsonl(out)) == 4
    letters = _jsonl(dlq)
    assert [x["position"] for x in letters] == [f"{trades}:2", f"{trades}:4"]
    assert letters[0]["original"] == "this is not json"
    assert "price" in letters[1]["error"] and letters[1]["source"] == "trades"
    assert "2 dead-lettered" in result.stderr


def test_dead_letters_without_dlq_are_shown_on_stderr(
    app: typer.Typer, tmp_path: Path, trades: Path
) -> None:
    trades.write_text(trades.read_text() + "oops\n")
    result = _invoke(
        app, "run", _sql(tmp_path, WINDOWED), "--input", str(trades), "--output", tmp_path / "o.csv"
    )
    assert result.exit_code == 0, result.output
    assert f"{trades}:6" in result.stderr and "--dlq" in result.stderr


def test_decimals_are_strings_in_jsonl(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    sql = _sql(
        tmp_path,
        "SELECT symbol, CAST(price AS DECIMAL(10,2)) * CAST(67.89 AS DECIMAL(10,2)) AS v\n"
        "FROM trades WHERE quantity = 3\n",
    )
    out = tmp_path / "out.jsonl"
    result = _invoke(app, "run", sql, "--input", f"trades={trades}", "--output", out)
    assert result.exit_code == 0, result.output
    assert _jsonl(out) == [{"symbol": "AAA", "v": "712.8450"}]


def test_with_keys_declare_source_and_sink(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    out = tmp_path / "agg.parquet"
    sql = _sql(
        tmp_path,
        "CREATE STREAM agg AS\n"
        "SELECT symbol, SUM(quantity) AS qty FROM trades GROUP BY symbol EMIT FINAL\n"
        f"WITH ('trades.type'='file_source', 'trades.path'='{trades.name}', 'trades.format'='jsonl',\n"
        f"      'agg.type'='file_sink', 'agg.path'='{out}', 'agg.format'='parquet')\n",
    )
    result = _invoke(app, "run", sql)
    assert result.exit_code == 0, result.output
    assert sorted(pq.read_table(out).to_pylist(), key=lambda r: r["symbol"]) == [
        {"symbol": "AAA", "qty": 10},
        {"symbol": "BBB", "qty": 5},
    ]


def test_no_output_prints_a_table(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    result = _invoke(app, "run", _sql(tmp_path, WINDOWED), "--input", f"trades={trades}")
    assert result.exit_code == 0, result.output
    assert "avg_price" in result.stdout and "AAA" in result.stdout and "4 rows" in result.stdout


def test_csv_output(app: typer.Typer, tmp_path: Path, trades: Path) -> None:
    out = tmp_path / "out.csv"
    sql = _sql(tmp_path, "SELECT symbol, price FROM trades WHERE price > 20\n")
    result = _invoke(app, "run", sql, "--input", f"trades={trades}", "--output", out)
    assert result.exit_code == 0, result.output
    assert out.read_text() == "symbol,price\nBBB,21.0\n"


def test_validate_lists_errors_with_positions(app: typer.Typer, tmp_path: Path) -> None:
    bad = _sql(tmp_path, "SELECT a FROM t;\nSELECT FROM WHERE;\n", "bad.sql")
    result = _invoke(app, "validate", bad)
    assert result.exit_code == 2
    assert "line 2" in result.stderr
    good = _sql(tmp_path, WINDOWED, "good.sql")
    result = _invoke(app, "validate", good)
    assert result.exit_code == 0 and "OK" in result.stdout


def test_explain_prints_the_plan(app: typer.Typer, tmp_path: Path) -> None:
    result = _invoke(app, "explain", _sql(tmp_path, WINDOWED))
    assert result.exit_code == 0, result.output
    assert "symbol" in result.stdout and "TUMBLING" in result.stdout.upper()


def test_demo_small(app: typer.Typer) -> None:
    result = _invoke(app, "demo", "--records", 20_000)
    assert result.exit_code == 0, result.output
    assert "records/s" in result.stdout and "avg_price" in result.stdout


def test_console_script_bad_sql(tmp_path: Path) -> None:
    sql = _sql(tmp_path, "SELEC 1\n")
    code = "from flowsql.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "run", str(sql)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "line 1" in done.stderr


def test_empty_input_gives_an_empty_output(app: typer.Typer, tmp_path: Path) -> None:
    empty = tmp_path / "trades.jsonl"
    empty.write_text("")
    out = tmp_path / "out.jsonl"
    result = _invoke(
        app, "run", _sql(tmp_path, WINDOWED), "--input", f"trades={empty}", "--output", out
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == ""
