"""RowsWindowOp: ROWS frame functions against DuckDB at batch sizes 1, 7 and
10,000, results identical at every batch size, LEAD hold-back, snapshot/restore."""

from __future__ import annotations

import pickle
from decimal import Decimal

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsql.errors import PlanError, UnsupportedError
from flowsql.exec.compile import build_operator
from flowsql.exec.operator import OperatorContext
from flowsql.exec.rows import RowsWindowOp
from flowsql.plan.expr import Call, Col, Lit, WinCall
from flowsql.plan.nodes import RowsWindow, Scan

BATCH_SIZES = (1, 7, 10_000)
SCAN = Scan("t")
N = 300


def _data(n: int = N, symbols: int = 3, seed: int = 7) -> pa.Table:
    """Trades arriving in timestamp order, with NULLs in every value column."""
    rng = np.random.default_rng(seed)
    sym = np.array([f"S{i}" for i in range(symbols)], dtype=object)[rng.integers(0, symbols, n)]
    sym[rng.random(n) < 0.03] = None
    price = np.round(rng.random(n) * 100, 3)
    qty = rng.integers(-5, 50, n)
    amount = [Decimal(int(v)).scaleb(-2) for v in rng.integers(-99_999, 99_999, n)]
    names = np.array(["apple", "kiwi", "fig", "banana", "cherry"], dtype=object)
    name = names[rng.integers(0, 5, n)]
    return pa.table(
        {
            "seq": np.arange(n),
            "symbol": pa.array(sym, pa.string()),
            "ts": np.arange(n) * 10 + 1000,
            "price": pa.array(price, mask=rng.random(n) < 0.1),
            "qty": pa.array(qty, mask=rng.random(n) < 0.05),
            "amount": pa.array(amount, pa.decimal128(10, 2), mask=rng.random(n) < 0.05),
            "name": pa.array(name, pa.string(), mask=rng.random(n) < 0.1),
            "bucket": rng.integers(0, 4, n),
        }
    )


def _node(
    funcs: dict[str, WinCall],
    partition: tuple[str, ...] = ("symbol",),
    order: tuple[tuple[str, bool], ...] = (("ts", True),),
) -> RowsWindow:
    return RowsWindow(
        SCAN,
        tuple(funcs.items()),
        tuple(Col(p) for p in partition),
        tuple((Col(c), asc) for c, asc in order),
    )


def _run(node: RowsWindow, table: pa.Table, batch_size: int) -> pa.Table:
    op = RowsWindowOp(node, OperatorContext())
    out: list[pa.RecordBatch] = []
    for batch in table.to_batches(max_chunksize=batch_size):
        out += op.process(batch)
    out += op.flush()
    return pa.Table.from_batches(out).sort_by("seq")


def _duckdb(table: pa.Table, select: str) -> pa.Table:
    con = duckdb.connect()
    con.register("t", table)
    return con.sql(f"SELECT seq, {select} FROM t ORDER BY seq").to_arrow_table()


def _assert_matches(got: pa.Array, want: pa.Array) -> None:
    g, w = got.to_pylist(), want.to_pylist()
    assert len(g) == len(w)
    if pa.types.is_floating(got.type) or pa.types.is_floating(want.type):
        gf = np.array([np.nan if v is None else float(v) for v in g])
        wf = np.array([np.nan if v is None else float(v) for v in w])
        np.testing.assert_allclose(gf, wf, rtol=1e-9, atol=1e-9, equal_nan=True)
    else:
        assert g == w


OVER = "OVER (PARTITION BY symbol ORDER BY ts {frame})"


def _frame(preceding: int | None) -> str:
    start = "UNBOUNDED" if preceding is None else str(preceding)
    return f"ROWS BETWEEN {start} PRECEDING AND CURRENT ROW"


