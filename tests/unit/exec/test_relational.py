"""DistinctOp, LimitOp and SortOp: first occurrences across batches, the job
stopping at LIMIT, ORDER BY with per-key NULL placement, snapshot/restore."""

from __future__ import annotations

import pickle
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from flowsql.engine import Engine
from flowsql.errors import PlanError
from flowsql.exec.compile import build_operator
from flowsql.exec.operator import OperatorContext
from flowsql.exec.relational import DistinctOp, LimitOp, SortOp
from flowsql.plan.expr import Call, Col, Lit
from flowsql.plan.nodes import Distinct, Limit, Scan, Sort, Statement

SCAN = Scan("t")


def _table(n: int = 400, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    sym = np.array(["a", "b", "c", None], dtype=object)[rng.integers(0, 4, n)]
    return pa.table(
        {
            "symbol": pa.array(sym, pa.string()),
            "qty": pa.array(rng.integers(0, 4, n), mask=rng.random(n) < 0.1),
            "price": pa.array(rng.integers(0, 3, n) * 0.5, mask=rng.random(n) < 0.1),
        }
    )


def _feed(op: Any, table: pa.Table, batch_size: int) -> pa.Table:
    out: list[pa.RecordBatch] = []
    for batch in table.to_batches(max_chunksize=batch_size):
        out += op.process(batch)
    out += op.flush()
    return pa.Table.from_batches(out, schema=table.schema)


def _first_occurrences(table: pa.Table) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in table.to_pylist():
        seen.setdefault(tuple(row.values()), row)
    return list(seen.values())


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_distinct_emits_each_row_once_at_its_first_occurrence(batch_size: int) -> None:
    table = _table()
    got = _feed(DistinctOp(Distinct(SCAN), OperatorContext()), table, batch_size)
    assert got.to_pylist() == _first_occurrences(table)
    con = duckdb.connect()
    con.register("t", table)
    want = con.sql("SELECT DISTINCT * FROM t").fetchall()
    assert sorted(map(repr, (tuple(r.values()) for r in got.to_pylist()))) == sorted(
        map(repr, want)
    )


def test_distinct_treats_nan_and_signed_zero_as_one_value_and_dictionaries_as_values() -> None:
    op = DistinctOp(Distinct(SCAN), OperatorContext())
    first = pa.record_batch(
        {
            "x": pa.array([float("nan"), 0.0, -0.0, float("nan")]),
            "s": pa.array(["a"] * 4).dictionary_encode(),
        }
    )
    second = pa.record_batch(
        {"x": pa.array([float("nan"), 1.0]), "s": pa.array(["a", "a"]).dictionary_encode()}
    )
    out = op.process(first) + op.process(second)
    assert [b.num_rows for b in out] == [2, 1]
    assert out[1].column("x").to_pylist() == [1.0]


def test_distinct_handles_nested_values() -> None:
    op = DistinctOp(Distinct(SCAN), OperatorContext())
    batch = pa.record_batch({"l": pa.array([[1, 2], [1, 2], None, [3]])})
    (out,) = op.process(batch)
    assert out.column("l").to_pylist() == [[1, 2], None, [3]]


@pytest.mark.parametrize("cut", [0, 3, 20])
def test_distinct_snapshot_and_restore(cut: int) -> None:
    table = _table()
    batches = table.to_batches(max_chunksize=9)
    op = DistinctOp(Distinct(SCAN), OperatorContext())
    out: list[pa.RecordBatch] = []
    for batch in batches[:cut]:
        out += op.process(batch)
    resumed = DistinctOp(Distinct(SCAN), OperatorContext())
    resumed.restore(pickle.loads(pickle.dumps(op.snapshot())))
    for batch in batches[cut:]:
        out += resumed.process(batch)
    assert pa.Table.from_batches(out, schema=table.schema).to_pylist() == _first_occurrences(table)


def test_limit_passes_the_first_n_rows_then_sets_done() -> None:
    ctx = OperatorContext()
    op = LimitOp(Limit(SCAN, 10), ctx)
    batches = _table(n=30).to_batches(max_chunksize=4)
    out = op.process(batches[0]) + op.process(batches[1])
    assert sum(b.num_rows for b in out) == 8 and not ctx.done
    (third,) = op.process(batches[2])
    assert third.num_rows == 2 and ctx.done
    assert third.to_pylist() == batches[2].slice(0, 2).to_pylist()
    assert op.process(batches[3]) == []


def test_limit_zero_is_done_at_once_and_negative_is_rejected() -> None:
    ctx = OperatorContext()
    op = LimitOp(Limit(SCAN, 0), ctx)
    assert ctx.done and op.process(_table(n=3).to_batches()[0]) == []
    with pytest.raises(PlanError, match="LIMIT"):
        LimitOp(Limit(SCAN, -1), OperatorContext())


def test_limit_snapshot_and_restore() -> None:
    op = LimitOp(Limit(SCAN, 5), OperatorContext())
    op.process(_table(n=3).to_batches()[0])
    ctx = OperatorContext()
    resumed = LimitOp(Limit(SCAN, 5), ctx)
    resumed.restore(pickle.loads(pickle.dumps(op.snapshot())))
    (out,) = resumed.process(_table(n=10).to_batches()[0])
    assert out.num_rows == 2 and ctx.done


def test_limit_stops_the_engine() -> None:
    engine = Engine(Statement(plan=Limit(SCAN, 3)))
    table = pa.table({"x": list(range(10)), "_timestamp": pa.array(range(10), pa.int64())})
    out = engine.process(table.slice(0, 2)) + engine.process(table.slice(2, 5))
    assert engine.done
    assert pa.Table.from_batches(out).column("x").to_pylist() == [0, 1, 2]
    assert engine.process(table.slice(7, 3)) == []


SORT_CASES = [
    (
        (("symbol", True, False), ("qty", False, True)),
        "symbol ASC NULLS LAST, qty DESC NULLS FIRST",
    ),
    ((("price", False, False),), "price DESC NULLS LAST"),
    ((("qty", True, True), ("price", True, False)), "qty ASC NULLS FIRST, price ASC NULLS LAST"),
]


@pytest.mark.parametrize(("keys", "order_sql"), SORT_CASES)
@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_sort_emits_one_total_order_at_end_of_input(
    keys: tuple[tuple[str, bool, bool], ...], order_sql: str, batch_size: int
) -> None:
    table = _table().append_column("seq", pa.array(np.arange(400)))
    node = Sort(SCAN, tuple((Col(c), asc, nf) for c, asc, nf in keys))
    op = SortOp(node, OperatorContext())
    for batch in table.to_batches(max_chunksize=batch_size):
        assert op.process(batch) == []
    out = op.flush()
    assert len(out) == 1
    con = duckdb.connect()
    con.register("t", table)
    want = con.sql(f"SELECT * FROM t ORDER BY {order_sql}, seq").to_arrow_table()
    assert out[0].to_pylist() == want.to_pylist()  # stable: ties keep arrival order
    assert op.flush() == []


def test_sort_by_an_expression() -> None:
    table = pa.table({"x": [3, -5, 1, -2]})
    node = Sort(SCAN, ((Call("abs", (Col("x"),)), True, False),))
    got = _feed(SortOp(node, OperatorContext()), table, 2)
    assert got.column("x").to_pylist() == [1, -2, 3, -5]


def test_sort_snapshot_and_restore() -> None:
    table = _table().append_column("seq", pa.array(np.arange(400)))
    node = Sort(SCAN, ((Col("qty"), True, False), (Col("seq"), False, False)))
    batches = table.to_batches(max_chunksize=50)
    op = SortOp(node, OperatorContext())
    for batch in batches[:3]:
        op.process(batch)
    resumed = SortOp(node, OperatorContext())
    resumed.restore(pickle.loads(pickle.dumps(op.snapshot())))
    for batch in batches[3:]:
        resumed.process(batch)
    uninterrupted = _feed(SortOp(node, OperatorContext()), table, 50)
    assert pa.Table.from_batches(resumed.flush()).equals(uninterrupted)


def test_compile_dispatches_to_the_relational_operators() -> None:
    ctx = OperatorContext()
    assert isinstance(build_operator(Distinct(SCAN), ctx), DistinctOp)
    assert isinstance(build_operator(Limit(SCAN, 1), ctx), LimitOp)
    assert isinstance(build_operator(Sort(SCAN, ((Lit(1, pa.int64()), True, False),)), ctx), SortOp)
