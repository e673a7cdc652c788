"""AggregateOp aggregates: hand-computed values, DuckDB differential tests, types,
decimals, multi-column and expression keys, snapshot / restore / split / merge."""

from __future__ import annotations

import decimal
import pickle
import random
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowsql.engine import Engine
from flowsql.errors import ExecutionError, PlanError
from flowsql.exec.aggregate import PRIOR_MAX, AggregateOp
from flowsql.exec.operator import OperatorContext
from flowsql.plan.expr import AggCall, Call, Col, Expr, Lit
from flowsql.plan.nodes import Aggregate, EmitMode, Scan, Statement, WindowSpec

BATCH_SIZES = (1, 7, 10_000)
GAP = 150


def data(n: int = 400, seed: int = 1) -> pa.Table:
    """In-order event times with ties, nullable columns, decimals with big values."""
    rnd = random.Random(seed)
    syms = ["AA", "B", "Ç", "b", None]
    t = 1_700_000_000_000
    cols: dict[str, list[Any]] = {k: [] for k in ("sym", "price", "qty", "amount", "_timestamp")}
    for _ in range(n):
        t += rnd.choice([0, 0, 13, 40, 170])
        cols["sym"].append(rnd.choice(syms))
        cols["price"].append(None if rnd.random() < 0.1 else round(rnd.uniform(-50, 500), 3))
        cols["qty"].append(None if rnd.random() < 0.1 else rnd.randint(-3, 9))
        big = rnd.choice([Decimal("0.01"), Decimal("123.45"), Decimal("-9876543210.99")])
        cols["amount"].append(None if rnd.random() < 0.1 else big * rnd.randint(-3, 3))
        cols["_timestamp"].append(t)
    return pa.table(
        {
            "sym": pa.array(cols["sym"], pa.string()),
            "price": pa.array(cols["price"], pa.float64()),
            "qty": pa.array(cols["qty"], pa.int64()),
            "amount": pa.array(cols["amount"], pa.decimal128(14, 2)),
            "_timestamp": pa.array(cols["_timestamp"], pa.int64()),
        }
    )


def agg(fn: str, col: str | None = None, distinct: bool = False) -> AggCall:
    return AggCall(fn, (Col(col),) if col else (), distinct=distinct)


ALL_AGGS: tuple[tuple[str, AggCall], ...] = (
    ("n", agg("count_star")),
    ("n_price", agg("count", "price")),
    ("nd_qty", agg("count", "qty", distinct=True)),
    ("acd_sym", agg("approx_count_distinct", "sym")),
    ("sum_qty", agg("sum", "qty")),
    ("sum_price", agg("sum", "price")),
    ("sum_amount", agg("sum", "amount")),
    ("avg_qty", agg("avg", "qty")),
    ("avg_price", agg("avg", "price")),
    ("avg_amount", agg("avg", "amount")),
    ("min_price", agg("min", "price")),
    ("max_qty", agg("max", "qty")),
    ("min_sym", agg("min", "sym")),
    ("max_amount", agg("max", "amount")),
    ("var_samp", agg("var_samp", "price")),
    ("var_pop", agg("var_pop", "qty")),
    ("sd_samp", agg("stddev_samp", "price")),
    ("sd_pop", agg("stddev_pop", "amount")),
    ("first_price", agg("first", "price")),
    ("last_qty", agg("last", "qty")),
    ("first_sym", agg("first", "sym")),
)

DUCK_AGGS = """
    count(*) AS n, count(price) AS n_price, count(DISTINCT qty) AS nd_qty,
    count(DISTINCT sym) AS acd_sym, sum(qty) AS sum_qty, sum(price) AS sum_price,
    sum(amount) AS sum_amount, avg(qty) AS avg_qty, avg(price) AS avg_price,
    count(amount) AS n_amount, min(price) AS min_price, max(qty) AS max_qty,
    min(sym) AS min_sym, max(amount) AS max_amount, var_samp(price) AS var_samp,
    var_pop(qty) AS var_pop, stddev_samp(price) AS sd_samp,
    stddev_pop(amount::DOUBLE) AS sd_pop,
    arg_min(price, ord) FILTER (WHERE price IS NOT NULL) AS first_price,
    arg_max(qty, ord) FILTER (WHERE qty IS NOT NULL) AS last_qty,
    arg_min(sym, ord) FILTER (WHERE sym IS NOT NULL) AS first_sym
"""


