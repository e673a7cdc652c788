"""The time of output messages: each row's event time, carried to the sink in
``__message_time`` by the ``with_message_time`` plan rewrite."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.engine import Engine
from flowsql.plan import nodes as n
from flowsql.plan.message_time import MESSAGE_TIME, message_time, with_message_time
from flowsql.sql import parse_one

ROWS = [{"symbol": "AB"[i % 2], "ts": 1_000 + 300 * i, "p": i} for i in range(10)]


def _run(sql: str) -> list[dict[str, object]]:
    engine = Engine(with_message_time(parse_one(sql)))
    out = engine.process(pa.Table.from_pylist(ROWS)) + engine.flush()
    return pa.Table.from_batches(out).to_pylist()


def test_a_windowed_result_carries_its_window_end_minus_one_ms() -> None:
    rows = _run(
        "SELECT symbol, _window_end AS we, COUNT(*) AS n FROM t"
        " GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
    )
    assert rows and all(r[MESSAGE_TIME] == r["we"] - 1 for r in rows)


def test_a_session_result_carries_its_session_end_minus_one_ms() -> None:
    rows = _run(
        "SELECT symbol, _window_end AS we, COUNT(*) AS n FROM t GROUP BY symbol WINDOW SESSION(ts, 1s)"
    )
    assert [(r["symbol"], r[MESSAGE_TIME]) for r in rows] == [("A", 4399), ("B", 4699)]
    assert all(r[MESSAGE_TIME] == r["we"] - 1 for r in rows)


def test_a_changelog_row_carries_the_latest_event_time_of_its_group() -> None:
    rows = _run("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol")
    last = {r["symbol"]: r[MESSAGE_TIME] for r in rows}
    assert last == {"A": 1_000 + 300 * 8, "B": 1_000 + 300 * 9}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT symbol, p, ts FROM t WHERE p > 2",
        "SELECT * FROM t ORDER BY p DESC LIMIT 4",
        "SELECT symbol, SUM(p) OVER (PARTITION BY symbol ORDER BY ts) AS s, ts FROM t",
    ],
)
def test_a_row_carries_its_own_event_time(sql: str) -> None:
    rows = _run(sql)
    assert rows and all(r[MESSAGE_TIME] == r["ts"] for r in rows)


def test_the_event_time_column_of_with_decides_it() -> None:
    rows = _run("SELECT symbol, p FROM t WITH ('event.time.field' = 'p')")
    assert [r[MESSAGE_TIME] for r in rows] == [r["p"] for r in ROWS]


def test_distinct_rows_keep_the_wall_clock() -> None:
    statement = parse_one("SELECT DISTINCT symbol FROM t")
    assert not message_time(statement).carried
    assert with_message_time(statement) is statement


def test_the_rewrite_adds_one_column_at_the_end_and_is_idempotent() -> None:
    statement = parse_one("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol ORDER BY n LIMIT 2")
    once = with_message_time(statement)
    assert with_message_time(once) is once
    project = next(x for x in n.walk(once.plan) if isinstance(x, n.Project))
    assert [name for name, _ in project.exprs] == ["symbol", "n", MESSAGE_TIME]
    assert [type(x) for x in n.walk(once.plan)] == [type(x) for x in n.walk(statement.plan)]


def test_the_rule_in_words() -> None:
    def rule(sql: str) -> str:
        return message_time(parse_one(sql)).meaning

    assert rule("SELECT COUNT(*) AS n FROM t WINDOW TUMBLING(1s)") == (
        "window end - 1 ms of each result row"
    )
    assert rule("SELECT a, COUNT(*) AS n FROM t GROUP BY a") == (
        "the largest event time of each row's group"
    )
    assert rule("SELECT a FROM t") == "each row's event time (_timestamp)"
