"""NaN, infinities and signed zeros in aggregates and group keys against
DuckDB (which orders NaN above every number), at batch sizes 1, 3 and 100."""

from __future__ import annotations

import pyarrow as pa
import pytest

from .harness import check_differential

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.table(
        {
            "id": list(range(10)),
            "k": ["a", "a", "a", "b", "b", "c", "c", "d", "d", "e"],
            "x": [1.0, NAN, 3.0, -0.0, 0.0, INF, -INF, NAN, NAN, None],
            "ts": list(range(10)),
        }
    )


@pytest.mark.parametrize(
    "aggs",
    [
        "COUNT(x) AS n, COUNT(DISTINCT x) AS nd",
        "SUM(x) AS s, AVG(x) AS a",
        "MAX(x) AS hi",
        "MIN(x) AS lo",
    ],
)
def test_aggregates_of_special_floats(aggs: str, table: pa.Table) -> None:
    sql = f"SELECT k, {aggs} FROM t GROUP BY k EMIT FINAL"
    duck = f"SELECT k, {aggs} FROM t GROUP BY k"
    check_differential(sql, table, duck, batch_sizes=(1, 3, 100))


def test_special_floats_as_group_keys(table: pa.Table) -> None:
    sql = "SELECT x, COUNT(*) AS n FROM t GROUP BY x EMIT FINAL"
    duck = "SELECT x, COUNT(*) AS n FROM t GROUP BY x"
    check_differential(sql, table, duck, batch_sizes=(1, 3, 100))