def plan(
    window: WindowSpec | None,
    aggs: tuple[tuple[str, AggCall], ...] = ALL_AGGS,
    *,
    keys: tuple[tuple[str, Expr], ...] = (("sym", Col("sym")),),
    emit: EmitMode = "final",
) -> Aggregate:
    return Aggregate(Scan("t"), keys, aggs, window=window, emit=emit)


def run(node: Aggregate, table: pa.Table, size: int) -> list[dict[str, Any]]:
    op = AggregateOp(node, OperatorContext())
    out: list[pa.RecordBatch] = []
    high = None
    for b in table.to_batches(max_chunksize=size):
        out += op.process(b)
        top = pc.max(b.column("_timestamp")).as_py()
        high = top if high is None else max(high, top)
        out += op.advance(high)
    out += op.flush()
    return [r for b in out for r in b.to_pylist()]


def duck(table: pa.Table, window: str) -> list[dict[str, Any]]:
    """Expected rows from DuckDB, in the operator's order."""
    t = table.append_column("ord", pa.array(np.arange(table.num_rows)))  # noqa: F841
    frames = {
        "none": "SELECT sym, {aggs}, max(_timestamp) AS _timestamp FROM t GROUP BY sym",
        "tumbling": """SELECT sym, ws AS _window_start, ws + 1000 AS _window_end, {aggs},
            ws + 999 AS _timestamp FROM (SELECT *, _timestamp // 1000 * 1000 AS ws FROM t)
            GROUP BY sym, ws""",
        "sliding": """SELECT sym, k * 400 AS _window_start, k * 400 + 1000 AS _window_end, {aggs},
            k * 400 + 999 AS _timestamp FROM (SELECT *, unnest(range((_timestamp - 1000) // 400 + 1,
            _timestamp // 400 + 1)) AS k FROM t) GROUP BY sym, k""",
        "session": f"""WITH o AS (SELECT *, CASE WHEN _timestamp - lag(_timestamp) OVER
            (PARTITION BY sym ORDER BY ord) < {GAP} THEN 0 ELSE 1 END AS brk FROM t),
            s AS (SELECT *, sum(brk) OVER (PARTITION BY sym ORDER BY ord) AS sid FROM o)
            SELECT sym, min(_timestamp) AS _window_start, max(_timestamp) + {GAP} AS _window_end,
            {{aggs}}, max(_timestamp) + {GAP - 1} AS _timestamp FROM s GROUP BY sym, sid""",
    }
    sql = frames[window].format(aggs=DUCK_AGGS)
    sort = "_window_end, _window_start, sym NULLS LAST" if window != "none" else "sym NULLS LAST"
    rel = duckdb.sql(f"SELECT * FROM ({sql}) ORDER BY {sort}")
    assert rel is not None
    rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    for r in rows:
        n_amount = r.pop("n_amount")
        r["avg_amount"] = _decimal_avg(r["sum_amount"], n_amount)
    return rows


def _decimal_avg(total: Decimal | None, count: int) -> Decimal | None:
    if not count or total is None:
        return None
    ctx = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)
    return ctx.divide(total, count).quantize(Decimal("0.000001"), context=ctx)


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(w) <= set(g)
        for k, v in w.items():
            if isinstance(v, float) and g[k] is not None:
                assert g[k] == pytest.approx(v, rel=1e-9, abs=1e-9), (k, g, w)
            else:
                assert g[k] == v, (k, g, w)


WINDOWS = {
    "none": None,
    "tumbling": WindowSpec("tumbling", size_ms=1000),
    "sliding": WindowSpec("sliding", size_ms=1000, advance_ms=400),
    "session": WindowSpec("session", gap_ms=GAP),
}


@pytest.mark.parametrize("window", list(WINDOWS))
def test_every_aggregate_matches_duckdb_at_every_batch_size(window: str) -> None:
    table = data()
    want = duck(table, window)
    results = [run(plan(WINDOWS[window]), table, size) for size in BATCH_SIZES]
    for got in results:
        assert_same(got, want)
    assert results[0] == results[1] == results[2], "bit-identical across batch sizes"


