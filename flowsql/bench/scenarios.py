"""The benchmark scenarios: the reference engine's suite, with the same SQL.

Each scenario names the generated data it reads (``flowsql.connectors.generator``
kinds), the flowsql SQL, the equivalent batch SQL DuckDB runs over the same
Arrow table (registered as ``t``), and the numpy ceiling kernel
(:mod:`flowsql.bench.ceiling`) doing the same aggregation on pre-encoded arrays.

Row counts are compared between engines before any time is reported. Two
counts exist per run:

- ``rows``: output rows. Streaming runners fed the same micro-batches must agree
  exactly (EMIT CHANGES emits once per group per batch, so the count depends on
  the batch boundaries).
- ``groups``: the rows a batch engine produces for the same query: equal to
  ``rows`` for EMIT FINAL queries and filters; for EMIT CHANGES queries the
  number of distinct groups (key, or key and window). DuckDB is checked on it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The reference engine's published figures (tumbling window + GROUP BY).
REFERENCE_V1_PER_CORE = 23_700.0  # single-threaded job server
REFERENCE_V2_8_PARTITIONS = 191_000.0  # 8 partitions on 8 cores
REFERENCE_V2_PER_CORE = REFERENCE_V2_8_PARTITIONS / 8
REFERENCE_DIRECT = (500_000.0, 1_600_000.0)  # SQL engine called directly, range

_COUNT_AVG = "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price FROM trades GROUP BY symbol"


@dataclass(frozen=True)
class Scenario:
    """One benchmark query.

    Args:
        name: short id, e.g. ``3a_tumbling``.
        kind: generator kind the query reads (its FROM name too).
        sql: the flowsql query.
        duckdb_sql: the equivalent batch query over table ``t``.
        ceiling: name of the kernel in :data:`flowsql.bench.ceiling.KERNELS`.
        changes: True for EMIT CHANGES (``groups`` differs from ``rows``).
        summary: one line for the docs and the table.
    """

    name: str
    kind: str
    sql: str
    duckdb_sql: str
    ceiling: str
    changes: bool = False
    summary: str = ""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "0_select",
        "orders",
        "SELECT order_id, customer_id, total_amount FROM orders WHERE total_amount > 100",
        "SELECT order_id, customer_id, total_amount FROM t WHERE total_amount > 100",
        "select",
        summary="filter + projection",
    ),
    Scenario(
        "1_rows_window",
        "market_data",
        "SELECT symbol, price, AVG(price) OVER (ROWS WINDOW BUFFER 100 ROWS"
        " PARTITION BY symbol ORDER BY timestamp) AS moving_avg FROM market_data",
        "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY timestamp"
        " ROWS BETWEEN 99 PRECEDING AND CURRENT ROW) AS moving_avg FROM t",
        "rows_window",
        summary="moving average over the last 100 rows per symbol",
    ),
    Scenario(
        "2_group_by",
        "trades",
        _COUNT_AVG,
        "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price FROM t GROUP BY symbol",
        "group_by_changes",
        changes=True,
        summary="running count + avg per symbol, EMIT CHANGES",
    ),
    Scenario(
        "3a_tumbling",
        "trades",
        _COUNT_AVG + " WINDOW TUMBLING(1s)",
        "SELECT symbol, timestamp // 1000 AS w, COUNT(*) AS count, AVG(price) AS avg_price"
        " FROM t GROUP BY symbol, w",
        "tumbling",
        summary="1 s tumbling count + avg per symbol, EMIT FINAL",
    ),
    Scenario(
        "3b_emit_changes",
        "trades",
        _COUNT_AVG + " WINDOW TUMBLING(1s) EMIT CHANGES",
        "SELECT symbol, timestamp // 1000 AS w, COUNT(*) AS count, AVG(price) AS avg_price"
        " FROM t GROUP BY symbol, w",
        "tumbling_changes",
        changes=True,
        summary="3a with EMIT CHANGES",
    ),
    Scenario(
        "4_sliding",
        "trades",
        _COUNT_AVG + " WINDOW SLIDING(10s, 1s)",
        "SELECT symbol, w, COUNT(*) AS count, AVG(price) AS avg_price FROM ("
        " SELECT symbol, price, UNNEST(RANGE(timestamp // 1000 - 9, timestamp // 1000 + 1))"
        " AS w FROM t) GROUP BY symbol, w",
        "sliding",
        summary="10 s windows every 1 s, count + avg per symbol",
    ),
    Scenario(
        "5_session",
        "trades",
        _COUNT_AVG + " WINDOW SESSION(5s)",
        "WITH marked AS (SELECT symbol, price, timestamp, CASE WHEN timestamp - LAG(timestamp)"
        " OVER (PARTITION BY symbol ORDER BY timestamp) < 5000 THEN 0 ELSE 1 END AS brk FROM t),"
        " numbered AS (SELECT *, SUM(brk) OVER (PARTITION BY symbol ORDER BY timestamp"
        " ROWS UNBOUNDED PRECEDING) AS sid FROM marked)"
        " SELECT symbol, sid, COUNT(*) AS count, AVG(price) AS avg_price FROM numbered"
        " GROUP BY symbol, sid",
        "session",
        summary="sessions per symbol with a 5 s gap",
    ),
    Scenario(
        "6_1brc",
        "readings",
        "SELECT station, MIN(temp) AS min_temp, AVG(temp) AS avg_temp, MAX(temp) AS max_temp"
        " FROM readings GROUP BY station EMIT FINAL",
        "SELECT station, MIN(temp) AS min_temp, AVG(temp) AS avg_temp, MAX(temp) AS max_temp"
        " FROM t GROUP BY station",
        "min_avg_max",
        summary="one billion rows challenge: min/avg/max per station (413)",
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}

#: The workload shared with the peer engines (Quix Streams, Bytewax): a filter,
#: then a 1 s tumbling count + avg per key.
PEER_SCENARIO = Scenario(
    "peers_filter_tumbling",
    "trades",
    "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price FROM trades"
    " WHERE quantity > 100 GROUP BY symbol WINDOW TUMBLING(1s)",
    "SELECT symbol, timestamp // 1000 AS w, COUNT(*) AS count, AVG(price) AS avg_price"
    " FROM t WHERE quantity > 100 GROUP BY symbol, w",
    "tumbling_filtered",
    summary="filter quantity > 100, then 1 s tumbling count + avg per symbol",
)
#: The peers' filter threshold (``quantity > PEER_MIN_QUANTITY``).
PEER_MIN_QUANTITY = 100


def select(names: str | list[str] | None) -> list[Scenario]:
    """Scenarios by name (comma-separated or a list; prefixes like ``3a`` work);
    all of them for None/empty. Raises ``KeyError`` naming the unknown ones."""
    if not names:
        return list(SCENARIOS)
    wanted = names.split(",") if isinstance(names, str) else list(names)
    out: list[Scenario] = []
    unknown: list[str] = []
    for raw in (w.strip() for w in wanted):
        if not raw:
            continue
        match = [s for s in SCENARIOS if s.name == raw or s.name.split("_")[0] == raw]
        if not match:
            unknown.append(raw)
        out += [s for s in match if s not in out]
    if unknown:
        raise KeyError(", ".join(unknown))
    return out
