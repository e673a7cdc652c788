"""``validate`` reports every error of every statement with its position, refuses
what ``run`` refuses; and the small planner defects found on the way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.errors import ConfigError, PlanError, PlanErrors, UnsupportedError
from flowsql.plan.expr import Col
from flowsql.plan.nodes import Aggregate, Project
from flowsql.sql import bind, parse, parse_one, validate


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"a": 1, "b": 2, "c": 3, "ts": 1_704_067_200_000}) + "\n")
    return path


def _invoke(app: typer.Typer, *args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "q.sql"
    path.write_text(text)
    return path


THREE = (
    "SELECT a, b FROM s;\n"
    "SELECT a, b, COUNT(*) AS n FROM s GROUP BY c;\n"
    "SELECT FOO(a) AS x FROM s WHERE BAR(b) > 1;\n"
)


# -- every error of every statement --------------------------------------------------


def test_validate_lists_every_error_of_every_statement(app: typer.Typer, tmp_path: Path) -> None:
    path = _file(tmp_path, THREE)
    result = _invoke(app, "validate", path)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    located = re.findall(rf"^{re.escape(str(path))}:(\d+):(\d+): (.*)$", stderr, re.MULTILINE)
    assert [(int(line), int(col)) for line, col, _ in located] == [
        (2, 8),  # a: not grouped
        (2, 11),  # b: not grouped
        (3, 8),  # FOO: the SELECT list
        (3, 33),  # BAR: the WHERE
    ]
    assert "column 'a' must appear in GROUP BY" in located[0][2]
    assert "column 'b' must appear in GROUP BY" in located[1][2]
    assert "unknown function FOO" in located[2][2] and "unknown function BAR" in located[3][2]
    assert "4 error(s)" in stderr


def test_validate_api_flattens_the_errors_of_a_statement() -> None:
    errors = validate(THREE)
    assert [(e.line, e.column) for e in errors] == [(2, 8), (2, 11), (3, 8), (3, 33)]  # type: ignore[attr-defined]
    assert all(not isinstance(e, PlanErrors) for e in errors)


def test_parse_raises_all_errors_of_a_statement_at_once() -> None:
    with pytest.raises(PlanErrors) as info:
        parse("SELECT a, b, COUNT(*) AS n FROM s GROUP BY c")
    assert [e.column for e in info.value.errors] == [8, 11]
    assert (info.value.line, info.value.column) == (1, 8)
    assert "'a'" in str(info.value) and "'b'" in str(info.value)


def test_bind_reports_every_unknown_column() -> None:
    statement = parse_one("SELECT nope, a, zilch + 1 AS z FROM s WHERE gone > 1")
    with pytest.raises(PlanErrors) as info:
        bind(statement, {"s": pa.schema([("a", pa.int64())])})
    assert [(e.message, e.column) for e in info.value.errors] == [
        ("unknown column 'nope'", 8),
        ("unknown column 'zilch'", 17),
        ("unknown column 'gone'", 45),
    ]


def test_bind_one_unknown_column_is_a_plain_plan_error() -> None:
    statement = parse_one("SELECT nope FROM s")
    with pytest.raises(PlanError) as info:
        bind(statement, {"s": pa.schema([("a", pa.int64())])})
    assert not isinstance(info.value, PlanErrors)
    assert info.value.column == 8


def test_validate_gives_a_position_to_errors_without_one() -> None:
    text = "SELECT a FROM s;\nSELECT COUNT(*) FROM t WINDOW TUMBLING(1s) WITH ('late.data.strategy'='x')"
    (err,) = validate(text)
    assert isinstance(err, ConfigError)
    assert (err.line, err.column) == (2, 1)  # type: ignore[attr-defined]


# -- validate refuses what run refuses ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("-- @job_mode: adaptive\nSELECT a FROM s", "'adaptive' for 'query.@job_mode'", "1:4"),
        ("SELECT a FROM s;\n-- @num_partitions: lots\nSELECT a FROM s", "num_partitions", "2:4"),
        ("SELECT a AS x, b AS x FROM s", "two output columns named 'x'", "1:16"),
        ("SELECT a, b AS a FROM s", "two output columns named 'a'", "1:11"),
        ("SELECT a AS n, COUNT(*) AS n FROM s GROUP BY a", "two output columns named 'n'", "1:16"),
    ],
)
def test_validate_and_run_refuse_the_same(
    app: typer.Typer, tmp_path: Path, data: Path, text: str, message: str, where: str
) -> None:
    path = _file(tmp_path, text)
    checked = _invoke(app, "validate", path)
    assert checked.exit_code == 2, checked.output  # type: ignore[attr-defined]
    assert f"{path}:{where}: " in checked.stderr and message in checked.stderr  # type: ignore[attr-defined]
    out = tmp_path / "out.jsonl"
    ran = _invoke(app, "run", path, "--input", f"s={data}", "--output", out)
    assert ran.exit_code == 2, ran.output  # type: ignore[attr-defined]
    assert message in ran.stderr  # type: ignore[attr-defined]
    assert not out.exists()


def test_generated_names_that_collide_are_still_made_unique() -> None:
    plan = parse_one("SELECT a, a, COUNT(*), COUNT(*) FROM s GROUP BY a").plan
    assert isinstance(plan, Project)
    assert [name for name, _ in plan.exprs] == ["a", "a_1", "count", "count_1"]


# -- a function call as a window argument ---------------------------------------------


@pytest.mark.parametrize(
    ("sql", "column"),
    [
        ("SELECT COUNT(*) AS n FROM s WINDOW TUMBLING(ABS(ts), 1s)", 45),
        (
            "SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ABS(ts)),"
            " INTERVAL '1' SECOND))",
            60,
        ),
    ],
)
def test_a_function_call_as_the_window_time_column_is_a_positioned_error(
    app: typer.Typer, tmp_path: Path, sql: str, column: int
) -> None:
    (err,) = validate(f"SELECT a FROM s;\n{sql};\nSELECT FOO(a) FROM s")[:1]
    assert (err.line, err.column) == (2, column)  # type: ignore[attr-defined]
    result = _invoke(
        app, "validate", _file(tmp_path, f"SELECT a FROM s;\n{sql};\nSELECT FOO(a) FROM s")
    )
    assert result.exit_code == 2
    assert ":3:8: unknown function FOO" in result.stderr  # type: ignore[attr-defined]


def test_descriptor_of_an_expression_is_refused_not_ignored() -> None:
    with pytest.raises(UnsupportedError, match="window time column must be a column name"):
        parse_one(
            "SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ABS(ts)),"
            " INTERVAL '1' SECOND))"
        )


# -- names, GROUP BY (expr), scalar subqueries -----------------------------------------


def test_generated_names_leave_comments_out() -> None:
    plan = parse_one("SELECT a + 1 -- note\n, b * 2 /* twice */ FROM s").plan
    assert isinstance(plan, Project)
    assert [name for name, _ in plan.exprs] == ["a + 1", "b * 2"]


@pytest.mark.parametrize("group", ["(a + 1)", "((a + 1))", "a + 1"])
def test_group_by_an_expression_in_parentheses_matches_the_select_item(group: str) -> None:
    plan = parse_one(f"SELECT a + 1 AS k, COUNT(*) AS n FROM s GROUP BY {group}").plan
    assert isinstance(plan, Project)
    agg = plan.input
    assert isinstance(agg, Aggregate)
    assert [name for name, _ in agg.keys] == ["k"]
    assert plan.exprs[0] == ("k", Col("k"))


def test_group_by_a_parenthesised_expression_without_alias() -> None:
    assert validate("SELECT a + 1, COUNT(*) FROM s GROUP BY (a + 1)") == []


@pytest.mark.parametrize(
    ("sql", "column"),
    [
        ("SELECT a, (SELECT MAX(b) FROM t) AS m FROM s", 11),
        ("SELECT a, (SELECT 1) AS q, COUNT(*) AS n FROM s GROUP BY a", 11),
        ("SELECT a FROM s WHERE a > (SELECT 1)", 27),
    ],
)
def test_a_scalar_subquery_says_so(sql: str, column: int) -> None:
    with pytest.raises(UnsupportedError) as info:
        parse_one(sql)
    assert info.value.message == "scalar subqueries are not supported"
    assert (info.value.line, info.value.column) == (1, column)
