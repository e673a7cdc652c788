"""Core SELECT / GROUP BY / window / EMIT planning."""

from __future__ import annotations

import pyarrow as pa

from flowsql.plan.expr import AggCall, Call, Col, Lit
from flowsql.plan.nodes import Aggregate, Filter, Project, Scan, WindowSpec, walk
from flowsql.sql import parse_one


def test_demo_query_plans_a_tumbling_aggregate() -> None:
    stmt = parse_one(
        "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price "
        "FROM trades GROUP BY symbol WINDOW TUMBLING(1s)"
    )
    project = stmt.plan
    assert isinstance(project, Project)
    agg = project.input
    assert isinstance(agg, Aggregate)
    assert agg.keys == (("symbol", Col("symbol")),)
    assert agg.aggs == (
        ("count", AggCall("count_star")),
        ("avg_price", AggCall("avg", (Col("price"),))),
    )
    assert agg.window == WindowSpec("tumbling", size_ms=1000)
    assert agg.emit == "final"
    assert agg.input == Scan("trades")
    assert project.exprs == (
        ("symbol", Col("symbol")),
        ("count", Col("count")),
        ("avg_price", Col("avg_price")),
    )


def test_where_and_group_by_without_window_emits_changes() -> None:
    stmt = parse_one("SELECT k, SUM(x) AS s FROM t WHERE x > 1 GROUP BY k")
    nodes = walk(stmt.plan)
    assert [type(n).__name__ for n in nodes] == ["Project", "Aggregate", "Filter", "Scan"]
    agg = nodes[1]
    assert isinstance(agg, Aggregate) and agg.emit == "changes" and agg.window is None
    filt = nodes[2]
    assert isinstance(filt, Filter)
    assert filt.predicate == Call("gt", (Col("x"), Lit(1, pa.int64())))
