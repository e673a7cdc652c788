"""explain(): plan tree, event time, window, emit, routing and why."""

from __future__ import annotations

from flowsql.plan.explain import duration, explain, render
from flowsql.sql import parse_one


def test_explain_windowed_group_by() -> None:
    text = explain(
        parse_one(
            "-- @job_mode: v2\n"
            "SELECT symbol, COUNT(*) AS n, SUM(price * qty) / SUM(qty) AS vwap FROM trades\n"
            "WHERE price > 1.5 AND symbol IN ('A', 'B')\n"
            "GROUP BY symbol WINDOW TUMBLING(ts, 1s)\n"
            "WITH ('watermark.allowed_lateness' = '500ms', 'trades.properties.sasl.password' = 'hunter2')"
        )
    )
    lines = text.splitlines()
    assert "  Project symbol, n, (_agg1 / _agg2) AS vwap" in lines
    assert (
        "    Aggregate keys=[symbol] aggs=[n := COUNT(*), _agg1 := SUM((price * qty)), "
        "_agg2 := SUM(qty)] window=TUMBLING(ts, 1s) emit=final"
    ) in lines
    assert "      Filter ((price > 1.5) AND symbol IN ('A', 'B'))" in lines
    assert "        Scan trades" in lines
    assert "event time: ts (from the window)" in lines
    assert "window: TUMBLING(ts, 1s)" in lines
    assert any(line.startswith("emit: final") for line in lines)
    assert (
        "late data: allowed lateness 500ms, then drop (dropped and counted, 'late.data.strategy')"
    ) in lines
    assert "routing key: symbol" in lines
    assert any(line.startswith("partitioning: hash-partitioned by (symbol)") for line in lines)
    assert "hunter2" not in text and "trades.properties.sasl.password = ****" in text
    assert "annotations: job_mode = v2" in lines


def test_explain_says_why_not_partitioned() -> None:
    text = explain(parse_one("SELECT ROW_NUMBER() OVER (ORDER BY ts) AS n FROM t"))
    assert "routing key: (none)" in text
    assert "not partitioned (single partition)" in text
    assert "without PARTITION BY" in text
    assert "RowsWindow ORDER BY ts: n := ROW_NUMBER() ROWS UNBOUNDED PRECEDING" in text


def test_explain_default_event_time_and_stateless() -> None:
    text = explain(parse_one("SELECT a, CASE WHEN a IS NULL THEN 'x' END AS b FROM t LIMIT 5"))
    assert "event time: _timestamp" in text
    assert "Project a, CASE WHEN a IS NULL THEN 'x' END AS b" in text
    assert "Limit 5" in text
    assert "LIMIT 5" in text  # the reason


def test_render_round_trips_common_expressions() -> None:
    plan = parse_one(
        "SELECT CAST(a AS DECIMAL(10, 2)) AS c, EXTRACT(HOUR FROM ts) AS h, -a AS n, "
        "a NOT IN (1, 2) AS i, a BETWEEN 1 AND 2 AS b FROM t"
    ).plan
    rendered = [render(e) for _, e in plan.exprs]  # type: ignore[attr-defined]
    assert rendered == [
        "CAST(a AS decimal128(10, 2))",
        "EXTRACT(HOUR FROM ts)",
        "-a",
        "a NOT IN (1, 2)",
        "a BETWEEN 1 AND 2",
    ]


def test_duration() -> None:
    assert [duration(ms) for ms in (1500, 1000, 60_000, 7_200_000, 0)] == [
        "1500ms",
        "1s",
        "1m",
        "2h",
        "0ms",
    ]


def test_explain_says_how_v2_reads_a_jsonl_file() -> None:
    changes = explain(parse_one("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol"))
    assert "workers read chunks; EMIT CHANGES follows the micro-batches" in changes
    final = explain(
        parse_one(
            "SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol"
            " WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
        )
    )
    assert "partial per split, merged" in final
    offsets = explain(parse_one("SELECT _offset, symbol FROM t"))
    assert "not used: the query reads _offset" in offsets