FRAME_CASES = [
    ("avg", "price", 60),
    ("avg", "price", 3),
    ("sum", "price", 4),
    ("sum", "qty", 2),
    ("sum", "qty", None),
    ("avg", "qty", None),
    ("min", "price", 5),
    ("max", "price", 0),
    ("min", "qty", None),
    ("max", "price", None),
    ("count", "price", 6),
    ("count", "qty", None),
    ("count_star", None, 3),
    ("count_star", None, None),
    ("min", "name", 3),
    ("max", "name", None),
    ("sum", "amount", 5),
    ("sum", "amount", None),
    ("min", "amount", 2),
]


@pytest.mark.parametrize(("fn", "arg", "preceding"), FRAME_CASES)
def test_frame_aggregates_match_duckdb_at_every_batch_size(
    fn: str, arg: str | None, preceding: int | None
) -> None:
    table = _data()
    call = WinCall(fn, (Col(arg),) if arg else (), preceding=preceding)
    sql_fn = "COUNT(*)" if fn == "count_star" else f"{fn.upper()}({arg})"
    want = _duckdb(table, f"{sql_fn} {OVER.format(frame=_frame(preceding))} AS f")
    results = [_run(_node({"f": call}), table, size) for size in BATCH_SIZES]
    _assert_matches(results[-1].column("f"), want.column("f"))
    for other in results[:-1]:
        assert other.equals(results[-1]), "results depend on the batch size"


RANKING_CASES = [
    (WinCall("row_number"), "ROW_NUMBER()", (("ts", True),)),
    (WinCall("rank"), "RANK()", (("bucket", True),)),
    (WinCall("dense_rank"), "DENSE_RANK()", (("bucket", False),)),
    (WinCall("rank"), "RANK()", (("bucket", True), ("qty", False))),
    (WinCall("dense_rank"), "DENSE_RANK()", (("qty", True),)),
    (WinCall("rank"), "RANK()", ()),
]


@pytest.mark.parametrize(("call", "sql_fn", "order"), RANKING_CASES)
def test_ranking_functions_match_duckdb(
    call: WinCall, sql_fn: str, order: tuple[tuple[str, bool], ...]
) -> None:
    # Arrival order = ORDER BY order, so the stream equals the bounded query.
    table = _resort(_data(), order) if order else _data()
    sql_order = ", ".join(f"{c} {'ASC' if asc else 'DESC'} NULLS LAST" for c, asc in order)
    clause = f"ORDER BY {sql_order}" if order else ""
    want = _duckdb(table, f"{sql_fn} OVER (PARTITION BY symbol {clause}) AS f")
    node = _node({"f": call}, order=order)
    results = [_run(node, table, size) for size in (7, 10_000)]
    _assert_matches(results[-1].column("f"), want.column("f"))
    assert results[0].equals(results[-1])


def _resort(table: pa.Table, order: tuple[tuple[str, bool], ...]) -> pa.Table:
    keys = [(c, "ascending" if asc else "descending") for c, asc in order]
    out = table.sort_by(keys)  # stable; nulls last
    return out.set_column(0, "seq", pa.array(np.arange(out.num_rows)))


SHIFT_CASES = [
    (WinCall("lag", (Col("price"),)), "LAG(price)"),
    (WinCall("lag", (Col("name"),), offset=3), "LAG(name, 3)"),
    (WinCall("lag", (Col("qty"),), offset=2, default=Lit(-1, pa.int64())), "LAG(qty, 2, -1)"),
    (WinCall("lag", (Col("amount"),), offset=0), "LAG(amount, 0)"),
    (WinCall("lead", (Col("price"),)), "LEAD(price)"),
    (WinCall("lead", (Col("name"),), offset=4), "LEAD(name, 4)"),
    (WinCall("lead", (Col("qty"),), offset=2, default=Col("bucket")), "LEAD(qty, 2, bucket)"),
]


