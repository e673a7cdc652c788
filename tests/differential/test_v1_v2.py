"""V1 (``SimpleJobProcessor``) and V2 (``PartitionedJobCoordinator`` at 1, 2, 3
and 8 partitions) give the same rows for the differential query set: every
row (EMIT CHANGES changelogs included), in V1's order, with the same values to
the bit, and the same late counts."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.processor import SimpleJobProcessor
from flowsql.sql import parse_one

from .data import out_of_order, sorted_by_time, trades
from .harness import assert_rows, run_processor
from .queries import AGGREGATES, LATENESS, select_list
from .test_filters import PROJECTIONS
from .test_windows import MIXED

pytestmark = pytest.mark.slow

PARTITIONS = (1, 2, 3, 8)
BATCH = 40
TUMBLING = "WINDOW TUMBLING(ts, 1s)"
ALL_AGGS = [a for family in AGGREGATES.values() for a in family]


#: name -> (sql, data set, EMIT CHANGES keys or None)
QUERIES: dict[str, tuple[str, str, list[str] | None]] = {
    "tumbling-all-aggregates": (
        f"SELECT symbol, _window_start, _window_end, {select_list(ALL_AGGS, 'flow')}"
        f" FROM t GROUP BY symbol {TUMBLING} {LATENESS}",
        "jitter",
        None,
    ),
    "sliding": (
        f"SELECT symbol, _window_start, {select_list(MIXED, 'flow')} FROM t GROUP BY symbol"
        f" WINDOW SLIDING(ts, 1s, 250ms) {LATENESS}",
        "jitter",
        None,
    ),
    "session": (
        f"SELECT symbol, _window_start, _window_end, {select_list(MIXED, 'flow')} FROM t"
        f" GROUP BY symbol WINDOW SESSION(ts, 150ms) {LATENESS}",
        "jitter",
        None,
    ),
    "global-window": (
        f"SELECT _window_start, COUNT(*) AS n, SUM(amount) AS s, MAX(venue) AS v FROM t"
        f" WINDOW TUMBLING(ts, 2s) {LATENESS}",
        "jitter",
        None,
    ),
    "having": (
        "SELECT symbol, _window_start, COUNT(*) AS n, AVG(price) AS p FROM t GROUP BY symbol"
        f" {TUMBLING} HAVING COUNT(*) > 3 AND AVG(price) > 200 {LATENESS}",
        "jitter",
        None,
    ),
    "group-changes": (
        "SELECT symbol, COUNT(*) AS n, SUM(amount) AS s, AVG(price) AS p, LAST(price) AS l"
        " FROM t GROUP BY symbol",
        "jitter",
        ["symbol"],
    ),
    "group-two-keys-final": (
        "SELECT symbol, venue, COUNT(*) AS n, STDDEV_POP(price) AS sd FROM t"
        " GROUP BY symbol, venue EMIT FINAL",
        "jitter",
        None,
    ),
    "global-changes": (
        "SELECT COUNT(*) AS n, SUM(qty) AS q, MIN(amount) AS lo FROM t",
        "jitter",
        [],
    ),
    "filter": (
        "SELECT id, symbol, price FROM t WHERE price BETWEEN 50 AND 150 AND symbol LIKE '%A%'",
        "jitter",
        None,
    ),
    "scalar-functions": (
        f"SELECT id, {PROJECTIONS['strings'][0]}, {PROJECTIONS['time'][0]} FROM t",
        "jitter",
        None,
    ),
    "rows-partitioned": (
        "SELECT id, symbol, AVG(price) OVER (PARTITION BY symbol ORDER BY ts"
        " ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS a,"
        " LAG(qty) OVER (PARTITION BY symbol ORDER BY ts) AS prev,"
        " LEAD(qty) OVER (PARTITION BY symbol ORDER BY ts) AS nxt,"
        " RANK() OVER (PARTITION BY symbol ORDER BY ts) AS rk FROM t",
        "sorted",
        None,
    ),
    "rows-global": (
        "SELECT id, ROW_NUMBER() OVER (ORDER BY ts) AS rn,"
        " SUM(qty) OVER (ORDER BY ts ROWS WINDOW BUFFER 3 ROWS) AS s FROM t",
        "sorted",
        None,
    ),
    "distinct": ("SELECT DISTINCT symbol, venue FROM t", "jitter", None),
    "limit": ("SELECT id, symbol FROM t WHERE qty > 500 LIMIT 17", "jitter", None),
    "order-by": ("SELECT id, price FROM t ORDER BY price DESC, id LIMIT 12", "jitter", None),
    "late": (
        "SELECT symbol, _window_start, COUNT(*) AS n, SUM(qty) AS q FROM t GROUP BY symbol"
        " WINDOW SLIDING(ts, 1s, 500ms) WITH ('watermark.allowed_lateness' = '200ms')",
        "late",
        None,
    ),
    "late-session": (
        "SELECT symbol, _window_start, _window_end, COUNT(*) AS n FROM t GROUP BY symbol"
        " WINDOW SESSION(ts, 100ms)",
        "late",
        None,
    ),
}


@pytest.fixture(scope="module")
def data() -> dict[str, pa.Table]:
    return {
        "jitter": trades(300, seed=57),
        "sorted": sorted_by_time(trades(300, seed=58, jitter=0, step=6)),
        "late": out_of_order(300, seed=59),
    }


def run(processor: Any, table: pa.Table) -> list[dict[str, Any]]:
    return run_processor(processor, table, BATCH)


class V1Results(dict[str, tuple[list[dict[str, Any]], int]]):
    """V1's rows and late count per query, computed on first use."""

    def __init__(self, data: dict[str, pa.Table]) -> None:
        super().__init__()
        self.data = data

    def __missing__(self, name: str) -> tuple[list[dict[str, Any]], int]:
        sql, data, _ = QUERIES[name]
        v1 = SimpleJobProcessor(parse_one(sql))
        rows = run(v1, self.data[data])
        self[name] = (rows, v1.metrics.late_records)
        return self[name]


@pytest.fixture(scope="module")
def v1(data: dict[str, pa.Table]) -> V1Results:
    return V1Results(data)


@pytest.mark.parametrize("partitions", PARTITIONS)
@pytest.mark.parametrize("name", list(QUERIES))
def test_v2_equals_v1(name: str, partitions: int, data: dict[str, pa.Table], v1: V1Results) -> None:
    sql, data_name, _ = QUERIES[name]
    want, late = v1[name]
    assert want, f"{name}: V1 gave no rows"
    v2 = PartitionedJobCoordinator(parse_one(sql), num_partitions=partitions)
    got = run(v2, data[data_name])
    # row for row: each group is aggregated by one partition over the same rows
    # in the same order, and the coordinator merges outputs into V1's order
    assert_rows(got, want, what=f"{name} V2({partitions})", rel=0.0, abs_=0.0)
    assert v2.metrics.late_records == late