def test_hand_computed_values_and_nulls() -> None:
    table = pa.table(
        {
            "sym": ["a", "a", "a", None, None],
            "x": pa.array([2.0, None, 4.0, None, None]),
            "s": ["q", "b", None, None, None],
            "_timestamp": pa.array([5, 1, 5, 2, 3], pa.int64()),
        }
    )
    aggs = (
        ("n", agg("count_star")),
        ("cnt", agg("count", "x")),
        ("sum", agg("sum", "x")),
        ("avg", agg("avg", "x")),
        ("min", agg("min", "s")),
        ("max", agg("max", "x")),
        ("vs", agg("var_samp", "x")),
        ("vp", agg("var_pop", "x")),
        ("first", agg("first", "x")),
        ("last", agg("last", "x")),
        ("first_s", agg("first", "s")),
        ("cd", agg("count", "s", distinct=True)),
    )
    got = run(plan(None, aggs), table, 2)
    assert got == [
        {
            "sym": "a",
            "n": 3,
            "cnt": 2,
            "sum": 6.0,
            "avg": 3.0,
            "min": "b",
            "max": 4.0,
            "vs": 2.0,
            "vp": 1.0,
            "first": 2.0,  # ts 5 twice: the first arrival
            "last": 4.0,  # ts 5 twice: the last arrival
            "first_s": "b",  # ts 1
            "cd": 2,
            "_timestamp": 5,
        },
        {
            "sym": None,
            "n": 2,
            "cnt": 0,
            "sum": None,
            "avg": None,
            "min": None,
            "max": None,
            "vs": None,
            "vp": None,
            "first": None,
            "last": None,
            "first_s": None,
            "cd": 0,
            "_timestamp": 3,
        },
    ]


def test_output_types() -> None:
    table = pa.table(
        {
            "k": pa.array([1, 1], pa.int32()),
            "i": pa.array([1, 2], pa.int32()),
            "f": pa.array([1.5, 2.0], pa.float32()),
            "d": pa.array([Decimal("1.10"), Decimal("2.25")], pa.decimal128(5, 2)),
            "t": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2)], pa.timestamp("ms")),
            "day": pa.array([date(2024, 3, 1), date(2023, 1, 1)], pa.date32()),
            "b": pa.array([True, False]),
            "_timestamp": pa.array([1, 2], pa.int64()),
        }
    )
    aggs = (
        ("si", agg("sum", "i")),
        ("sf", agg("sum", "f")),
        ("sd", agg("sum", "d")),
        ("ai", agg("avg", "i")),
        ("ad", agg("avg", "d")),
        ("mt", agg("max", "t")),
        ("mday", agg("min", "day")),
        ("mb", agg("max", "b")),
        ("lt", agg("last", "t")),
        ("mf", agg("min", "f")),
        ("n", agg("count_star")),
    )
    (batch,) = AggregateOp(
        plan(None, aggs, keys=(("k", Col("k")),)), OperatorContext()
    ).flush() or [None]
    op = AggregateOp(plan(None, aggs, keys=(("k", Col("k")),)), OperatorContext())
    op.process(table.to_batches()[0])
    (batch,) = op.flush()
    types = dict(zip(batch.schema.names, batch.schema.types, strict=True))
    assert types == {
        "k": pa.int32(),
        "si": pa.int64(),
        "sf": pa.float64(),
        "sd": pa.decimal128(38, 2),
        "ai": pa.float64(),
        "ad": pa.decimal128(38, 6),
        "mt": pa.timestamp("ms"),
        "mday": pa.date32(),
        "mb": pa.bool_(),
        "lt": pa.timestamp("ms"),
        "mf": pa.float32(),
        "n": pa.int64(),
        "_timestamp": pa.int64(),
    }
    row = batch.to_pylist()[0]
    assert row["sd"] == Decimal("3.35") and row["ad"] == Decimal("1.675000")
    assert row["mt"] == datetime(2024, 1, 2) and row["mday"] == date(2023, 1, 1)
    assert row["mb"] is True and row["mf"] == 1.5