@pytest.mark.parametrize(("call", "sql_fn"), SHIFT_CASES)
def test_lag_and_lead_match_duckdb(call: WinCall, sql_fn: str) -> None:
    table = _data()
    want = _duckdb(table, f"{sql_fn} OVER (PARTITION BY symbol ORDER BY ts) AS f")
    results = [_run(_node({"f": call}), table, size) for size in BATCH_SIZES]
    _assert_matches(results[-1].column("f"), want.column("f"))
    for other in results[:-1]:
        assert other.equals(results[-1])


def test_lead_holds_rows_until_the_next_row_of_their_partition_arrives() -> None:
    node = _node({"nxt": WinCall("lead", (Col("v"),))}, order=())
    op = RowsWindowOp(node, OperatorContext())
    first = op.process(
        pa.record_batch({"symbol": ["a", "b", "a"], "v": [1, 2, 3], "seq": [0, 1, 2]})
    )
    assert [b.to_pylist() for b in first] == [[{"symbol": "a", "v": 1, "seq": 0, "nxt": 3}]]
    second = op.process(pa.record_batch({"symbol": ["b"], "v": [4], "seq": [3]}))
    assert second[0].to_pylist() == [{"symbol": "b", "v": 2, "seq": 1, "nxt": 4}]
    rest = pa.Table.from_batches(op.flush()).to_pylist()
    assert rest == [
        {"symbol": "a", "v": 3, "seq": 2, "nxt": None},
        {"symbol": "b", "v": 4, "seq": 3, "nxt": None},
    ]
    assert op.flush() == []


def test_many_functions_in_one_node_with_lead_and_unbounded_state() -> None:
    table = _data()
    funcs = {
        "rn": WinCall("row_number"),
        "nxt": WinCall("lead", (Col("price"),), offset=2),
        "prev": WinCall("lag", (Col("price"),), offset=5),
        "mov": WinCall("avg", (Col("price"),), preceding=9),
        "run": WinCall("sum", (Col("qty"),)),
        "hi": WinCall("max", (Col("name"),)),
    }
    want = _duckdb(
        table,
        "ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS rn,"
        " LEAD(price, 2) OVER (PARTITION BY symbol ORDER BY ts) AS nxt,"
        " LAG(price, 5) OVER (PARTITION BY symbol ORDER BY ts) AS prev,"
        f" AVG(price) {OVER.format(frame=_frame(9))} AS mov,"
        f" SUM(qty) {OVER.format(frame=_frame(None))} AS run,"
        f" MAX(name) {OVER.format(frame=_frame(None))} AS hi",
    )
    results = [_run(_node(funcs), table, size) for size in BATCH_SIZES]
    for name in funcs:
        _assert_matches(results[-1].column(name), want.column(name))
    for other in results[:-1]:
        assert other.equals(results[-1])
    assert results[-1].column_names[: table.num_columns] == table.column_names


def test_moving_average_benchmark_query_matches_duckdb() -> None:
    # SELECT symbol, price, AVG(price) OVER (ROWS WINDOW BUFFER 100 ROWS
    # PARTITION BY symbol ORDER BY timestamp) AS moving_avg FROM market_data
    table = _data(n=30_000, symbols=100, seed=3)
    node = _node({"moving_avg": WinCall("avg", (Col("price"),), preceding=99)})
    want = _duckdb(table, f"AVG(price) {OVER.format(frame=_frame(99))} AS moving_avg")
    got = _run(node, table, 10_000)
    _assert_matches(got.column("moving_avg"), want.column("moving_avg"))
    assert _run(node, table, 777).equals(got)


def test_order_by_sorts_the_rows_within_a_batch() -> None:
    table = _data()
    shuffled = table.take(pa.array(np.random.default_rng(1).permutation(N)))
    want = _duckdb(
        shuffled,
        f"SUM(qty) {OVER.format(frame=_frame(3))} AS f, LAG(ts) OVER (PARTITION BY symbol ORDER BY ts) AS g",
    )
    node = _node(
        {"f": WinCall("sum", (Col("qty"),), preceding=3), "g": WinCall("lag", (Col("ts"),))}
    )
    got = _run(node, shuffled, 10_000)
    _assert_matches(got.column("f"), want.column("f"))
    _assert_matches(got.column("g"), want.column("g"))


