"""Every window type and its syntaxes against DuckDB (window bounds computed
from the definition in SQL), HAVING, at batch sizes 1, 7 and 10,000."""

from __future__ import annotations

import pyarrow as pa
import pytest

from .data import trades
from .harness import check_differential, run_engine
from .queries import (
    AGGREGATES,
    LATENESS,
    Agg,
    same,
    select_list,
    session_duck,
    sliding_duck,
    tumbling_duck,
)

#: A mix of every family, for the window types other than tumbling.
MIXED: list[Agg] = [
    same("n", "COUNT(*)"),
    same("nd_venue", "COUNT(DISTINCT venue)"),
    Agg("sum_qty", "SUM(qty)", "SUM(qty)::BIGINT"),
    same("sum_amount", "SUM(amount)"),
    same("avg_price", "AVG(price)"),
    same("min_amount", "MIN(amount)"),
    same("max_venue", "MAX(venue)"),
    same("sd", "STDDEV_SAMP(price)"),
    AGGREGATES["first_last"][0],
    AGGREGATES["first_last"][3],
]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(150, seed=11)


def test_tumbling_short_form_and_implicit_time_column(table: pa.Table) -> None:
    """``TUMBLING(500ms)`` without a column uses ``ts`` (a fallback event-time name)."""
    sql = (
        f"SELECT symbol, _window_start, _window_end, {select_list(MIXED, 'flow')}"
        f" FROM t GROUP BY symbol WINDOW TUMBLING(500ms) {LATENESS}"
    )
    check_differential(sql, table, tumbling_duck(select_list(MIXED, "duck"), 500))


@pytest.mark.parametrize(
    ("clause", "size", "advance"),
    [
        ("SLIDING(ts, INTERVAL '1' SECOND, INTERVAL '250' MILLISECOND)", 1000, 250),
        ("HOPPING(ts, 600ms, 400ms)", 600, 400),
    ],
)
def test_sliding(clause: str, size: int, advance: int, table: pa.Table) -> None:
    sql = (
        f"SELECT symbol, _window_start, _window_end, {select_list(MIXED, 'flow')}"
        f" FROM t GROUP BY symbol WINDOW {clause} {LATENESS}"
    )
    check_differential(sql, table, sliding_duck(select_list(MIXED, "duck"), size, advance))


@pytest.mark.parametrize("gap", [40, 150])
def test_session(gap: int, table: pa.Table) -> None:
    sql = (
        f"SELECT symbol, _window_start, _window_end, {select_list(MIXED, 'flow')}"
        f" FROM t GROUP BY symbol WINDOW SESSION(ts, {gap}ms) {LATENESS}"
    )
    # A record that bridges two open sessions merges their partial states, so
    # float results may differ in the last bits between batch sizes.
    check_differential(sql, table, session_duck(select_list(MIXED, "duck"), gap), batch_rel=1e-12)


def test_session_without_keys(table: pa.Table) -> None:
    sql = (
        "SELECT _window_start, _window_end, COUNT(*) AS n, MAX(price) AS hi"
        f" FROM t WINDOW SESSION(ts, 25ms) {LATENESS}"
    )
    check_differential(sql, table, session_duck("COUNT(*) AS n, MAX(price) AS hi", 25, keys=""))


def test_sliding_without_keys(table: pa.Table) -> None:
    sql = (
        "SELECT _window_start, _window_end, COUNT(*) AS n, SUM(amount) AS s"
        f" FROM t WINDOW SLIDING(ts, 2s, 500ms) {LATENESS}"
    )
    check_differential(sql, table, sliding_duck("COUNT(*) AS n, SUM(amount) AS s", 2000, 500, ""))


# -- other spellings of the same windows ----------------------------------------------------

TUMBLING_DUCK = tumbling_duck("COUNT(*) AS n, SUM(price) AS s", 1000)
SLIDING_DUCK = sliding_duck("COUNT(*) AS n, SUM(price) AS s", 1000, 500)
SESSION_DUCK = session_duck("COUNT(*) AS n, SUM(price) AS s", 100)


