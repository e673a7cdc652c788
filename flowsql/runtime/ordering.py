"""V1's row order for V2's merged outputs.

V1 emits the rows of each input batch in a defined order, and V2 must emit the
same rows in the same order (DESIGN §5: identical results):

- aggregates: by window end, window start, then the group key values
  (ascending, NULLs last), as ``AggregateOp`` orders every emitted batch;
- everything else hash-routed (filters, projections, ROWS window functions,
  DISTINCT on the key): the arrival order of the input rows (ROWS functions
  release rows held back for LEAD in arrival order too).

Each partition emits its share in that order, but the SELECT list usually
drops the columns the order is defined on. So the partitions run a copy of the
plan whose projections also carry hidden *order columns*, and the coordinator
sorts one batch's outputs from all partitions by them, then drops them:

- aggregates: ``__order_0..k`` = window end, window start, keys, taken from the
  aggregate's output by the first projection above it;
- otherwise ``__arrival``: the row's position in the whole input, numbered by
  the coordinator before routing and passed through every projection.

With one partition nothing is merged, and the plan runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.plan import nodes as n
from flowsql.plan.expr import Col, Expr
from flowsql.records import ARRIVAL, ORDER_PREFIX, WINDOW_END, WINDOW_START, is_order_column


@dataclass(frozen=True)
class OutputOrder:
    """How a V2 coordinator orders merged outputs.

    Attributes:
        statement: the plan the partitions run (with hidden order columns).
        columns: the hidden columns merged outputs are sorted by, then dropped.
        arrival: the coordinator numbers input rows in ``__arrival``.
    """

    statement: n.Statement
    columns: tuple[str, ...] = ()
    arrival: bool = False

    def tag(self, batch: pa.RecordBatch, first: int) -> pa.RecordBatch:
        """``batch`` with its rows numbered from ``first`` (when ordering by arrival)."""
        if not self.arrival:
            return batch
        numbers = np.arange(first, first + batch.num_rows, dtype=np.int64)
        return batch.append_column(ARRIVAL, pa.array(numbers))

    def merge(self, per_partition: Sequence[list[pa.RecordBatch]]) -> list[pa.RecordBatch]:
        """One input batch's outputs from every partition, in V1's order,
        without the order columns."""
        batches = [b for out in per_partition for b in out if b.num_rows]
        if not self.columns or not batches:
            return batches
        table = pa.concat_tables(
            [pa.Table.from_batches([b]) for b in batches], promote_options="permissive"
        )
        keys = [c for c in self.columns if c in table.column_names]
        if keys and sum(1 for out in per_partition if any(b.num_rows for b in out)) > 1:
            sortable = pa.table({k: _plain(table.column(k)) for k in keys})
            order = pc.sort_indices(sortable, sort_keys=[(k, "ascending", "at_end") for k in keys])
            table = table.take(order)
        hidden = [c for c in table.column_names if is_order_column(c)]
        return table.drop_columns(hidden).combine_chunks().to_batches()


def output_order(statement: n.Statement, partitions: int) -> OutputOrder:
    """The order columns for ``statement`` run on ``partitions`` partitions."""
    if partitions <= 1:
        return OutputOrder(statement)
    chain = n.walk(statement.plan)  # root first
    if any(isinstance(x, n.Sort | n.Limit) for x in chain):
        return OutputOrder(statement)  # these run on one partition
    at = next((i for i, x in enumerate(chain) if isinstance(x, n.Aggregate)), None)
    if at is None:
        plan = _carry(chain, len(chain), lambda _: {ARRIVAL: Col(ARRIVAL)})
        return OutputOrder(replace(statement, plan=plan), (ARRIVAL,), arrival=True)
    agg = chain[at]
    assert isinstance(agg, n.Aggregate)
    sources = [WINDOW_END, WINDOW_START] if agg.window is not None else []
    sources += [name for name, _ in agg.keys]
    if not sources:
        return OutputOrder(statement)
    names = [f"{ORDER_PREFIX}{i}" for i in range(len(sources))]
    above = [i for i in range(at) if isinstance(chain[i], n.Project)]
    if not above:  # the aggregate's own columns reach the output
        return OutputOrder(statement, tuple(sources))
    first = max(above)  # the projection right above the aggregate

    def carried(i: int) -> dict[str, Expr]:
        if i == first:
            return {name: Col(src) for name, src in zip(names, sources, strict=True)}
        return {name: Col(name) for name in names}

    return OutputOrder(replace(statement, plan=_carry(chain, at, carried)), tuple(names))


def _carry(chain: list[n.Node], below: int, columns: Callable[[int], Mapping[str, Expr]]) -> n.Node:
    """The plan of ``chain`` (root first) with every projection above
    ``chain[below]`` also computing ``columns(i)`` (name -> expression)."""
    node = chain[-1]
    for i in range(len(chain) - 2, -1, -1):
        x = chain[i]
        if isinstance(x, n.Project) and i < below:
            extra = dict(columns(i))
            if x.star:  # SELECT * already passes every non-system input column
                extra = {k: e for k, e in extra.items() if e != Col(k)}
            exprs = tuple((k, e) for k, e in x.exprs if k not in extra) + tuple(extra.items())
            x = replace(x, exprs=exprs)
        node = replace(x, input=node)  # type: ignore[call-arg,type-var]
    return node


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary columns sort by their values (V1 ranks decoded keys)."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column
