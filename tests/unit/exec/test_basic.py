"""FilterOp and ProjectOp: row selection with SQL NULL semantics, the SELECT
list, SELECT * without system columns, zero-copy column pass-through."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.errors import ExecutionError
from flowsql.exec.basic import FilterOp, ProjectOp
from flowsql.exec.compile import build_operator
from flowsql.exec.operator import OperatorContext
from flowsql.plan.expr import Call, Col, Lit
from flowsql.plan.nodes import Filter, Project, Scan

SCAN = Scan("trades")


def _batch() -> pa.RecordBatch:
    return pa.record_batch(
        {
            "symbol": pa.array(["A", "B", "A", None]).dictionary_encode(),
            "price": pa.array([10.0, None, 30.0, 40.0]),
            "qty": pa.array([1, 2, 3, 4]),
            "_timestamp": pa.array([1000, 2000, 3000, 4000], pa.int64()),
            "_offset": pa.array([10, 11, 12, 13], pa.int64()),
        }
    )


def _gt(column: str, value: float) -> Call:
    return Call("gt", (Col(column), Lit(value, pa.float64())))


def _filter(predicate) -> FilterOp:
    return FilterOp(Filter(SCAN, predicate), OperatorContext(job="j1"))


def test_filter_keeps_only_rows_where_the_predicate_is_true() -> None:
    (out,) = _filter(_gt("price", 15.0)).process(_batch())
    assert out.schema == _batch().schema
    assert out.column("qty").to_pylist() == [3, 4]  # NULL price is dropped, not kept


def test_filter_three_valued_predicate() -> None:
    pred = Call("or", (_gt("price", 35.0), Call("eq", (Col("symbol"), Lit("A", pa.string())))))
    (out,) = _filter(pred).process(_batch())
    assert out.column("qty").to_pylist() == [1, 3, 4]
    negated = Call("not", (pred,))
    assert _filter(negated).process(_batch()) == []  # NOT(NULL) is NULL: row 2 still dropped


def test_filter_returns_the_batch_itself_when_all_rows_pass_and_nothing_when_none() -> None:
    batch = _batch()
    (out,) = _filter(_gt("qty", 0)).process(batch)
    assert out is batch
    assert _filter(_gt("qty", 100)).process(batch) == []
    assert _filter(Lit(None, pa.null())).process(batch) == []


def test_filter_rejects_non_boolean_predicates_naming_job_and_operator() -> None:
    with pytest.raises(ExecutionError, match="job 'j1', operator 'filter'.*not boolean"):
        _filter(Col("qty")).process(_batch())


def test_filter_errors_carry_the_source_offsets() -> None:
    with pytest.raises(ExecutionError, match=r"operator 'filter'.*UPPER.*offsets 10\.\.13"):
        _filter(Call("upper", (Col("qty"),))).process(_batch())


def _project(exprs, star: bool = False) -> ProjectOp:
    return ProjectOp(Project(SCAN, tuple(exprs), star=star), OperatorContext(job="j1"))


def test_project_outputs_exactly_the_select_list_in_order() -> None:
    op = _project(
        [
            ("notional", Call("mul", (Col("price"), Col("qty")))),
            ("sym", Col("symbol")),
            ("one", Lit(1, pa.int64())),
            ("ts", Col("_timestamp")),
        ]
    )
    (out,) = op.process(_batch())
    assert out.schema.names == ["notional", "sym", "one", "ts"]
    assert out.column("notional").to_pylist() == [10.0, None, 90.0, 160.0]
    assert out.column("one").to_pylist() == [1, 1, 1, 1]
    assert out.column("ts").to_pylist() == [1000, 2000, 3000, 4000]
    assert pa.types.is_dictionary(out.column("sym").type)


def test_project_star_drops_system_columns_and_appends_expressions() -> None:
    (out,) = _project(
        [("double_qty", Call("mul", (Col("qty"), Lit(2, pa.int64()))))], star=True
    ).process(_batch())
    assert out.schema.names == ["symbol", "price", "qty", "double_qty"]
    assert out.column("double_qty").to_pylist() == [2, 4, 6, 8]


def test_project_of_plain_columns_is_zero_copy() -> None:
    batch = _batch()
    (out,) = _project([("p", Col("price")), ("q", Col("qty"))]).process(batch)
    for name, source in (("p", "price"), ("q", "qty")):
        ours, theirs = out.column(name).buffers(), batch.column(source).buffers()
        assert [b.address if b else None for b in ours] == [
            b.address if b else None for b in theirs
        ]


def test_project_keeps_the_row_count_and_empty_batches() -> None:
    (out,) = _project([("x", Lit("k", pa.string()))]).process(_batch().slice(0, 0))
    assert out.num_rows == 0 and out.schema.names == ["x"]


def test_project_unknown_column_error_names_job_operator_and_column() -> None:
    with pytest.raises(
        ExecutionError, match="job 'j1', operator 'project': column 'pirce'.*did you mean"
    ):
        _project([("p", Col("pirce"))]).process(_batch())


def test_operators_are_built_by_plan_dispatch_and_are_stateless() -> None:
    ctx = OperatorContext()
    filt = build_operator(Filter(SCAN, _gt("qty", 1)), ctx)
    proj = build_operator(Project(SCAN, (("q", Col("qty")),)), ctx)
    assert (filt.name, proj.name) == ("filter", "project")
    for op in (filt, proj):
        assert op.advance(10**12) == [] and op.flush() == [] and op.snapshot() == {}
        op.restore({})
    (out,) = proj.process(filt.process(_batch())[0])
    assert out.column("q").to_pylist() == [2, 3, 4]


def test_project_with_no_columns_keeps_the_row_count() -> None:
    (out,) = _project([]).process(_batch())
    assert out.num_rows == 4 and out.num_columns == 0