def test_decimal_sums_are_exact_beyond_64_bits() -> None:
    exact = decimal.Context(prec=60)
    big = Decimal("12345678901234567890.1234567891")  # unscaled value needs > 64 bits
    third = exact.divide(-big, 3).quantize(Decimal("1e-10"), context=exact)
    values = [big, third, exact.multiply(big, 2), Decimal("-0.0000000001")] * 50
    table = pa.table(
        {
            "k": ["x"] * len(values),
            "v": pa.array(values, pa.decimal128(38, 10)),
            "_timestamp": pa.array(np.arange(len(values)), pa.int64()),
        }
    )
    aggs = (("s", agg("sum", "v")), ("a", agg("avg", "v")))
    expected = Decimal(0)
    for v in values:
        expected = exact.add(expected, v)
    for size in (1, 7, 1000):
        (row,) = run(plan(None, aggs, keys=(("k", Col("k")),)), table, size)
        assert row["s"] == expected
        ctx = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)
        assert row["a"] == ctx.divide(expected, len(values)).quantize(Decimal("1e-10"), context=ctx)


def test_integer_sums_stay_exact_when_floats_would_round() -> None:
    values = [2**62, 1, -(2**62), 3, 2**53 + 1]
    table = pa.table(
        {
            "k": ["x"] * 5,
            "v": pa.array(values, pa.int64()),
            "_timestamp": pa.array(range(5), pa.int64()),
        }
    )
    (row,) = run(plan(None, (("s", agg("sum", "v")),), keys=(("k", Col("k")),)), table, 10)
    assert row["s"] == sum(values)


def test_multi_column_and_expression_keys_with_nulls() -> None:
    tbl = data(300, seed=4)
    keys: tuple[tuple[str, Expr], ...] = (
        ("sym", Col("sym")),
        ("q3", Call("mod", (Col("qty"), Lit(3, pa.int64())))),
        ("pos", Call("gt", (Col("price"), Lit(100.0, pa.float64())))),
    )
    node = plan(
        WINDOWS["tumbling"], (("n", agg("count_star")), ("s", agg("sum", "price"))), keys=keys
    )
    rel = duckdb.sql(
        """SELECT sym, qty % 3 AS q3, price > 100 AS pos, ws AS _window_start,
           ws + 1000 AS _window_end, count(*) AS n, sum(price) AS s, ws + 999 AS _timestamp
           FROM (SELECT *, _timestamp // 1000 * 1000 AS ws FROM tbl) GROUP BY ALL
           ORDER BY _window_end, _window_start, sym NULLS LAST, q3 NULLS LAST, pos NULLS LAST"""
    )
    assert rel is not None
    want = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    for size in (7, 10_000):
        assert_same(run(node, tbl, size), want)


def test_global_aggregate_without_keys() -> None:
    table = data(50)
    node = plan(None, (("n", agg("count_star")), ("m", agg("max", "qty"))), keys=())
    (row,) = run(node, table, 7)
    assert row["n"] == 50 and row["m"] == max(
        q for q in table.column("qty").to_pylist() if q is not None
    )
    windowed = run(plan(WINDOWS["tumbling"], (("n", agg("count_star")),), keys=()), table, 7)
    assert sum(r["n"] for r in windowed) == 50 and set(windowed[0]) == {
        "_window_start",
        "_window_end",
        "n",
        "_timestamp",
    }


def test_non_windowed_final_emits_only_at_flush() -> None:
    op = AggregateOp(plan(None, (("n", agg("count_star")),)), OperatorContext())
    batch = data(20).to_batches()[0]
    assert op.process(batch) == [] and op.advance(10**15) == []
    assert sum(r["n"] for r in op.flush()[0].to_pylist()) == 20


