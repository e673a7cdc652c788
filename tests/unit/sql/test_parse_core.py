"""SELECT / WHERE / GROUP BY / aggregates / HAVING / DISTINCT / ORDER BY / LIMIT planning."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.errors import ConfigError, PlanError, UnsupportedError
from flowsql.plan.expr import AggCall, Call, Col, Lit
from flowsql.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    Limit,
    Project,
    Scan,
    Sort,
    WindowSpec,
    walk,
)
from flowsql.sql import parse_one


def _agg(sql: str) -> Aggregate:
    node = next(n for n in walk(parse_one(sql).plan) if isinstance(n, Aggregate))
    assert isinstance(node, Aggregate)
    return node


def _shape(sql: str) -> list[str]:
    return [type(n).__name__ for n in walk(parse_one(sql).plan)]


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
    assert stmt.kind == "select" and stmt.name == "query" and stmt.sources == ("trades",)


def test_where_and_group_by_without_window_emits_changes() -> None:
    stmt = parse_one("SELECT k, SUM(x) AS s FROM t WHERE x > 1 GROUP BY k")
    nodes = walk(stmt.plan)
    assert [type(n).__name__ for n in nodes] == ["Project", "Aggregate", "Filter", "Scan"]
    agg = nodes[1]
    assert isinstance(agg, Aggregate) and agg.emit == "changes" and agg.window is None
    filt = nodes[2]
    assert isinstance(filt, Filter)
    assert filt.predicate == Call("gt", (Col("x"), Lit(1, pa.int64())))


def test_emit_final_without_window_and_emit_changes_with_window() -> None:
    assert _agg("SELECT k, COUNT(*) FROM t GROUP BY k EMIT FINAL").emit == "final"
    windowed = _agg("SELECT k, COUNT(*) FROM t GROUP BY k WINDOW TUMBLING(1s) EMIT CHANGES")
    assert windowed.emit == "changes"


def test_plain_select_is_scan_project() -> None:
    stmt = parse_one("SELECT a, b AS c FROM t")
    assert stmt.plan == Project(Scan("t"), (("a", Col("a")), ("c", Col("b"))))


def test_select_star_without_schema_plans_star_project() -> None:
    plan = parse_one("SELECT *, a + 1 AS b FROM t").plan
    assert isinstance(plan, Project) and plan.star
    assert plan.exprs == (("b", Call("add", (Col("a"), Lit(1, pa.int64())))),)


def test_expressions_over_aggregates_use_hidden_columns() -> None:
    stmt = parse_one("SELECT k, SUM(x) / COUNT(*) AS mean, SUM(x) AS total FROM t GROUP BY k")
    project = stmt.plan
    assert isinstance(project, Project)
    agg = project.input
    assert isinstance(agg, Aggregate)
    assert agg.aggs == (("_agg0", AggCall("sum", (Col("x"),))), ("_agg1", AggCall("count_star")))
    assert project.exprs == (
        ("k", Col("k")),
        ("mean", Call("div", (Col("_agg0"), Col("_agg1")))),
        ("total", Col("_agg0")),
    )


def test_having_filters_aggregate_output_and_may_use_aliases() -> None:
    stmt = parse_one("SELECT k, COUNT(*) AS n FROM t GROUP BY k HAVING n > 2 AND MAX(x) < 10")
    nodes = walk(stmt.plan)
    assert [type(n).__name__ for n in nodes] == ["Project", "Filter", "Aggregate", "Scan"]
    having = nodes[1]
    assert isinstance(having, Filter)
    assert having.predicate == Call(
        "and",
        (
            Call("gt", (Col("n"), Lit(2, pa.int64()))),
            Call("lt", (Col("_agg1"), Lit(10, pa.int64()))),
        ),
    )
    agg = nodes[2]
    assert isinstance(agg, Aggregate)
    assert [name for name, _ in agg.aggs] == ["n", "_agg1"]


def test_group_by_expression_gets_a_name_and_select_maps_to_it() -> None:
    agg = _agg("SELECT FLOOR(x / 10) AS bucket, COUNT(*) AS n FROM t GROUP BY FLOOR(x / 10)")
    bucket = Call("floor", (Call("div", (Col("x"), Lit(10, pa.int64()))),))
    assert agg.keys == (("bucket", bucket),)
    unnamed = parse_one("SELECT UPPER(s), COUNT(*) AS n FROM t GROUP BY UPPER(s)").plan
    assert isinstance(unnamed, Project)
    assert unnamed.exprs[0] == ("upper", Col("_key0"))


def test_group_by_alias_and_ordinal() -> None:
    by_alias = _agg("SELECT FLOOR(x) AS b, COUNT(*) AS n FROM t GROUP BY b")
    by_position = _agg("SELECT FLOOR(x) AS b, COUNT(*) AS n FROM t GROUP BY 1")
    assert by_alias.keys == by_position.keys == (("b", Call("floor", (Col("x"),))),)


def test_aggregate_names_map_to_canonical_functions() -> None:
    agg = _agg(
        "SELECT COUNT(*) a, COUNT(x) b, COUNT(DISTINCT x) c, SUM(x) d, AVG(x) e, MIN(x) f, "
        "MAX(x) g, STDDEV(x) h, STDDEV_SAMP(x) i, STDDEV_POP(x) j, VARIANCE(x) k, "
        "VAR_SAMP(x) l, VAR_POP(x) m, FIRST(x) n, LAST(x) o, APPROX_COUNT_DISTINCT(x) p, "
        "COUNT(1) q FROM t"
    )
    got = {name: (call.fn, call.distinct) for name, call in agg.aggs}
    assert got == {
        "a": ("count_star", False),
        "b": ("count", False),
        "c": ("count", True),
        "d": ("sum", False),
        "e": ("avg", False),
        "f": ("min", False),
        "g": ("max", False),
        "h": ("stddev_samp", False),
        "j": ("stddev_pop", False),
        "k": ("var_samp", False),
        "m": ("var_pop", False),
        "n": ("first", False),
        "o": ("last", False),
        "p": ("approx_count_distinct", False),
    }
    # Equal calls share one aggregate column: STDDEV_SAMP = STDDEV, VAR_SAMP = VARIANCE.
    project = parse_one("SELECT STDDEV(x) h, STDDEV_SAMP(x) i, COUNT(1) q, COUNT(*) a FROM t").plan
    assert isinstance(project, Project)
    assert [e for _, e in project.exprs] == [Col("h"), Col("h"), Col("q"), Col("q")]


def test_global_aggregate_has_no_keys() -> None:
    agg = _agg("SELECT COUNT(*) AS n FROM t")
    assert agg.keys == () and agg.emit == "changes"


def test_unaliased_items_get_readable_unique_names() -> None:
    plan = parse_one("SELECT k, COUNT(*), count(x), SUM(x) FROM t GROUP BY k").plan
    assert isinstance(plan, Project)
    assert [name for name, _ in plan.exprs] == ["k", "count", "count_1", "sum"]


def test_distinct_sort_limit_stack_above_project() -> None:
    assert _shape("SELECT DISTINCT a FROM t ORDER BY a DESC LIMIT 5") == [
        "Limit",
        "Sort",
        "Distinct",
        "Project",
        "Scan",
    ]
    plan = parse_one("SELECT a, COUNT(*) AS n FROM t GROUP BY a ORDER BY n DESC, 1 LIMIT 3").plan
    assert isinstance(plan, Limit) and plan.n == 3
    sort = plan.input
    assert isinstance(sort, Sort)
    assert sort.keys == ((Col("n"), False, False), (Col("a"), True, False))
    assert isinstance(parse_one("SELECT DISTINCT a FROM t").plan, Distinct)


def test_order_by_aggregate_expression_maps_to_its_select_item() -> None:
    plan = parse_one("SELECT a, COUNT(*) AS n FROM t GROUP BY a ORDER BY COUNT(*) DESC").plan
    assert isinstance(plan, Sort)
    assert plan.keys == ((Col("n"), False, False),)


def test_order_by_unselected_column_is_an_error() -> None:
    with pytest.raises(PlanError, match="ORDER BY column 'b'"):
        parse_one("SELECT a FROM t ORDER BY b")


def test_create_stream_and_table() -> None:
    stream = parse_one(
        "CREATE STREAM big AS SELECT a FROM t WHERE a > 1 WITH ('big.type' = 'stdout')"
    )
    assert (stream.kind, stream.name) == ("stream", "big")
    assert stream.properties == {"big.type": "stdout"}
    assert stream.sql.startswith("CREATE STREAM big AS")
    table = parse_one("CREATE OR REPLACE TABLE tot AS SELECT a, COUNT(*) FROM t GROUP BY a")
    assert (table.kind, table.name) == ("table", "tot")
    with pytest.raises(ConfigError, match="did you mean 's.topic'"):
        parse_one("CREATE STREAM s WITH (KAFKA_TOPIC='out', PARTITIONS=2) AS SELECT a FROM t")


def test_trailing_with_is_not_a_table_hint() -> None:
    stmt = parse_one("SELECT a FROM t WITH ('t.type' = 'file_source', 't.path' = 'x')")
    assert stmt.properties == {"t.type": "file_source", "t.path": "x"}
    assert stmt.plan == Project(Scan("t"), (("a", Col("a")),))


def test_non_key_column_in_grouped_select_is_an_error() -> None:
    with pytest.raises(PlanError, match="'x' must appear in GROUP BY") as err:
        parse_one("SELECT k,\n  x FROM t GROUP BY k")
    assert (err.value.line, err.value.column) == (2, 3)


def test_aggregate_in_where_is_an_error() -> None:
    with pytest.raises(PlanError, match="not allowed in WHERE"):
        parse_one("SELECT a FROM t WHERE COUNT(*) > 1")


def test_select_star_with_group_by_is_an_error() -> None:
    with pytest.raises(PlanError, match=r"SELECT \*"):
        parse_one("SELECT * FROM t GROUP BY a")


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("SELECT a FROM t JOIN u ON t.a = u.a", "JOIN"),
        ("SELECT a FROM (SELECT a FROM t)", "subqueries"),
        ("SELECT a FROM t LIMIT 1 OFFSET 2", "OFFSET"),
        ("SELECT a FROM t WHERE a IN (SELECT b FROM u)", "IN"),
    ],
)
def test_unsupported_constructs_say_what(sql: str, what: str) -> None:
    with pytest.raises(UnsupportedError, match=what):
        parse_one(sql)


def test_group_by_name_prefers_the_input_column_over_a_same_named_alias() -> None:
    plan = parse_one("SELECT UPPER(symbol) AS symbol, COUNT(*) AS n FROM t GROUP BY symbol").plan
    assert isinstance(plan, Project)
    agg = plan.input
    assert isinstance(agg, Aggregate)
    assert agg.keys == (("symbol", Col("symbol")),)
    assert plan.exprs[0] == ("symbol", Call("upper", (Col("symbol"),)))
    renamed = parse_one("SELECT symbol AS s, COUNT(*) AS n FROM t GROUP BY s").plan
    assert isinstance(renamed, Project)
    assert renamed.exprs[0] == ("s", Col("symbol"))
