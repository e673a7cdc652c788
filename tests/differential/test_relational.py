"""DISTINCT (first occurrence emitted), LIMIT (the job stops after N rows) and
ORDER BY against DuckDB, at batch sizes 1, 7 and 10,000. Rows are compared in
emitted order: DISTINCT in order of first occurrence, LIMIT in arrival order."""

from __future__ import annotations

import pyarrow as pa
import pytest

import flowsql

from .data import trades
from .harness import BATCH_SIZES, check_differential, run_engine


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(150, seed=31)


@pytest.mark.parametrize(
    ("select", "where"),
    [
        pytest.param("symbol", "", id="one-column-with-null"),
        pytest.param("symbol, venue", "WHERE qty > 500", id="two-columns-after-where"),
        pytest.param("qty % 10 AS b, price > 250 AS hi", "", id="expressions"),
        pytest.param("CAST(amount AS BIGINT) % 3 AS m, TRIM(venue) AS v", "", id="decimal-cast"),
    ],
)
def test_distinct_first_occurrence(select: str, where: str, table: pa.Table) -> None:
    sql = f"SELECT DISTINCT {select} FROM t {where}"
    duck = f"SELECT {select} FROM t {where} GROUP BY ALL ORDER BY min(id)"
    check_differential(sql, table, duck, ordered=True)


@pytest.mark.parametrize(
    ("sql", "duck"),
    [
        pytest.param(
            "SELECT id, symbol, price FROM t WHERE price > 100 LIMIT 25",
            "SELECT id, symbol, price FROM t WHERE price > 100 ORDER BY id LIMIT 25",
            id="filter-limit",
        ),
        pytest.param(
            "SELECT id, qty * 2 AS q2 FROM t LIMIT 1",
            "SELECT id, qty * 2 AS q2 FROM t ORDER BY id LIMIT 1",
            id="limit-1",
        ),
        pytest.param(
            "SELECT id FROM t WHERE qty > 990 LIMIT 1000",
            "SELECT id FROM t WHERE qty > 990 ORDER BY id",
            id="limit-above-input",
        ),
        pytest.param(
            "SELECT DISTINCT venue FROM t LIMIT 3",
            "SELECT venue FROM t GROUP BY venue ORDER BY min(id) LIMIT 3",
            id="distinct-limit",
        ),
        pytest.param(
            "SELECT symbol, _window_start, COUNT(*) AS n FROM t GROUP BY symbol"
            " WINDOW TUMBLING(ts, 1s) WITH ('watermark.allowed_lateness' = '100ms') LIMIT 6",
            "SELECT symbol, ts // 1000 * 1000 AS _window_start, COUNT(*) AS n FROM t"
            " GROUP BY ALL ORDER BY _window_start, symbol NULLS LAST LIMIT 6",
            id="window-rows-limit",
        ),
        pytest.param(
            "SELECT id, price FROM t ORDER BY price DESC, id LIMIT 10",
            "SELECT id, price FROM t ORDER BY price DESC NULLS LAST, id LIMIT 10",
            id="top-n",
        ),
        pytest.param(
            "SELECT id, symbol, venue FROM t WHERE qty < 200 ORDER BY symbol, venue DESC, id",
            "SELECT id, symbol, venue FROM t WHERE qty < 200"
            " ORDER BY symbol NULLS LAST, venue DESC, id",
            id="order-by-nulls-last",
        ),
        pytest.param(
            "SELECT symbol, COUNT(*) AS n, SUM(amount) AS s FROM t GROUP BY symbol EMIT FINAL"
            " ORDER BY n DESC, symbol",
            "SELECT symbol, COUNT(*) AS n, SUM(amount) AS s FROM t GROUP BY symbol"
            " ORDER BY n DESC, symbol NULLS LAST",
            id="order-aggregate-output",
        ),
    ],
)
def test_limit_and_order_by(sql: str, duck: str, table: pa.Table) -> None:
    check_differential(sql, table, duck, ordered=True)


def test_limit_stops_reading_input(table: pa.Table) -> None:
    for size in BATCH_SIZES:
        engine = flowsql.Engine("SELECT id FROM t LIMIT 10")
        consumed = 0
        for batch in table.to_batches(max_chunksize=size):
            engine.process(batch)
            consumed += batch.num_rows
            if engine.done:
                break
        assert engine.done
        assert consumed == min(table.num_rows, -(-10 // size) * size)
        assert engine.metrics.records_out == 10


def test_limit_zero_emits_nothing(table: pa.Table) -> None:
    for size in (1, 10_000):
        rows, _ = run_engine("SELECT id FROM t LIMIT 0", table, size)
        assert rows == []