def test_dictionary_keys_and_changing_dictionaries() -> None:
    names_a = pa.array(["x", "y", "z"])
    names_b = pa.array(["z", "x"])
    b1 = pa.record_batch(
        {
            "sym": pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, None], pa.int32()), names_a),
            "_timestamp": pa.array([1, 2, 3, 4], pa.int64()),
        }
    )
    b2 = pa.record_batch(
        {
            "sym": pa.DictionaryArray.from_arrays(pa.array([0, 1, 1], pa.int32()), names_b),
            "_timestamp": pa.array([5, 6, 7], pa.int64()),
        }
    )
    op = AggregateOp(plan(None, (("n", agg("count_star")),)), OperatorContext())
    op.process(b1)
    op.process(b2)
    op.process(b1)
    rows = op.flush()[0].to_pylist()
    assert [(r["sym"], r["n"]) for r in rows] == [("x", 4), ("y", 2), ("z", 3), (None, 2)]


def test_sum_of_a_string_is_a_plan_error() -> None:
    op = AggregateOp(plan(None, (("s", agg("sum", "sym")),)), OperatorContext())
    with pytest.raises(PlanError, match="SUM needs a number"):
        op.process(data(5).to_batches()[0])


def test_unknown_column_names_the_column() -> None:
    op = AggregateOp(plan(None, (("s", agg("sum", "nope")),)), OperatorContext())
    with pytest.raises(ExecutionError, match="column 'nope'"):
        op.process(data(5).to_batches()[0])


def test_engine_drives_the_operator() -> None:
    table = data(300)
    node = plan(WINDOWS["tumbling"], (("n", agg("count_star")), ("a", agg("avg", "price"))))
    engine = Engine(Statement(plan=node))
    out = []
    for b in table.to_batches(max_chunksize=64):
        out += engine.process(b)
    out += engine.flush()
    got = [r for b in out for r in b.to_pylist()]
    assert got == run(node, table, 64)


# ------------------------------------------------------------- state


@pytest.mark.parametrize("window", list(WINDOWS))
def test_snapshot_restore_mid_stream_gives_identical_output(window: str) -> None:
    table = data(300, seed=9)
    node = plan(WINDOWS[window])
    want = run(node, table, 32)
    batches = table.to_batches(max_chunksize=32)
    op = AggregateOp(node, OperatorContext())
    out: list[pa.RecordBatch] = []
    high = None
    for i, b in enumerate(batches):
        if i == 4:
            state = pickle.loads(pickle.dumps(op.snapshot()))
            op = AggregateOp(node, OperatorContext())
            op.restore(state)
        out += op.process(b)
        top = pc.max(b.column("_timestamp")).as_py()
        high = top if high is None else max(high, top)
        out += op.advance(high)
    out += op.flush()
    assert [r for b in out for r in b.to_pylist()] == want


def test_split_snapshot_by_key_then_run_partitions() -> None:
    table = data(400, seed=12)
    node = plan(WINDOWS["tumbling"])
    want = run(node, table, 50)
    batches = table.to_batches(max_chunksize=50)
    single = AggregateOp(node, OperatorContext())
    high = None
    out: list[pa.RecordBatch] = []
    for b in batches[:3]:
        out += single.process(b)
        high = max(high or 0, pc.max(b.column("_timestamp")).as_py())
        out += single.advance(high)

    def owner(keys: pa.Table) -> np.ndarray:
        return np.array([0 if s in ("AA", None) else 1 for s in keys.column("sym").to_pylist()])

    class BySymbol:
        """A KeyRouter: "AA" and NULL on partition 0, the other symbols on 1."""

        key_columns = ("sym",)
        num_partitions = 2

        def partitions_of(self, columns: list[pa.Array]) -> np.ndarray:
            return owner(pa.table({"sym": columns[0]}))

        def partitions(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
            return owner(pa.table({"sym": batch.column("sym")}))

    parts = single.split(single.snapshot(), BySymbol())
    ops = [AggregateOp(node, OperatorContext()) for _ in parts]
    for op, part in zip(ops, parts, strict=True):
        op.restore(pickle.loads(pickle.dumps(part)))
    assert sum(p["groups"].num_rows for p in parts) == single.snapshot()["groups"].num_rows
    for b in batches[3:]:
        who = owner(pa.table({"sym": b.column("sym")}))
        before = np.maximum.accumulate(np.r_[high, b.column("_timestamp").to_numpy()])[:-1]
        b = b.append_column(PRIOR_MAX, pa.array(before))
        high = max(high, pc.max(b.column("_timestamp")).as_py())
        for i, op in enumerate(ops):
            out += op.process(b.filter(pa.array(who == i)))
            out += op.advance(high)
    for op in ops:
        out += op.flush()
    got = [r for b in out for r in b.to_pylist()]
    key = lambda r: (r["_window_end"], r["sym"] or "~")  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)


