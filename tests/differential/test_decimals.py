"""Exact decimals end to end: sums, averages, arithmetic and decimal group keys
match Python's ``decimal`` (or DuckDB's exact DECIMAL) at batch sizes 1, 7
and 10,000, where float arithmetic would not."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

import numpy as np
import pyarrow as pa
import pytest

import flowsql

from .data import T0, trades
from .harness import BATCH_SIZES, check_differential, run_flowsql


def _cents_table(rows: int = 150, seed: int = 8) -> pa.Table:
    """DECIMAL(18, 2) amounts in the millions with cents (floats lose the cents)."""
    rng = np.random.default_rng(seed)
    cents = rng.integers(-(10**11), 10**11, rows)
    return pa.table(
        {
            "k": pa.array([f"k{i % 3}" for i in range(rows)]),
            "d": pa.array([Decimal(int(c)).scaleb(-2) for c in cents], pa.decimal128(18, 2)),
            "ts": pa.array(T0 + np.arange(rows, dtype=np.int64) * 10),
        }
    )


def test_sum_and_avg_of_large_decimals_are_exact() -> None:
    table = _cents_table()
    values: dict[str, list[Decimal]] = {}
    for row in table.to_pylist():
        values.setdefault(row["k"], []).append(row["d"])
    with localcontext() as ctx:
        ctx.prec = 60
        want = {
            k: (
                sum(v, Decimal(0)),
                (sum(v, Decimal(0)) / len(v)).quantize(Decimal("1e-6"), ROUND_HALF_UP),
            )
            for k, v in values.items()
        }
    float_sum = {k: sum(float(x) for x in v) for k, v in values.items()}
    assert any(Decimal(repr(float_sum[k])) != want[k][0] for k in want), "floats should be off"
    sql = "SELECT k, SUM(d) AS s, AVG(d) AS a FROM t GROUP BY k EMIT FINAL"
    for size in BATCH_SIZES:
        got = {r["k"]: (r["s"], r["a"]) for r in run_flowsql(sql, table, size)}
        assert got == want, f"batch size {size}"


def test_decimal_literal_arithmetic() -> None:
    table = pa.table({"ts": [T0]})
    out = flowsql.query(
        "SELECT 123.45 * 67.89 AS m, 0.1 + 0.2 AS s, 1.10 - 0.10 AS d FROM t", {"t": table}
    )
    row = out.to_pylist()[0]
    assert row == {"m": Decimal("8381.0205"), "s": Decimal("0.3"), "d": Decimal("1.00")}
    assert pa.types.is_decimal(out.schema.field("m").type)


def test_repeated_tenths_sum_exactly() -> None:
    table = pa.table(
        {
            "x": pa.array([Decimal("0.10")] * 300, pa.decimal128(10, 2)),
            "ts": T0 + np.arange(300, dtype=np.int64),
        }
    )
    for size in BATCH_SIZES:
        rows = run_flowsql("SELECT SUM(x) AS s FROM t EMIT FINAL", table, size)
        assert rows == [{"s": Decimal("30.00")}], f"batch size {size}"


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(120, seed=41)


def test_decimal_group_key_and_arithmetic_match_duckdb(table: pa.Table) -> None:
    sql = (
        "SELECT CAST(amount AS DECIMAL(10, 0)) AS k, COUNT(*) AS n, SUM(amount * 2) AS s2,"
        " MIN(amount - 0.01) AS lo, MAX(amount + 1.005) AS hi FROM t GROUP BY 1 EMIT FINAL"
    )
    duck = (
        "SELECT CAST(amount AS DECIMAL(10, 0)) AS k, COUNT(*) AS n, SUM(amount * 2) AS s2,"
        " MIN(amount - 0.01) AS lo, MAX(amount + 1.005) AS hi FROM t GROUP BY ALL"
    )
    check_differential(sql, table, duck)


def test_windowed_decimal_sum_matches_python(table: pa.Table) -> None:
    sql = (
        "SELECT venue, _window_start, SUM(amount * qty) AS notional FROM t GROUP BY venue"
        " WINDOW TUMBLING(ts, 1s) WITH ('watermark.allowed_lateness' = '100ms')"
    )
    want: dict[tuple[str, int], Decimal | None] = {}
    for r in table.to_pylist():
        key = (r["venue"], r["ts"] // 1000 * 1000)
        want.setdefault(key, None)
        if r["amount"] is not None and r["qty"] is not None:
            want[key] = (want[key] or Decimal(0)) + r["amount"] * r["qty"]
    for size in BATCH_SIZES:
        got = {
            (r["venue"], r["_window_start"]): r["notional"] for r in run_flowsql(sql, table, size)
        }
        assert got == want, f"batch size {size}"
