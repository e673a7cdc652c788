"""Every aggregate against DuckDB, per symbol and tumbling window, at batch
sizes 1, 7 and 10,000 (jittered event times, allowed lateness above the jitter
so no record is late)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pyarrow as pa
import pytest

import flowsql

from .data import trades
from .harness import (
    BATCH_SIZES,
    assert_same_across_batch_sizes,
    canonical,
    check_differential,
    run_duckdb,
    run_engine,
    run_flowsql,
)
from .queries import AGGREGATES, LATENESS, select_list, tumbling_duck


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(160)


@pytest.mark.parametrize("family", sorted(AGGREGATES))
def test_tumbling_aggregates_match_duckdb(family: str, table: pa.Table) -> None:
    aggs = AGGREGATES[family]
    sql = (
        f"SELECT symbol, _window_start, _window_end, {select_list(aggs, 'flow')}"
        f" FROM t GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND) {LATENESS}"
    )
    check_differential(sql, table, tumbling_duck(select_list(aggs, "duck"), 1000))


def test_no_record_is_late_with_lateness_above_jitter(table: pa.Table) -> None:
    sql = f"SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol WINDOW TUMBLING(ts, 1s) {LATENESS}"
    for size in BATCH_SIZES:
        rows, engine = run_engine(sql, table, size)
        assert engine.metrics.late_records == 0
        assert sum(r["n"] for r in rows) == table.num_rows


def test_global_window_without_keys(table: pa.Table) -> None:
    aggs = AGGREGATES["counts"][:3] + AGGREGATES["extremes"][-2:] + AGGREGATES["first_last"][:2]
    sql = (
        f"SELECT _window_start, _window_end, {select_list(aggs, 'flow')}"
        f" FROM t WINDOW TUMBLING(ts, 2s) {LATENESS}"
    )
    check_differential(sql, table, tumbling_duck(select_list(aggs, "duck"), 2000, keys=""))


def test_several_keys_and_expression_key(table: pa.Table) -> None:
    sql = (
        "SELECT symbol, venue, qty % 3 AS bucket, _window_start, COUNT(*) AS n, SUM(amount) AS s"
        f" FROM t GROUP BY symbol, venue, qty % 3 WINDOW TUMBLING(ts, 1s) {LATENESS}"
    )
    duck = (
        "SELECT symbol, venue, qty % 3 AS bucket, ts // 1000 * 1000 AS _window_start,"
        " COUNT(*) AS n, SUM(amount) AS s FROM t GROUP BY ALL"
    )
    check_differential(sql, table, duck)


def test_decimal_avg_is_exact_and_rounded_half_away_from_zero(table: pa.Table) -> None:
    """AVG(DECIMAL(10,2)) is DECIMAL with scale 6, rounded half away from zero
    (DuckDB gives a DOUBLE, so the expected value comes from its exact SUM/COUNT)."""
    sql = (
        "SELECT symbol, _window_start, AVG(amount) AS a, SUM(amount) AS s FROM t"
        f" GROUP BY symbol WINDOW TUMBLING(ts, 1s) {LATENESS}"
    )
    duck = tumbling_duck("SUM(amount) AS s, COUNT(amount) AS n", 1000)
    want = []
    for r in run_duckdb(duck, {"t": table}):
        avg = None
        if r["n"]:
            with localcontext() as ctx:
                ctx.prec = 60
                avg = (r["s"] / r["n"]).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
        want.append({"symbol": r["symbol"], "_window_start": r["_window_start"], "a": avg})
    results = {}
    for size in BATCH_SIZES:
        rows = run_flowsql(sql, table, size)
        assert all(isinstance(r["a"], Decimal | None) for r in rows)
        got = [{k: r[k] for k in ("symbol", "_window_start", "a")} for r in rows]
        assert canonical(got) == canonical(want), f"batch size {size}"
        results[size] = rows
    assert_same_across_batch_sizes(results)


def test_decimal_sum_keeps_its_scale_and_type(table: pa.Table) -> None:
    sql = "SELECT symbol, SUM(amount) AS s, MIN(amount) AS lo FROM t GROUP BY symbol EMIT FINAL"
    for size in BATCH_SIZES:
        out = flowsql.query(sql, {"t": table}, batch_size=size)
        assert pa.types.is_decimal(out.schema.field("s").type)
        assert out.schema.field("s").type.scale == 2
        assert out.schema.field("lo").type == pa.decimal128(10, 2)


def test_approx_count_distinct_within_tolerance() -> None:
    """APPROX_COUNT_DISTINCT is within 5% (+1) of the exact distinct count."""
    table = trades(1_200, seed=5)
    sql = (
        "SELECT _window_start, APPROX_COUNT_DISTINCT(qty) AS a, APPROX_COUNT_DISTINCT(venue) AS v"
        f" FROM t WINDOW TUMBLING(ts, 5s) {LATENESS}"
    )
    exact = {
        r["_window_start"]: r
        for r in run_duckdb(
            tumbling_duck("COUNT(DISTINCT qty) AS a, COUNT(DISTINCT venue) AS v", 5000, keys=""),
            {"t": table},
        )
    }
    results = {}
    for size in (7, 10_000):
        rows = run_flowsql(sql, table, size)
        assert {r["_window_start"] for r in rows} == set(exact)
        for r in rows:
            want = exact[r["_window_start"]]
            for col in ("a", "v"):
                assert isinstance(r[col], int)
                assert math.fabs(r[col] - want[col]) <= 0.05 * want[col] + 1, (r, want)
        results[size] = rows
    assert_same_across_batch_sizes(results)