def test_merge_state_combines_partial_aggregates() -> None:
    table = data(300, seed=5)
    node = plan(None)
    want = run(node, table, 10_000)
    halves = [AggregateOp(node, OperatorContext()) for _ in range(2)]
    for i, b in enumerate(table.to_batches(max_chunksize=40)):
        halves[i % 2].process(b)
    final = AggregateOp(node, OperatorContext())
    for op in halves:
        final.merge_state(pickle.loads(pickle.dumps(op.snapshot())))
    got = [r for b in final.flush() for r in b.to_pylist()]
    assert_same(got, want)


def test_restore_refuses_a_snapshot_of_another_query() -> None:
    op = AggregateOp(plan(None, (("n", agg("count_star")),)), OperatorContext())
    other = AggregateOp(plan(None, (("n", agg("count", "qty")),)), OperatorContext())
    with pytest.raises(ExecutionError, match="query changed"):
        other.restore(op.snapshot())


def test_snapshot_of_an_empty_operator_restores() -> None:
    node = plan(WINDOWS["session"])
    op = AggregateOp(node, OperatorContext())
    fresh = AggregateOp(node, OperatorContext())
    fresh.restore(op.snapshot())
    assert run(node, data(50), 10) == [r for b in _feed(fresh, data(50), 10) for r in b.to_pylist()]


def _feed(op: AggregateOp, table: pa.Table, size: int) -> list[pa.RecordBatch]:
    out: list[pa.RecordBatch] = []
    for b in table.to_batches(max_chunksize=size):
        out += op.process(b)
        out += op.advance(pc.max(b.column("_timestamp")).as_py())
    return out + op.flush()


@pytest.mark.parametrize("window", list(WINDOWS))
def test_infinities_and_nan_follow_ieee_without_warnings(window: str) -> None:
    inf, nan = float("inf"), float("nan")
    table = pa.table(
        {
            "k": ["a", "a", "a", "b", "b", "c"],
            "x": pa.array([1.0, inf, -inf, nan, 2.0, nan]),
            "_timestamp": pa.array(range(6), pa.int64()),
        }
    )
    aggs = tuple((fn, agg(fn, "x")) for fn in ("sum", "avg", "min", "max", "var_pop"))
    node = plan(WINDOWS[window], aggs, keys=(("k", Col("k")),))
    rows = {r["k"]: r for r in run(node, table, 2)}
    assert np.isnan(rows["a"]["sum"]) and np.isnan(rows["a"]["var_pop"])
    assert rows["a"]["min"] == -inf and rows["a"]["max"] == inf
    assert rows["b"]["min"] == 2.0 and np.isnan(rows["b"]["max"])  # NaN sorts last, like DuckDB
    assert np.isnan(rows["b"]["avg"]) and np.isnan(rows["c"]["sum"])


def test_constant_key_and_argument_expressions() -> None:
    node = plan(
        WINDOWS["tumbling"],
        (
            ("n", AggCall("count", (Lit(1, pa.int64()),))),
            ("s", AggCall("sum", (Lit(2, pa.int64()),))),
        ),
        keys=(("one", Lit("x", pa.string())),),
    )
    rows = run(node, data(30), 7)
    assert {r["one"] for r in rows} == {"x"}
    assert sum(r["n"] for r in rows) == 30 and sum(r["s"] for r in rows) == 60


def test_kernel_benchmark_runs_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from flowsql.bench import kernels

    results = kernels.main(["--records", "30000", "--batch", "7000", "--repeat", "1", "--engine"])
    by = {(r.scenario, r.runner): r.rows_out for r in results}
    for scenario in kernels.SCENARIOS:
        assert by[(scenario, "operator")] == by[(scenario, "engine")] > 0
    assert by[("tumbling", "ceiling")] == by[("tumbling", "operator")]
    assert "CPU rec/s" in capsys.readouterr().out
