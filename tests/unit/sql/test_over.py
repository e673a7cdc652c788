"""ROWS window functions -> RowsWindow."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.errors import PlanError, SqlSyntaxError, UnsupportedError
from flowsql.plan.expr import Call, Col, Lit, WinCall
from flowsql.plan.nodes import Project, RowsWindow, Scan
from flowsql.sql import parse_one


def _rows(sql: str) -> tuple[Project, RowsWindow]:
    plan = parse_one(sql).plan
    assert isinstance(plan, Project)
    assert isinstance(plan.input, RowsWindow)
    return plan, plan.input


def test_standard_frame() -> None:
    project, rows = _rows(
        "SELECT k, SUM(x) OVER (PARTITION BY k ORDER BY ts "
        "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s FROM t"
    )
    assert rows == RowsWindow(
        Scan("t"),
        (("s", WinCall("sum", (Col("x"),), preceding=2)),),
        partition_by=(Col("k"),),
        order_by=((Col("ts"), True),),
    )
    assert project.exprs == (("k", Col("k")), ("s", Col("s")))


def test_buffer_syntax_means_n_minus_one_preceding() -> None:
    _, rows = _rows(
        "SELECT AVG(x) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY k ORDER BY ts) AS a FROM t"
    )
    assert rows.funcs == (("a", WinCall("avg", (Col("x"),), preceding=9)),)
    assert rows.partition_by == (Col("k"),)
    assert rows.order_by == ((Col("ts"), True),)


def test_unbounded_and_missing_frame_are_unbounded_preceding() -> None:
    _, rows = _rows(
        "SELECT COUNT(*) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING "
        "AND CURRENT ROW) AS c, MAX(x) OVER (PARTITION BY k ORDER BY ts) AS m FROM t"
    )
    assert rows.funcs == (
        ("c", WinCall("count_star", (), preceding=None)),
        ("m", WinCall("max", (Col("x"),), preceding=None)),
    )


def test_lag_lead_and_ranking() -> None:
    _, rows = _rows(
        "SELECT LAG(x) OVER w1 AS a, LAG(x, 2, 0) OVER w1 AS b, LEAD(x, 1) OVER w1 AS c, "
        "ROW_NUMBER() OVER w1 AS d, RANK() OVER w1 AS e, DENSE_RANK() OVER w1 AS f, "
        "MIN(x) OVER w1 AS g FROM t".replace("OVER w1", "OVER (PARTITION BY k ORDER BY ts DESC)")
    )
    assert rows.funcs == (
        ("a", WinCall("lag", (Col("x"),), offset=1)),
        ("b", WinCall("lag", (Col("x"),), offset=2, default=Lit(0, pa.int64()))),
        ("c", WinCall("lead", (Col("x"),), offset=1)),
        ("d", WinCall("row_number")),
        ("e", WinCall("rank")),
        ("f", WinCall("dense_rank")),
        ("g", WinCall("min", (Col("x"),))),
    )
    assert rows.order_by == ((Col("ts"), False),)


def test_expression_over_window_function_uses_hidden_column() -> None:
    project, rows = _rows("SELECT x - LAG(x) OVER (PARTITION BY k ORDER BY ts) AS delta FROM t")
    assert rows.funcs == (("_win0", WinCall("lag", (Col("x"),))),)
    assert project.exprs == (("delta", Call("sub", (Col("x"), Col("_win0")))),)


def test_window_without_partition() -> None:
    _, rows = _rows("SELECT ROW_NUMBER() OVER (ORDER BY ts) AS n FROM t WHERE x > 0")
    assert rows.partition_by == ()


def test_different_over_specs_are_rejected_with_explanation() -> None:
    with pytest.raises(PlanError, match="same PARTITION BY and ORDER BY") as err:
        parse_one(
            "SELECT LAG(x) OVER (PARTITION BY k ORDER BY ts) AS a,\n"
            "       LEAD(x) OVER (PARTITION BY j ORDER BY ts) AS b FROM t"
        )
    assert err.value.line == 2


def test_range_frames_and_following_are_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="ROWS"):
        parse_one(
            "SELECT SUM(x) OVER (ORDER BY ts RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t"
        )
    with pytest.raises(UnsupportedError, match="CURRENT ROW"):
        parse_one(
            "SELECT SUM(x) OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM t"
        )


def test_window_function_in_where_is_an_error() -> None:
    with pytest.raises(PlanError, match="not allowed in WHERE"):
        parse_one("SELECT x FROM t WHERE LAG(x) OVER (ORDER BY ts) > 1")


def test_buffer_needs_a_positive_row_count() -> None:
    with pytest.raises(SqlSyntaxError, match="at least 1 row"):
        parse_one("SELECT SUM(x) OVER (ROWS WINDOW BUFFER 0 ROWS) FROM t")