def test_output_keeps_arrival_order() -> None:
    table = _data()
    op = RowsWindowOp(_node({"f": WinCall("row_number")}), OperatorContext())
    (out,) = op.process(table.to_batches()[0])
    assert out.column("seq").to_pylist() == list(range(N))


def test_descending_order_and_several_partition_columns() -> None:
    table = _data()
    order = (("ts", False),)
    table = _resort(table, order)
    node = _node(
        {"f": WinCall("sum", (Col("price"),), preceding=2), "r": WinCall("row_number")},
        partition=("symbol", "bucket"),
        order=order,
    )
    over = "OVER (PARTITION BY symbol, bucket ORDER BY ts DESC {})"
    want = _duckdb(
        table, f"SUM(price) {over.format(_frame(2))} AS f, ROW_NUMBER() {over.format('')} AS r"
    )
    for size in (7, 10_000):
        got = _run(node, table, size)
        _assert_matches(got.column("f"), want.column("f"))
        _assert_matches(got.column("r"), want.column("r"))


def test_no_partition_means_one_partition() -> None:
    table = _data()
    node = _node({"f": WinCall("max", (Col("qty"),), preceding=4)}, partition=())
    want = _duckdb(table, f"MAX(qty) OVER (ORDER BY ts {_frame(4)}) AS f")
    _assert_matches(_run(node, table, 7).column("f"), want.column("f"))


def test_expressions_as_arguments_and_partition_keys() -> None:
    table = _data()
    doubled = Call("mul", (Col("qty"), Lit(2, pa.int64())))
    node = RowsWindow(
        SCAN,
        (("f", WinCall("sum", (doubled,), preceding=1)),),
        (Call("upper", (Col("symbol"),)),),
        ((Col("ts"), True),),
    )
    want = _duckdb(
        table, f"SUM(qty * 2) OVER (PARTITION BY upper(symbol) ORDER BY ts {_frame(1)}) AS f"
    )
    _assert_matches(_run(node, table, 7).column("f"), want.column("f"))


def test_decimal_results_stay_exact() -> None:
    table = pa.table(
        {
            "seq": [0, 1, 2],
            "symbol": ["a", "a", "a"],
            "ts": [1, 2, 3],
            "amount": pa.array(
                [Decimal("0.10"), Decimal("0.20"), Decimal("0.05")], pa.decimal128(5, 2)
            ),
        }
    )
    node = _node(
        {
            "s": WinCall("sum", (Col("amount"),), preceding=1),
            "a": WinCall("avg", (Col("amount"),)),
            "m": WinCall("min", (Col("amount"),), preceding=1),
        }
    )
    got = _run(node, table, 1)
    assert got.schema.field("s").type == pa.decimal128(38, 2)
    assert got.schema.field("a").type == pa.decimal128(38, 6)
    assert got.schema.field("m").type == pa.decimal128(5, 2)
    assert got.column("s").to_pylist() == [Decimal("0.10"), Decimal("0.30"), Decimal("0.25")]
    assert got.column("a").to_pylist() == [
        Decimal("0.100000"),
        Decimal("0.150000"),
        Decimal("0.116667"),
    ]
    assert got.column("m").to_pylist() == [Decimal("0.10"), Decimal("0.10"), Decimal("0.05")]


def test_wide_decimals_sum_exactly_past_int64() -> None:
    big = Decimal("9" * 17 + ".99")
    table = pa.table(
        {
            "seq": [0, 1, 2],
            "symbol": ["a"] * 3,
            "ts": [1, 2, 3],
            "amount": pa.array([big, big, -big], pa.decimal128(38, 2)),
        }
    )
    node = _node(
        {"s": WinCall("sum", (Col("amount"),), preceding=2), "u": WinCall("sum", (Col("amount"),))}
    )
    got = _run(node, table, 1)
    assert got.column("s").to_pylist() == [big, 2 * big, big]
    assert got.column("u").to_pylist() == [big, 2 * big, big]