@pytest.mark.parametrize(
    ("sql", "duck"),
    [
        pytest.param(
            "SELECT symbol, WINDOWSTART AS _window_start, WINDOWEND AS _window_end,"
            " COUNT(*) AS n, SUM(price) AS s FROM t"
            f" WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY symbol {LATENESS}",
            TUMBLING_DUCK,
            id="ksqldb-tumbling",
        ),
        pytest.param(
            "SELECT symbol, WINDOWSTART AS _window_start, WINDOWEND AS _window_end,"
            " COUNT(*) AS n, SUM(price) AS s FROM t"
            " WINDOW HOPPING (SIZE 1 SECOND, ADVANCE BY 500 MILLISECONDS, GRACE PERIOD 100 MILLISECONDS)"
            " GROUP BY symbol",
            SLIDING_DUCK,
            id="ksqldb-hopping-grace",
        ),
        pytest.param(
            "SELECT symbol, WINDOWSTART AS _window_start, WINDOWEND AS _window_end,"
            " COUNT(*) AS n, SUM(price) AS s FROM t"
            f" WINDOW SESSION (100 MILLISECONDS) GROUP BY symbol {LATENESS}",
            SESSION_DUCK,
            id="ksqldb-session",
        ),
        pytest.param(
            "SELECT symbol, window_start AS _window_start, window_end AS _window_end,"
            " COUNT(*) AS n, SUM(price) AS s"
            " FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
            f" GROUP BY symbol, window_start, window_end {LATENESS}",
            TUMBLING_DUCK,
            id="flink-tumble",
        ),
        pytest.param(
            "SELECT symbol, window_start AS _window_start, window_end AS _window_end,"
            " COUNT(*) AS n, SUM(price) AS s"
            " FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND,"
            " INTERVAL '1' SECOND))"
            f" GROUP BY symbol, window_start, window_end {LATENESS}",
            SLIDING_DUCK,
            id="flink-hop",
        ),
        pytest.param(
            "SELECT symbol, window_start AS _window_start, window_end AS _window_end,"
            " COUNT(*) AS n, SUM(price) AS s"
            " FROM TABLE(SESSION(TABLE t PARTITION BY symbol, DESCRIPTOR(ts),"
            " INTERVAL '100' MILLISECOND))"
            f" GROUP BY symbol, window_start, window_end {LATENESS}",
            SESSION_DUCK,
            id="flink-session",
        ),
    ],
)
def test_window_dialects(sql: str, duck: str, table: pa.Table) -> None:
    check_differential(sql, table.slice(0, 80), duck, batch_rel=1e-12)


# -- HAVING ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("having", "duck_having"),
    [
        ("COUNT(*) > 3 AND AVG(price) > 200", None),
        ("SUM(amount) > 50000.00 OR MIN(qty) < 20", None),
        (
            "n >= 4 AND MAX(price) - MIN(price) > 300",
            "COUNT(*) >= 4 AND MAX(price) - MIN(price) > 300",
        ),
        ("COUNT(DISTINCT venue) >= 3 AND symbol IS NOT NULL", None),
    ],
)
def test_having(having: str, duck_having: str | None, table: pa.Table) -> None:
    sql = (
        "SELECT symbol, _window_start, COUNT(*) AS n, AVG(price) AS p FROM t GROUP BY symbol"
        f" WINDOW TUMBLING(ts, 1s) HAVING {having} {LATENESS}"
    )
    duck = (
        "SELECT symbol, ts // 1000 * 1000 AS _window_start, COUNT(*) AS n, AVG(price) AS p"
        f" FROM t GROUP BY ALL HAVING {duck_having or having}"
    )
    results = check_differential(sql, table, duck)
    assert results[10_000], "the HAVING case keeps no row: make it less selective"


def test_having_before_window_and_window_before_group_by(table: pa.Table) -> None:
    """WINDOW may stand before GROUP BY; HAVING may reference a hidden aggregate."""
    sql = (
        f"SELECT symbol, _window_start, MAX(qty) AS hi FROM t WINDOW HOPPING(ts, 1s, 500ms)"
        f" GROUP BY symbol HAVING SUM(qty) > 1500 {LATENESS}"
    )
    duck = (
        "WITH w AS (SELECT *, unnest(range((ts - 1000) // 500 + 1, ts // 500 + 1)) AS k FROM t)"
        " SELECT symbol, k * 500 AS _window_start, MAX(qty) AS hi FROM w GROUP BY ALL"
        " HAVING SUM(qty) > 1500"
    )
    check_differential(sql, table, duck)


def test_where_before_window(table: pa.Table) -> None:
    sql = (
        "SELECT venue, _window_start, COUNT(*) AS n, SUM(amount) AS s FROM t"
        " WHERE price > 100 AND symbol IN ('AAPL', 'MSFT', 'TSLA')"
        f" GROUP BY venue WINDOW TUMBLING(ts, 1s) {LATENESS}"
    )
    duck = (
        "SELECT venue, ts // 1000 * 1000 AS _window_start, COUNT(*) AS n, SUM(amount) AS s"
        " FROM t WHERE price > 100 AND symbol IN ('AAPL', 'MSFT', 'TSLA') GROUP BY ALL"
    )
    check_differential(sql, table, duck)


def test_window_rows_come_out_in_window_end_order(table: pa.Table) -> None:
    """EMIT FINAL rows are emitted as windows close: window end never decreases."""
    sql = f"SELECT symbol, _window_end, COUNT(*) AS n FROM t GROUP BY symbol WINDOW SLIDING(ts, 1s, 250ms) {LATENESS}"
    for size in (1, 7, 10_000):
        rows, _ = run_engine(sql, table, size)
        ends = [r["_window_end"] for r in rows]
        assert ends == sorted(ends), f"batch size {size}"
