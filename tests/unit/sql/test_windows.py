"""Window clauses (flowsql, ksqlDB, Flink), durations, emit modes and WITH properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowsql.errors import ConfigError, PlanError, SqlSyntaxError
from flowsql.plan.expr import AggCall, Col
from flowsql.plan.nodes import Aggregate, Project, WindowSpec, walk
from flowsql.sql import parse_one
from flowsql.sql.durations import parse_duration


def _agg(sql: str) -> Aggregate:
    node = next(n for n in walk(parse_one(sql).plan) if isinstance(n, Aggregate))
    assert isinstance(node, Aggregate)
    return node


def _window(clause: str) -> WindowSpec | None:
    return _agg(f"SELECT k, COUNT(*) AS n FROM t GROUP BY k {clause}").window


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        ("WINDOW TUMBLING(1s)", WindowSpec("tumbling", size_ms=1000)),
        ("WINDOW TUMBLING(500ms)", WindowSpec("tumbling", size_ms=500)),
        ("WINDOW TUMBLING(5m)", WindowSpec("tumbling", size_ms=300_000)),
        ("WINDOW TUMBLING(1h)", WindowSpec("tumbling", size_ms=3_600_000)),
        ("WINDOW TUMBLING(1d)", WindowSpec("tumbling", size_ms=86_400_000)),
        ("WINDOW TUMBLING(INTERVAL '1' SECOND)", WindowSpec("tumbling", size_ms=1000)),
        ("WINDOW TUMBLING(INTERVAL '250' MILLISECOND)", WindowSpec("tumbling", size_ms=250)),
        ("WINDOW TUMBLING(INTERVAL '2' MINUTES)", WindowSpec("tumbling", size_ms=120_000)),
        ("WINDOW TUMBLING(INTERVAL '3' HOURS)", WindowSpec("tumbling", size_ms=10_800_000)),
        ("WINDOW TUMBLING(INTERVAL '1' DAY)", WindowSpec("tumbling", size_ms=86_400_000)),
        ("WINDOW TUMBLING(INTERVAL '10 seconds')", WindowSpec("tumbling", size_ms=10_000)),
        (
            "WINDOW TUMBLING(ts, INTERVAL '1' SECOND)",
            WindowSpec("tumbling", size_ms=1000, time_column="ts"),
        ),
        (
            "WINDOW SLIDING(10s, 2s)",
            WindowSpec("sliding", size_ms=10_000, advance_ms=2000),
        ),
        (
            "WINDOW HOPPING(ts, 1m, 30s)",
            WindowSpec("sliding", size_ms=60_000, advance_ms=30_000, time_column="ts"),
        ),
        ("WINDOW SESSION(30s)", WindowSpec("session", gap_ms=30_000)),
        ("WINDOW SESSION(ts, 5m)", WindowSpec("session", gap_ms=300_000, time_column="ts")),
        # ksqlDB
        ("WINDOW TUMBLING (SIZE 1 SECOND)", WindowSpec("tumbling", size_ms=1000)),
        (
            "WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 1 SECOND)",
            WindowSpec("sliding", size_ms=10_000, advance_ms=1000),
        ),
        ("WINDOW SESSION (5 SECONDS)", WindowSpec("session", gap_ms=5000)),
        (
            "WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 2 DAYS)",
            WindowSpec("tumbling", size_ms=60_000),
        ),
    ],
)
def test_window_clause(clause: str, expected: WindowSpec) -> None:
    assert _window(clause) == expected


def test_window_may_stand_before_group_by() -> None:
    before = _agg("SELECT k, COUNT(*) AS n FROM t WINDOW TUMBLING(1s) GROUP BY k")
    after = _agg("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(1s)")
    assert before == after


def test_window_without_group_by_is_a_global_windowed_aggregate() -> None:
    agg = _agg("SELECT COUNT(*) AS n FROM t WINDOW TUMBLING(1s)")
    assert agg.keys == () and agg.window == WindowSpec("tumbling", size_ms=1000)


def test_ksql_grace_period_sets_allowed_lateness() -> None:
    agg = _agg(
        "SELECT k, COUNT(*) FROM t WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 5 SECONDS) GROUP BY k"
    )
    assert agg.allowed_lateness_ms == 5000


def test_window_columns_selectable() -> None:
    plan = parse_one(
        "SELECT k, _window_start, _window_end AS e, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(1s)"
    ).plan
    assert isinstance(plan, Project)
    assert plan.exprs[1:3] == (("_window_start", Col("_window_start")), ("e", Col("_window_end")))


def test_window_columns_need_a_window() -> None:
    with pytest.raises(PlanError, match="_window_start"):
        parse_one("SELECT k, _window_start, COUNT(*) FROM t GROUP BY k")


def test_flink_tumble_table_function() -> None:
    stmt = parse_one(
        "SELECT window_start, window_end, k, COUNT(*) AS n\n"
        "FROM TABLE(TUMBLE(TABLE trades, DESCRIPTOR(ts), INTERVAL '1' SECOND))\n"
        "GROUP BY window_start, window_end, k"
    )
    assert stmt.sources == ("trades",)
    project = stmt.plan
    assert isinstance(project, Project)
    assert project.exprs == (
        ("window_start", Col("_window_start")),
        ("window_end", Col("_window_end")),
        ("k", Col("k")),
        ("n", Col("n")),
    )
    agg = project.input
    assert isinstance(agg, Aggregate)
    assert agg.keys == (("k", Col("k")),)
    assert agg.window == WindowSpec("tumbling", size_ms=1000, time_column="ts")
    assert agg.emit == "final"


def test_flink_hop_takes_slide_before_size() -> None:
    agg = _agg(
        "SELECT window_start, k, SUM(x) AS s FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), "
        "INTERVAL '1' SECOND, INTERVAL '10' SECONDS)) GROUP BY window_start, window_end, k"
    )
    assert agg.window == WindowSpec("sliding", size_ms=10_000, advance_ms=1000, time_column="ts")
    assert agg.aggs == (("s", AggCall("sum", (Col("x"),))),)


def test_flink_session_and_named_arguments() -> None:
    session = _agg(
        "SELECT k, COUNT(*) FROM TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), "
        "INTERVAL '5' MINUTES)) GROUP BY window_start, window_end, k"
    )
    assert session.window == WindowSpec("session", gap_ms=300_000, time_column="ts")
    named = _agg(
        "SELECT k, COUNT(*) FROM TABLE(TUMBLE(DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), "
        "SIZE => INTERVAL '2' SECONDS)) AS w GROUP BY window_start, window_end, k"
    )
    assert named.window == WindowSpec("tumbling", size_ms=2000, time_column="ts")


def test_emit_defaults() -> None:
    assert _agg("SELECT k, COUNT(*) FROM t GROUP BY k WINDOW SESSION(1s)").emit == "final"
    assert _agg("SELECT k, COUNT(*) FROM t GROUP BY k").emit == "changes"


def test_emit_changes_may_come_before_limit_like_ksql() -> None:
    stmt = parse_one("SELECT k, COUNT(*) FROM t GROUP BY k EMIT CHANGES LIMIT 3")
    assert type(stmt.plan).__name__ == "Limit"


def test_allowed_lateness_and_late_strategy_from_with() -> None:
    agg = _agg(
        "SELECT k, COUNT(*) FROM t GROUP BY k WINDOW TUMBLING(1s) "
        "WITH ('watermark.allowed_lateness' = '2 seconds', 'late.data.strategy' = 'dlq')"
    )
    assert (agg.allowed_lateness_ms, agg.late_strategy) == (2000, "dlq")
    assert (
        _agg(
            "SELECT COUNT(*) FROM t WINDOW TUMBLING(1s) WITH ('watermark.allowed_lateness'='500ms')"
        ).allowed_lateness_ms
        == 500
    )


def test_bad_late_strategy_names_key_value_and_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_one("SELECT COUNT(*) FROM t WINDOW TUMBLING(1s) WITH ('late.data.strategy' = 'keep')")
    assert err.value.key == "late.data.strategy" and err.value.value == "keep"
    assert "drop" in err.value.allowed and "dlq" in err.value.allowed


def test_bad_lateness_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="watermark.allowed_lateness"):
        parse_one(
            "SELECT COUNT(*) FROM t WINDOW TUMBLING(1s) WITH ('watermark.allowed_lateness'='soon')"
        )


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("WINDOW TUMBLING(5)", "needs a unit"),
        ("WINDOW TUMBLING(5x)", "unknown time unit 'x'"),
        ("WINDOW TUMBLING(1s, 2s)", "TUMBLING"),
        ("WINDOW SLIDING(1s)", "SLIDING"),
        ("WINDOW TUMBLING 1s", "expected '\\('"),
    ],
)
def test_bad_window_syntax(clause: str, message: str) -> None:
    with pytest.raises(SqlSyntaxError, match=message) as err:
        parse_one(f"SELECT COUNT(*) FROM t\n{clause}")
    assert err.value.line == 2


def test_bad_window_sizes_are_plan_errors_with_position() -> None:
    with pytest.raises(PlanError, match="advance") as err:
        parse_one("SELECT COUNT(*) FROM t\n  WINDOW SLIDING(1s, 2s)")
    assert (err.value.line, err.value.column) == (2, 10)
    with pytest.raises(PlanError, match="positive"):
        parse_one("SELECT COUNT(*) FROM t WINDOW TUMBLING(0ms)")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1s", 1000),
        ("500ms", 500),
        ("2 seconds", 2000),
        ("1 second", 1000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1.5s", 1500),
        ("250", 250),
        ("3 MINUTES", 180_000),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@given(
    st.integers(0, 10**6),
    st.sampled_from([("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]),
)
def test_parse_duration_scales_by_unit(amount: int, unit: tuple[str, int]) -> None:
    assert parse_duration(f"{amount}{unit[0]}") == amount * unit[1]
    assert parse_duration(f"{amount} {unit[0]}") == amount * unit[1]


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="unknown time unit"):
        parse_duration("3 fortnights")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_ksql_windowstart_and_flink_window_time() -> None:
    ksql = parse_one(
        "SELECT WINDOWSTART, k, COUNT(*) FROM t WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k"
    )
    assert isinstance(ksql.plan, Project)
    assert ksql.plan.exprs[0] == ("WINDOWSTART", Col("_window_start"))
    flink = parse_one(
        "SELECT window_time, k, COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), "
        "INTERVAL '1' SECOND)) GROUP BY window_start, window_end, window_time, k"
    )
    assert isinstance(flink.plan, Project)
    assert flink.plan.exprs[0] == ("window_time", Col("_timestamp"))


def test_misspelt_window_kind_gets_a_hint() -> None:
    with pytest.raises(SqlSyntaxError) as err:
        parse_one("SELECT COUNT(*) FROM t WINDOW TUMBLNG(1s)")
    assert err.value.token == "TUMBLNG" and "TUMBLING" in err.value.hint


def test_flink_cumulate_is_reported_unsupported() -> None:
    with pytest.raises(SqlSyntaxError, match="CUMULATE"):
        parse_one(
            "SELECT COUNT(*) FROM TABLE(CUMULATE(TABLE t, DESCRIPTOR(ts), "
            "INTERVAL '1' SECOND, INTERVAL '1' MINUTE))"
        )