@pytest.mark.parametrize("cut", [0, 1, 5, 13, 40])
def test_snapshot_and_restore_mid_stream_equals_an_uninterrupted_run(cut: int) -> None:
    table = _data()
    node = _node(
        {
            "rn": WinCall("row_number"),
            "rk": WinCall("dense_rank"),
            "nxt": WinCall("lead", (Col("price"),), offset=3),
            "prev": WinCall("lag", (Col("name"),), offset=2),
            "mov": WinCall("avg", (Col("price"),), preceding=20),
            "run": WinCall("sum", (Col("amount"),)),
            "lo": WinCall("min", (Col("name"),)),
            "hi": WinCall("max", (Col("price"),)),
        }
    )
    batches = table.to_batches(max_chunksize=7)
    op = RowsWindowOp(node, OperatorContext())
    out: list[pa.RecordBatch] = []
    for batch in batches[:cut]:
        out += op.process(batch)
    state = pickle.loads(pickle.dumps(op.snapshot()))
    resumed = RowsWindowOp(node, OperatorContext())
    resumed.restore(state)
    for batch in batches[cut:]:
        out += resumed.process(batch)
    out += resumed.flush()
    got = pa.Table.from_batches(out).sort_by("seq")
    assert got.equals(_run(node, table, 7))


def test_compile_dispatches_to_the_rows_operator() -> None:
    op = build_operator(_node({"f": WinCall("row_number")}), OperatorContext())
    assert isinstance(op, RowsWindowOp)
    assert op.advance(10**12) == [] and op.flush() == []


def test_unknown_function_and_forward_frames_are_rejected() -> None:
    with pytest.raises(UnsupportedError, match="MEDIAN"):
        RowsWindowOp(_node({"f": WinCall("median", (Col("qty"),))}), OperatorContext())
    with pytest.raises(PlanError, match="forward"):
        RowsWindowOp(_node({"f": WinCall("sum", (Col("qty"),), preceding=-1)}), OperatorContext())


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=80
    ),
    keys=st.data(),
    preceding=st.integers(0, 12),
    cuts=st.lists(st.integers(1, 79), max_size=6),
)
def test_frames_equal_brute_force_for_any_batch_cuts(
    values: list[float | None], keys: st.DataObject, preceding: int, cuts: list[int]
) -> None:
    n = len(values)
    part = keys.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    table = pa.table(
        {"seq": np.arange(n), "symbol": pa.array(part), "v": pa.array(values, pa.float64())}
    )
    node = _node(
        {
            "s": WinCall("sum", (Col("v"),), preceding=preceding),
            "lo": WinCall("min", (Col("v"),), preceding=preceding),
            "c": WinCall("count", (Col("v"),), preceding=preceding),
        },
        order=(),
    )
    op = RowsWindowOp(node, OperatorContext())
    out: list[pa.RecordBatch] = []
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    for a, b in zip(bounds, bounds[1:], strict=False):
        out += op.process(table.slice(a, b - a).to_batches()[0])
    got = pa.Table.from_batches(out).sort_by("seq")
    whole = _run(node, table, n)
    assert got.equals(whole)
    history: dict[int, list[float | None]] = {}
    for i, (k, v) in enumerate(zip(part, values, strict=True)):
        history.setdefault(k, []).append(v)
        frame = [x for x in history[k][-(preceding + 1) :] if x is not None]
        assert got.column("c")[i].as_py() == len(frame)
        expected_sum = sum(frame) if frame else None
        expected_min = min(frame) if frame else None
        assert got.column("lo")[i].as_py() == expected_min
        s = got.column("s")[i].as_py()
        assert (s is None) == (expected_sum is None)
        if s is not None:
            assert s == pytest.approx(expected_sum, rel=1e-9, abs=1e-6)
