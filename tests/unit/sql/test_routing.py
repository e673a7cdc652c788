"""Routing decisions: which queries hash-partition, by what, and why not."""

from __future__ import annotations

import pytest

from flowsql.plan.routing import Routing, event_time_column, routing
from flowsql.sql import parse_one


def _route(sql: str) -> Routing:
    return routing(parse_one(sql))


@pytest.mark.parametrize(
    ("sql", "keys", "strategy"),
    [
        ("SELECT a, b FROM t WHERE a > 1", (), "hash"),
        ("SELECT k, COUNT(*) FROM t GROUP BY k", ("k",), "hash"),
        ("SELECT k, j, SUM(x) FROM t GROUP BY k, j WINDOW TUMBLING(1s)", ("k", "j"), "hash"),
        ("SELECT k, COUNT(*) FROM t GROUP BY k WINDOW SESSION(5s)", ("k",), "hash"),
        ("SELECT k, UPPER(s), COUNT(*) FROM t GROUP BY k, UPPER(s)", ("k",), "hash"),
        (
            "SELECT k, LAG(x) OVER (PARTITION BY k ORDER BY ts) AS p FROM t",
            ("k",),
            "hash",
        ),
        ("SELECT COUNT(*), SUM(x), AVG(x), MIN(x), MAX(x), STDDEV(x) FROM t", (), "two_phase"),
        ("SELECT COUNT(*) FROM t WINDOW TUMBLING(1s)", (), "two_phase"),
        ("SELECT DISTINCT a, b FROM t", ("a", "b"), "hash"),
        ("SELECT DISTINCT k, COUNT(*) AS n FROM t GROUP BY k", ("k",), "hash"),
    ],
)
def test_partitionable(sql: str, keys: tuple[str, ...], strategy: str) -> None:
    route = _route(sql)
    assert (route.key_columns, route.strategy) == (keys, strategy)
    assert route.partitionable and route.reason


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT a FROM t LIMIT 10", "LIMIT"),
        ("SELECT a FROM t ORDER BY a", "ORDER BY"),
        ("SELECT k, COUNT(*) AS n FROM t GROUP BY k ORDER BY n", "ORDER BY"),
        ("SELECT DISTINCT UPPER(a) FROM t", "DISTINCT"),
        ("SELECT ROW_NUMBER() OVER (ORDER BY ts) AS n FROM t", "PARTITION BY"),
        ("SELECT COUNT(*) FROM t WINDOW SESSION(5s)", "SESSION"),
        ("SELECT COUNT(DISTINCT x) FROM t", "count distinct"),
        ("SELECT FIRST(x), LAST(x) FROM t", "first"),
        ("SELECT APPROX_COUNT_DISTINCT(x) FROM t", "approx_count_distinct"),
        ("SELECT FLOOR(x / 10) AS b, COUNT(*) FROM t GROUP BY FLOOR(x / 10)", "expressions"),
    ],
)
def test_single_partition_with_reason(sql: str, why: str) -> None:
    route = _route(sql)
    assert route.strategy == "single" and not route.partitionable
    assert route.key_columns == ()
    assert why in route.reason


def test_distinct_over_other_than_key_is_single() -> None:
    route = _route("SELECT DISTINCT COUNT(*) AS n FROM t GROUP BY k")
    assert route.strategy == "single" and "DISTINCT" in route.reason


def test_event_time_column() -> None:
    assert event_time_column(parse_one("SELECT COUNT(*) FROM t WINDOW TUMBLING(ts, 1s)")) == "ts"
    assert event_time_column(parse_one("SELECT a FROM t")) is None
    assert event_time_column(parse_one("SELECT a FROM t"), "when") == "when"
    with_prop = parse_one("SELECT a FROM t WITH ('t.event.time.field' = 'ts2')")
    assert event_time_column(with_prop) == "ts2"
    generic = parse_one("SELECT a FROM t WITH ('event.time.field' = 'ts3')")
    assert event_time_column(generic) == "ts3"
