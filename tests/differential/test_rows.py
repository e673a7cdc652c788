"""ROWS window functions (OVER) against DuckDB, at batch sizes 1, 7 and 10,000.

On a stream, rows of a partition are taken in arrival order, so the input
arrives in ORDER BY order (event times with ties; ties in arrival = ``id``
order). DuckDB orders frames and offsets by ``ts, id`` and ranks by ``ts``.
Rows are compared by ``id`` (LEAD holds rows back, so emitted order differs).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from .data import sorted_by_time, trades
from .harness import check_differential

W = "PARTITION BY symbol ORDER BY ts"
DW = "PARTITION BY symbol ORDER BY ts, id"


@pytest.fixture(scope="module")
def table() -> pa.Table:
    table = sorted_by_time(trades(150, seed=17, jitter=0, step=6))
    ts = table.column("ts").to_numpy()
    assert (ts[1:] == ts[:-1]).any(), "the data should have ties in ts"
    return table


CASES = [
    pytest.param(
        "SELECT id, symbol, SUM(price) OVER (w3) AS s, AVG(price) OVER (w3) AS a,"
        " MIN(qty) OVER (w3) AS lo, MAX(amount) OVER (w3) AS hi, COUNT(price) OVER (w3) AS n,"
        " COUNT(*) OVER (w3) AS c, SUM(amount) OVER (w3) AS sa, SUM(qty) OVER (w3) AS sq"
        " FROM t".replace("w3", f"{W} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW"),
        "SELECT id, symbol, SUM(price) OVER w AS s, AVG(price) OVER w AS a, MIN(qty) OVER w AS lo,"
        " MAX(amount) OVER w AS hi, COUNT(price) OVER w AS n, COUNT(*) OVER w AS c,"
        " SUM(amount) OVER w AS sa, (SUM(qty) OVER w)::BIGINT AS sq FROM t"
        f" WINDOW w AS ({DW} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)",
        id="frame-3-preceding",
    ),
    pytest.param(
        "SELECT id, symbol, AVG(price) OVER (wb) AS a, SUM(qty) OVER (wb) AS sq,"
        " COUNT(*) OVER (wb) AS c, MAX(price) OVER (wb) AS hi, MIN(venue) OVER (wb) AS v"
        " FROM t".replace("wb", f"ROWS WINDOW BUFFER 5 ROWS {W}"),
        "SELECT id, symbol, AVG(price) OVER w AS a, (SUM(qty) OVER w)::BIGINT AS sq,"
        " COUNT(*) OVER w AS c, MAX(price) OVER w AS hi, MIN(venue) OVER w AS v FROM t"
        f" WINDOW w AS ({DW} ROWS BETWEEN 4 PRECEDING AND CURRENT ROW)",
        id="window-buffer-5-rows",
    ),
    pytest.param(
        "SELECT id, symbol, SUM(price) OVER (wu) AS s, COUNT(qty) OVER (wu) AS n,"
        " MAX(amount) OVER (wu) AS hi FROM t".replace(
            "wu", f"{W} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
        ),
        "SELECT id, symbol, SUM(price) OVER w AS s, COUNT(qty) OVER w AS n,"
        " MAX(amount) OVER w AS hi FROM t"
        f" WINDOW w AS ({DW} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        id="frame-unbounded",
    ),
    pytest.param(
        f"SELECT id, symbol, LAG(price) OVER ({W}) AS lag1, LAG(qty, 2, -1) OVER ({W}) AS lag2,"
        f" LEAD(price) OVER ({W}) AS lead1, LEAD(qty, 3, 0) OVER ({W}) AS lead3,"
        f" LAG(venue) OVER ({W}) AS lagv, LEAD(amount, 2) OVER ({W}) AS leada FROM t",
        "SELECT id, symbol, lag(price) OVER w AS lag1, lag(qty, 2, -1) OVER w AS lag2,"
        " lead(price) OVER w AS lead1, lead(qty, 3, 0) OVER w AS lead3,"
        " lag(venue) OVER w AS lagv, lead(amount, 2) OVER w AS leada"
        f" FROM t WINDOW w AS ({DW})",
        id="lag-lead",
    ),
    pytest.param(
        f"SELECT id, symbol, ROW_NUMBER() OVER ({W}) AS rn, RANK() OVER ({W}) AS rk,"
        f" DENSE_RANK() OVER ({W}) AS drk FROM t",
        "SELECT id, symbol, row_number() OVER (PARTITION BY symbol ORDER BY ts, id) AS rn,"
        " rank() OVER (PARTITION BY symbol ORDER BY ts) AS rk,"
        " dense_rank() OVER (PARTITION BY symbol ORDER BY ts) AS drk FROM t",
        id="row-number-rank-dense-rank",
    ),
    pytest.param(
        "SELECT id, ROW_NUMBER() OVER (ORDER BY ts) AS rn, RANK() OVER (ORDER BY ts) AS rk,"
        " DENSE_RANK() OVER (ORDER BY ts) AS drk,"
        " SUM(qty) OVER (ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3,"
        " LAG(ts, 1, 0) OVER (ORDER BY ts) AS prev FROM t",
        "SELECT id, row_number() OVER (ORDER BY ts, id) AS rn, rank() OVER (ORDER BY ts) AS rk,"
        " dense_rank() OVER (ORDER BY ts) AS drk,"
        " (SUM(qty) OVER (ORDER BY ts, id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW))::BIGINT"
        " AS s3, lag(ts, 1, 0) OVER (ORDER BY ts, id) AS prev FROM t",
        id="no-partition",
    ),
    pytest.param(
        "SELECT id, venue, AVG(price) OVER (PARTITION BY venue ORDER BY ts"
        " ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS a FROM t WHERE qty > 300",
        "SELECT id, venue, AVG(price) OVER (PARTITION BY venue ORDER BY ts, id"
        " ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS a FROM t WHERE qty > 300",
        id="after-where",
    ),
    pytest.param(
        "SELECT id, symbol, venue, SUM(qty) OVER (PARTITION BY symbol, venue"
        " ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s,"
        " ROW_NUMBER() OVER (PARTITION BY symbol, venue) AS rn FROM t",
        "SELECT id, symbol, venue, (SUM(qty) OVER (PARTITION BY symbol, venue ORDER BY id"
        " ROWS BETWEEN 1 PRECEDING AND CURRENT ROW))::BIGINT AS s,"
        " row_number() OVER (PARTITION BY symbol, venue ORDER BY id) AS rn FROM t",
        id="arrival-order-two-keys",
    ),
    pytest.param(
        f"SELECT id, symbol, price - LAG(price, 1, price) OVER ({W}) AS change,"
        f" AVG(price) OVER ({W} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) * 2 AS a2"
        " FROM t",
        "SELECT id, symbol, price - lag(price, 1, price) OVER w AS change,"
        " AVG(price) OVER (w ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) * 2 AS a2"
        f" FROM t WINDOW w AS ({DW})",
        id="window-functions-in-expressions",
    ),
]


@pytest.mark.parametrize(("sql", "duck"), CASES)
def test_rows_functions(sql: str, duck: str, table: pa.Table) -> None:
    check_differential(sql, table, duck)
