"""The stateless row operators: WHERE / HAVING (``FilterOp``) and the SELECT
list (``ProjectOp``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError
from flowsql.exec.expressions import compile_expr
from flowsql.exec.operator import OperatorContext, StatelessOperator
from flowsql.plan.expr import Col
from flowsql.plan.nodes import Filter, Project
from flowsql.records import OFFSET, PARTITION, SYSTEM_COLUMNS


def _where(batch: pa.RecordBatch) -> str:
    """The source position of a batch, for error messages."""
    names = batch.schema.names
    if OFFSET not in names or batch.num_rows == 0:
        return ""
    offsets = batch.column(OFFSET)
    where = f" (offsets {pc.min(offsets).as_py()}..{pc.max(offsets).as_py()}"
    if PARTITION in names:
        where += f", partitions {sorted(set(pc.unique(batch.column(PARTITION)).to_pylist()))}"
    return where + ")"


class _RowOperator(StatelessOperator):
    """Adds the job and operator name (and the batch's source offsets) to errors."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx

    def _error(self, exc: ExecutionError, batch: pa.RecordBatch) -> ExecutionError:
        return ExecutionError(f"job '{self.ctx.job}', operator '{self.name}': {exc}{_where(batch)}")


class FilterOp(_RowOperator):
    """Keeps the rows where the predicate is TRUE (FALSE and NULL are dropped)."""

    name = "filter"

    def __init__(self, node: Filter, ctx: OperatorContext) -> None:
        super().__init__(ctx)
        self.predicate = compile_expr(node.predicate)

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        try:
            mask = self.predicate(batch)
        except ExecutionError as exc:
            raise self._error(exc, batch) from exc
        if not pa.types.is_boolean(mask.type):
            if pa.types.is_null(mask.type):
                return []
            raise self._error(ExecutionError(f"WHERE condition is {mask.type}, not boolean"), batch)
        kept = mask.true_count
        if kept == batch.num_rows:
            return [batch]
        if kept == 0:
            return []
        return [batch.filter(mask, null_selection_behavior="drop")]


class ProjectOp(_RowOperator):
    """Computes the SELECT list: exactly ``node.exprs`` in order, preceded by the
    non-system input columns when ``node.star`` is set. Plain column references
    are passed through without copying."""

    name = "project"

    def __init__(self, node: Project, ctx: OperatorContext) -> None:
        super().__init__(ctx)
        self.star = node.star
        self.names = [name for name, _ in node.exprs]
        self.columns = [e.name if isinstance(e, Col) else None for _, e in node.exprs]
        self.evaluators = [None if isinstance(e, Col) else compile_expr(e) for _, e in node.exprs]

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        names: list[str] = []
        arrays: list[pa.Array] = []
        if self.star:
            for field, column in zip(batch.schema, batch.columns, strict=True):
                if field.name not in SYSTEM_COLUMNS:
                    names.append(field.name)
                    arrays.append(column)
        try:
            arrays += [self._value(i, batch) for i in range(len(self.names))]
        except ExecutionError as exc:
            raise self._error(exc, batch) from exc
        names += self.names
        if not arrays:  # keep the row count even with no columns
            return [batch.select([])]
        return [pa.RecordBatch.from_arrays(arrays, names=names)]

    def _value(self, i: int, batch: pa.RecordBatch) -> pa.Array:
        column = self.columns[i]
        if column is None:
            evaluator = self.evaluators[i]
            assert evaluator is not None
            return evaluator(batch)
        index = batch.schema.get_field_index(column)
        if index < 0:
            return compile_expr(Col(column))(batch)  # raises the unknown-column error
        return batch.column(index)
