"""``explain`` reports the engine's event-time decision and the watermark: the
column comes from the function the engine calls, and the run uses it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.engine import query
from flowsql.plan.explain import event_time_source, explain
from flowsql.plan.routing import event_time_column
from flowsql.sql import parse_one


def _lines(sql: str, event_time: str | None = None) -> list[str]:
    return explain(parse_one(sql), event_time).splitlines()


def test_a_window_over_ts_shows_ts_and_the_run_windows_by_ts() -> None:
    sql = "SELECT COUNT(*) AS n, _window_start AS ws FROM t WINDOW TUMBLING(ts, 1s)"
    assert "event time: ts (from the window)" in _lines(sql)
    # ts and the input's _timestamp disagree by an hour: the windows follow ts.
    rows = [{"ts": 1_000 * i, "_timestamp": 3_600_000 + 1_000 * i} for i in range(3)]
    got = query(sql, {"t": pa.Table.from_pylist(rows)}).to_pylist()
    assert [r["ws"] for r in got] == [0, 1_000, 2_000]


def test_flink_and_ksqldb_windows_show_their_column() -> None:
    flink = (
        "SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
        " GROUP BY window_start, window_end"
    )
    assert "event time: ts (from the window)" in _lines(flink)
    ksql = "SELECT a, COUNT(*) AS n FROM t WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY a"
    assert event_time_column(parse_one(ksql)) is None
    assert any(
        line.startswith("event time: _timestamp when the input has it") for line in _lines(ksql)
    )


def test_without_a_named_column_it_is_timestamp_and_says_the_fallback() -> None:
    (line,) = [x for x in _lines("SELECT a FROM t") if x.startswith("event time:")]
    assert line == (
        "event time: _timestamp when the input has it (Kafka: the message timestamp), else the"
        " input's first column named timestamp, event_time or ts, else the time each record is read"
    )
    assert "watermark: not used (no event-time window: nothing closes, no record is late)" in (
        _lines("SELECT a FROM t")
    )


def test_a_kafka_source_is_its_message_timestamp() -> None:
    sql = "SELECT a FROM k WITH ('k.type' = 'kafka_source', 'k.topic' = 'x')"
    assert "event time: _timestamp (the Kafka message timestamp)" in _lines(sql)


@pytest.mark.parametrize(
    ("sql", "override", "want"),
    [
        (
            "SELECT a FROM t WITH ('t.event.time.field' = 'ev')",
            None,
            "ev (from WITH 't.event.time.field')",
        ),
        (
            "SELECT a FROM t WITH ('event.time.field' = 'ev')",
            None,
            "ev (from WITH 'event.time.field')",
        ),
        ("SELECT a FROM t WITH ('event.time.field' = 'ev')", "ts", "ts (from --event-time)"),
        ("SELECT COUNT(*) AS n FROM t WINDOW TUMBLING(w, 1s)", "ts", "w (from the window)"),
    ],
)
def test_the_origin_follows_the_engines_order(sql: str, override: str | None, want: str) -> None:
    statement = parse_one(sql)
    assert event_time_source(statement, override) == want
    assert want.startswith(str(event_time_column(statement, override)) + " ")


def test_declared_lateness_and_late_strategy_show_up() -> None:
    lines = _lines(
        "SELECT COUNT(*) AS n FROM t WINDOW TUMBLING(ts, 1s)"
        " WITH ('watermark.allowed_lateness' = '2 seconds', 'late.data.strategy' = 'dlq')"
    )
    assert (
        "watermark: event time reached - 2s (allowed lateness, WITH 'watermark.allowed_lateness');"
        " a window closes when the watermark reaches its end"
    ) in lines
    assert (
        "late data: allowed lateness 2s, then dlq (counted and dead-lettered, 'late.data.strategy')"
    ) in lines


def test_grace_period_and_default_lateness_say_where_they_come_from() -> None:
    grace = _lines(
        "SELECT COUNT(*) AS n FROM t WINDOW TUMBLING (SIZE 1 SECOND, GRACE PERIOD 3 SECONDS)"
    )
    assert any("- 3s (allowed lateness, the window's GRACE PERIOD)" in x for x in grace)
    default = _lines("SELECT COUNT(*) AS n FROM t WINDOW SESSION(ts, 1s)")
    assert any(
        "- 0ms (allowed lateness, default; WITH 'watermark.allowed_lateness' sets it)" in x
        for x in default
    )
    assert (
        "late data: allowed lateness 0ms, then drop (dropped and counted, 'late.data.strategy')"
        in (default)
    )


def test_a_kafka_sink_shows_its_message_timestamps() -> None:
    sql = (
        "CREATE STREAM out AS SELECT a, COUNT(*) AS n FROM t GROUP BY a WINDOW TUMBLING(ts, 1s)"
        " WITH ('out.type' = 'kafka_sink', 'out.topic' = 'o')"
    )
    assert "message timestamps (kafka_sink out): window end - 1 ms of each result row" in _lines(
        sql
    )
    assert not any(x.startswith("message timestamps") for x in _lines("SELECT a FROM t"))


def test_cli_explain_takes_the_run_event_time(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    path = tmp_path / "q.sql"
    path.write_text("SELECT a, COUNT(*) AS n FROM t GROUP BY a WINDOW TUMBLING(1s)")
    result = CliRunner().invoke(app, ["explain", str(path), "--event-time", "created"])
    assert result.exit_code == 0, result.output
    assert "event time: created (from --event-time)" in result.stdout.splitlines()


def test_a_declared_idle_timeout_shows_up() -> None:
    statement = parse_one("SELECT COUNT(*) AS n FROM t WINDOW TUMBLING(ts, 1s)")
    props = {"idle.timeout": "30s", "t.properties.connections.max.idle.ms": "9"}
    declared = replace(statement, properties=props)  # any 'idle*' key but a client's
    assert (
        "  event time reached: the max seen; over input partitions (Kafka), the minimum of the"
        " active ones; a partition silent for the idle timeout stops counting (idle.timeout = 30s)"
    ) in explain(declared).splitlines()
    assert "idle" not in explain(statement)
