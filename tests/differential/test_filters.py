"""WHERE filters and scalar functions against DuckDB, at batch sizes 1, 7 and
10,000. Filters and projections keep arrival order, so rows are compared in
order (DuckDB: ORDER BY id).

Event times are int64 epoch ms: DuckDB sees them through ``epoch_ms(ts)``.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

import flowsql

from .data import trades
from .harness import check_differential

#: (flowsql WHERE, DuckDB WHERE or None when the same text works)
WHERE_CASES = [
    ("price > 100 AND qty < 500", None),
    ("symbol IN ('AAPL', 'MSFT') OR venue NOT IN ('XNAS', 'IEX')", None),
    ("price BETWEEN 50 AND 150 AND qty NOT BETWEEN 100 AND 900", None),
    ("symbol LIKE 'A%' OR venue LIKE '%a_' OR symbol NOT LIKE '%S%'", None),
    ("symbol IS NULL OR price IS NULL OR amount IS NULL", None),
    ("NOT (price > 100) AND qty IS NOT NULL", None),
    ("CASE WHEN qty > 500 THEN price ELSE -price END > 100", None),
    ("COALESCE(symbol, 'NONE') = 'NONE' OR NULLIF(qty % 3, 0) IS NULL", None),
    ("ABS(price - 250) < 50 AND FLOOR(price) <> CEIL(price)", None),
    ("UPPER(TRIM(venue)) = 'ARCA' AND LENGTH(symbol) = 4", None),
    ("SUBSTRING(symbol, 2, 2) = 'SF' OR CONCAT(symbol, venue) LIKE '%XN%'", None),
    (
        "EXTRACT(SECOND FROM ts) % 2 = 0 AND EXTRACT(MILLISECOND FROM ts) < 500",
        "second(epoch_ms(ts)) % 2 = 0 AND millisecond(epoch_ms(ts)) % 1000 < 500",
    ),
    (
        "JSON_VALUE(meta, '$.side') = 'buy' AND CAST(JSON_VALUE(meta, '$.lots[0]') AS BIGINT) > 2",
        "json_extract_string(meta, '$.side') = 'buy'"
        " AND CAST(json_extract_string(meta, '$.lots[0]') AS BIGINT) > 2",
    ),
    ("amount > 10000.50 AND amount * 2 < 60000", None),
    ("CAST(price AS BIGINT) % 5 = 0", None),
    ("qty / 70 = 5 OR (qty - 500) / 90 = -3", "qty // 70 = 5 OR (qty - 500) // 90 = -3"),
    ("(price > 100) = (qty > 500)", None),
    ("(price > 250) IS TRUE OR (qty < 100) IS FALSE AND symbol = 'AAPL'", None),
    ("REGEXP_REPLACE(symbol, '[AEIOU]', '') IN ('MSFT', 'PPL', 'MZN')", None),
    ("SPLIT_PART(TRIM(venue), 'a', 2) = 'rc' OR symbol || venue = 'AAPLIEX'", None),
    ("price > qty / 3.0 AND amount < price * 100", None),
    ("_timestamp % 1000 < 300", "ts % 1000 < 300"),
]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(120, seed=23)


@pytest.mark.parametrize(("where", "duck_where"), WHERE_CASES)
def test_where(where: str, duck_where: str | None, table: pa.Table) -> None:
    sql = f"SELECT id, symbol, price, qty FROM t WHERE {where}"
    duck = f"SELECT id, symbol, price, qty FROM t WHERE {duck_where or where} ORDER BY id"
    results = check_differential(sql, table, duck, ordered=True)
    assert 0 < len(results[10_000]) < table.num_rows, "the filter should keep some rows, not all"


#: SELECT lists of scalar functions: (flowsql, DuckDB)
PROJECTIONS = {
    "arithmetic": (
        "price * 2 + qty AS a, qty % 7 AS m, -price AS n, qty / 7 AS d, (qty - 500) / 7 AS d2,"
        " price / 4 AS f, ABS(price - 250) AS ab, ROUND(price) AS r0, FLOOR(price) AS fl,"
        " CEIL(price) AS ce, CAST(price AS BIGINT) AS ci, CAST(qty AS DOUBLE) / 3 AS cd,"
        " price / qty AS ratio, qty * qty - 3 AS sq",
        "price * 2 + qty AS a, qty % 7 AS m, -price AS n, qty // 7 AS d, (qty - 500) // 7 AS d2,"
        " price / 4 AS f, ABS(price - 250) AS ab, ROUND(price) AS r0, FLOOR(price) AS fl,"
        " CEIL(price) AS ce, CAST(price AS BIGINT) AS ci, CAST(qty AS DOUBLE) / 3 AS cd,"
        " price / qty AS ratio, qty * qty - 3 AS sq",
    ),
    "strings": (
        "UPPER(venue) AS u, LOWER(venue) AS l, LENGTH(venue) AS n, SUBSTRING(symbol, 2, 2) AS s2,"
        " SUBSTRING(venue, 3) AS s3, CONCAT(symbol, '-', venue) AS c, symbol || '/' || venue AS p,"
        " TRIM(venue) AS t, LTRIM(venue) AS lt, RTRIM(venue) AS rt, REPLACE(venue, 'a', 'A') AS r,"
        " SPLIT_PART(venue, 'a', 2) AS sp, SPLIT_PART(venue, 'a', 9) AS sp9,"
        " REGEXP_REPLACE(symbol, '[AEIOU]', '_') AS re1,"
        " REGEXP_REPLACE(symbol, '[AEIOU]', '_', 'g') AS reg, CAST(qty AS VARCHAR) AS q",
        "upper(venue) AS u, lower(venue) AS l, length(venue) AS n, substring(symbol, 2, 2) AS s2,"
        " substring(venue, 3) AS s3, concat(symbol, '-', venue) AS c, symbol || '/' || venue AS p,"
        " trim(venue) AS t, ltrim(venue) AS lt, rtrim(venue) AS rt, replace(venue, 'a', 'A') AS r,"
        " split_part(venue, 'a', 2) AS sp, split_part(venue, 'a', 9) AS sp9,"
        " regexp_replace(symbol, '[AEIOU]', '_') AS re1,"
        " regexp_replace(symbol, '[AEIOU]', '_', 'g') AS reg, CAST(qty AS VARCHAR) AS q",
    ),
    "conditional": (
        "COALESCE(symbol, venue) AS co, NULLIF(qty % 3, 0) AS ni,"
        " CASE WHEN price > 300 THEN 'high' WHEN price > 100 THEN 'mid' ELSE 'low' END AS band,"
        " CASE symbol WHEN 'AAPL' THEN 1 WHEN 'MSFT' THEN 2 END AS code,"
        " symbol IN ('AAPL', 'GOOG') AS isin, price BETWEEN 100 AND 200 AS btw,"
        " symbol LIKE '%A%' AS lk, symbol IS NULL AS isn, NOT (qty > 500) AS nq,"
        " price > 100 AND symbol = 'AAPL' AS a, price > 100 OR symbol = 'AAPL' AS o",
        "COALESCE(symbol, venue) AS co, NULLIF(qty % 3, 0) AS ni,"
        " CASE WHEN price > 300 THEN 'high' WHEN price > 100 THEN 'mid' ELSE 'low' END AS band,"
        " CASE symbol WHEN 'AAPL' THEN 1 WHEN 'MSFT' THEN 2 END AS code,"
        " symbol IN ('AAPL', 'GOOG') AS isin, price BETWEEN 100 AND 200 AS btw,"
        " symbol LIKE '%A%' AS lk, symbol IS NULL AS isn, NOT (qty > 500) AS nq,"
        " price > 100 AND symbol = 'AAPL' AS a, price > 100 OR symbol = 'AAPL' AS o",
    ),
    "time": (
        "EXTRACT(YEAR FROM ts) AS y, EXTRACT(MONTH FROM ts) AS mo, EXTRACT(DAY FROM ts) AS d,"
        " EXTRACT(HOUR FROM ts) AS h, EXTRACT(MINUTE FROM ts) AS mi, EXTRACT(SECOND FROM ts) AS s,"
        " EXTRACT(MILLISECOND FROM ts) AS ms, EXTRACT(DOW FROM ts) AS dow,"
        " EXTRACT(DOY FROM ts) AS doy, EXTRACT(EPOCH FROM ts) AS ep,"
        " DATE_TRUNC('second', ts) AS ts_s, DATE_TRUNC('minute', ts) AS ts_m,"
        " DATE_TRUNC('hour', ts) AS ts_h, TO_TIMESTAMP(ts) AS tt, FROM_UNIXTIME(ts / 1000) AS fu",
        "year(x) AS y, month(x) AS mo, day(x) AS d, hour(x) AS h, minute(x) AS mi,"
        " second(x) AS s, millisecond(x) % 1000 AS ms, dayofweek(x) AS dow, dayofyear(x) AS doy,"
        " ts // 1000 AS ep, epoch_ms(date_trunc('second', x)) AS ts_s,"
        " epoch_ms(date_trunc('minute', x)) AS ts_m, epoch_ms(date_trunc('hour', x)) AS ts_h,"
        " x AS tt, make_timestamp(ts // 1000 * 1000000) AS fu",
    ),
    "decimals": (
        "amount * 3 AS m3, amount + 1.25 AS p, amount - amount AS z, amount * amount AS sq,"
        " -amount AS n, ABS(amount) AS ab, ROUND(amount, 1) AS r1, ROUND(amount) AS r0,"
        " FLOOR(amount) AS fl, CEIL(amount) AS ce, CAST(amount AS DOUBLE) AS d,"
        " CAST(price AS DECIMAL(12, 3)) AS pd, amount > 1000.005 AS gt,"
        " CAST(amount AS BIGINT) AS ai, amount * 0.5 AS half",
        "amount * 3 AS m3, amount + 1.25 AS p, amount - amount AS z, amount * amount AS sq,"
        " -amount AS n, ABS(amount) AS ab, ROUND(amount, 1) AS r1, ROUND(amount) AS r0,"
        " FLOOR(amount) AS fl, CEIL(amount) AS ce, CAST(amount AS DOUBLE) AS d,"
        " CAST(price AS DECIMAL(12, 3)) AS pd, amount > 1000.005 AS gt,"
        " CAST(amount AS BIGINT) AS ai, amount * 0.5 AS half",
    ),
    "json": (
        "JSON_VALUE(meta, '$.side') AS side, JSON_VALUE(meta, '$.lots[1]') AS lot1,"
        " JSON_VALUE(meta, '$.missing') AS miss, JSON_EXTRACT(meta, '$.lots') AS lots",
        "json_extract_string(meta, '$.side') AS side, json_extract_string(meta, '$.lots[1]') AS lot1,"
        " json_extract_string(meta, '$.missing') AS miss,"
        " CAST(json_extract(meta, '$.lots') AS VARCHAR) AS lots",
    ),
}


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_scalar_functions(name: str, table: pa.Table) -> None:
    flow, duck = PROJECTIONS[name]
    sql = f"SELECT id, {flow} FROM t"
    duck_sql = f"SELECT id, {duck} FROM (SELECT *, epoch_ms(ts) AS x FROM t) ORDER BY id"
    check_differential(sql, table, duck_sql, ordered=True)


def test_where_and_projection_with_system_columns(table: pa.Table) -> None:
    sql = "SELECT id, _timestamp AS et, _timestamp - ts AS zero FROM t WHERE qty > 800"
    duck = "SELECT id, ts AS et, 0::BIGINT AS zero FROM t WHERE qty > 800 ORDER BY id"
    check_differential(sql, table, duck, ordered=True)


def test_select_star_leaves_out_system_columns(table: pa.Table) -> None:
    sql = "SELECT * FROM t WHERE price < 30"
    duck = "SELECT * FROM t WHERE price < 30 ORDER BY id"
    check_differential(sql, table, duck, ordered=True)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id, symbol, price * 2 AS p2 FROM t WHERE price > 1000000",
        "SELECT symbol, COUNT(*) AS n FROM t WHERE price > 1000000 GROUP BY symbol",
    ],
)
def test_empty_result_keeps_the_output_columns(sql: str, table: pa.Table) -> None:
    """A query that emits no row still returns its columns (as DuckDB does)."""
    want = duckdb_columns(sql, table)
    for size in (1, 10_000):
        got = flowsql.query(sql, {"t": table}, batch_size=size)
        assert got.num_rows == 0
        assert got.column_names == want, f"batch size {size}"


def duckdb_columns(sql: str, table: pa.Table) -> list[str]:
    con = duckdb.connect()
    try:
        con.register("t", table)
        return list(con.sql(sql).columns)
    finally:
        con.close()


def test_try_cast_gives_null_where_cast_fails(table: pa.Table) -> None:
    """TRY_CAST is accepted by the parser: it must give NULL for a value that
    does not convert (DuckDB, Flink, Spark), not fail like CAST."""
    text = "CASE WHEN qty % 2 = 0 THEN CAST(qty AS VARCHAR) ELSE venue END"
    sql = f"SELECT id, TRY_CAST({text} AS BIGINT) AS n FROM t"
    duck = f"SELECT id, TRY_CAST({text} AS BIGINT) AS n FROM t ORDER BY id"
    check_differential(sql, table, duck, ordered=True)
