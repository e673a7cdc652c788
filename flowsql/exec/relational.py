"""SELECT DISTINCT, LIMIT and ORDER BY operators.

- ``DistinctOp`` emits the first occurrence of every distinct row, across
  batches. Rows are encoded to persistent dense ids by
  :class:`~flowsql.exec.groupkeys.GroupKeys` (exact values, no hash
  collisions; NULLs equal each other, as SQL DISTINCT wants), so a batch costs
  one vectorized encode plus a ``numpy.unique`` over its new ids.
- ``LimitOp`` passes rows until ``n`` have gone out, then sets
  ``ctx.done`` so the engine stops reading input.
- ``SortOp`` buffers its whole input and emits one totally ordered batch at
  end of input (``flush``): ORDER BY over a bounded input. On an unbounded
  input it emits nothing until the input ends.

DISTINCT's rows split by their routing key values; LIMIT's count and ORDER
BY's buffer belong to the whole stream and cannot be split over partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import PlanError
from flowsql.exec.expressions import compile_expr
from flowsql.exec.groupkeys import GroupKeys
from flowsql.exec.operator import KeyRouter, OperatorContext
from flowsql.exec.rowkernels import plain
from flowsql.exec.state import concat_tables, key_columns, split_table, whole
from flowsql.plan.expr import Col
from flowsql.plan.nodes import Distinct, Limit, Project, Sort
from flowsql.records import is_order_column


class DistinctOp:
    """SELECT DISTINCT: each distinct row once, at its first occurrence."""

    name = "distinct"

    def __init__(self, node: Distinct, ctx: OperatorContext) -> None:
        self.node = node
        self.ctx = ctx
        self.keys: GroupKeys | None = None

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Rows of ``batch`` not seen before (first occurrence within the batch)."""
        if batch.num_rows == 0:
            return []
        keys = self._keys(batch.schema)
        before = keys.count
        ids = keys.encode(_hashable_columns(batch, keys.names), batch.num_rows)
        fresh = np.flatnonzero(ids >= before)
        if len(fresh) == 0:
            return []
        first = np.unique(ids[fresh], return_index=True)[1]
        keep = np.sort(fresh[first])
        if len(keep) == batch.num_rows:
            return [batch]
        return [batch.take(pa.array(keep))]

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        return []

    def flush(self) -> list[pa.RecordBatch]:
        return []

    def snapshot(self) -> dict[str, Any]:
        """The distinct rows seen so far, as an Arrow table."""
        if self.keys is None or not self.keys.count:
            return {"names": None, "seen": None}
        seen = self.keys.decode(np.arange(self.keys.count, dtype=np.int64))
        return {"names": list(self.keys.names), "seen": pa.table(seen, names=list(self.keys.names))}

    def restore(self, state: dict[str, Any]) -> None:
        self.keys = None
        if state.get("seen") is None:
            return
        seen: pa.Table = state["seen"].combine_chunks()
        self.keys = GroupKeys(tuple(state["names"]))
        self.keys.encode([plain(c) for c in seen.columns], seen.num_rows)

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        """One state per partition: the distinct rows whose key values it owns."""
        seen = state.get("seen")
        if router.num_partitions == 1 or seen is None:
            return [state] * router.num_partitions
        columns = key_columns(seen.schema.names, router, self._selected_as())
        return [dict(state, seen=part) for part in split_table(seen, columns, router)]

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The distinct rows of every state (disjoint)."""
        names = next((st["names"] for st in states if st.get("names") is not None), None)
        seen = concat_tables([st.get("seen") for st in states])
        if seen is None:
            return {"names": None, "seen": None}
        return {"names": names, "seen": seen}

    def _selected_as(self) -> dict[str, str]:
        """Input column -> its name in the SELECT list below (rows are stored
        by their selected names, routed by input column names)."""
        below = self.node.input
        if not isinstance(below, Project):
            return {}
        return {e.name: name for name, e in below.exprs if isinstance(e, Col) and e.name != name}

    def _keys(self, schema: pa.Schema) -> GroupKeys:
        if self.keys is None:
            # V2's hidden ordering columns (row numbers) are not part of a row's value
            self.keys = GroupKeys(tuple(x for x in schema.names if not is_order_column(x)))
        return self.keys


def _hashable_columns(batch: pa.RecordBatch, names: Sequence[str]) -> list[pa.Array]:
    """The batch's ``names`` columns; nested values (lists, structs, maps) as
    their text, since Arrow cannot hash them."""
    out = []
    for name in names:
        col = batch.column(name)
        t = col.type
        if pa.types.is_nested(t) or pa.types.is_map(t):
            col = pa.array([None if v is None else repr(v) for v in col.to_pylist()], pa.string())
        out.append(col)
    return out


class LimitOp:
    """LIMIT n: pass rows until ``n`` are out, then ask the engine to stop."""

    name = "limit"

    def __init__(self, node: Limit, ctx: OperatorContext) -> None:
        if node.n < 0:
            raise PlanError(f"LIMIT must not be negative, got {node.n}")
        self.node = node
        self.ctx = ctx
        self.emitted = 0
        self._check_done()

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """The first rows of ``batch`` that still fit under the limit."""
        room = self.node.n - self.emitted
        take = min(room, batch.num_rows)
        self.emitted += take
        self._check_done()
        if take <= 0:
            return []
        return [batch if take == batch.num_rows else batch.slice(0, take)]

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        return []

    def flush(self) -> list[pa.RecordBatch]:
        return []

    def snapshot(self) -> dict[str, Any]:
        return {"emitted": self.emitted}

    def restore(self, state: dict[str, Any]) -> None:
        self.emitted = int(state["emitted"])
        self._check_done()

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        return whole(state, router, f"LIMIT {self.node.n} counts rows over the whole stream")

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Rows emitted by all the states together."""
        return {"emitted": sum(int(st["emitted"]) for st in states)}

    def _check_done(self) -> None:
        if self.emitted >= self.node.n:
            self.ctx.done = True


class SortOp:
    """ORDER BY: buffer everything, emit one sorted batch at end of input.

    Keys follow ``Sort.keys`` (expression, ascending, nulls_first); equal keys
    keep arrival order (the sort is stable).
    """

    name = "sort"

    def __init__(self, node: Sort, ctx: OperatorContext) -> None:
        self.node = node
        self.ctx = ctx
        self.keys = [(compile_expr(e), asc, nulls_first) for e, asc, nulls_first in node.keys]
        self.buffered: list[pa.RecordBatch] = []

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Keep ``batch`` until the end of input."""
        if batch.num_rows:
            self.buffered.append(batch)
        return []

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        return []

    def flush(self) -> list[pa.RecordBatch]:
        """Every buffered row, totally ordered, as one batch."""
        if not self.buffered:
            return []
        rows = _concat(self.buffered)
        self.buffered = []
        order = self._order(rows)
        return [rows.take(order)]

    def snapshot(self) -> dict[str, Any]:
        """The buffered rows as one Arrow table (None when empty)."""
        if not self.buffered:
            return {"rows": None}
        return {"rows": pa.Table.from_batches([_concat(self.buffered)])}

    def restore(self, state: dict[str, Any]) -> None:
        rows = state.get("rows")
        self.buffered = [] if rows is None else rows.combine_chunks().to_batches()

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        return whole(state, router, "ORDER BY sorts all rows together")

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The buffered rows of every state, in the order of ``states``."""
        return {"rows": concat_tables([st.get("rows") for st in states])}

    def _order(self, rows: pa.RecordBatch) -> pa.Array:
        columns: dict[str, pa.Array] = {}
        sort_keys: list[tuple[str, str]] = []
        for i, (evaluate, asc, nulls_first) in enumerate(self.keys):
            key = plain(evaluate(rows))
            if key.null_count:
                # Arrow places nulls the same way for every key; a null flag
                # before each key gives each key its own placement.
                columns[f"n{i}"] = key.is_null()
                sort_keys.append((f"n{i}", "descending" if nulls_first else "ascending"))
            columns[f"k{i}"] = key
            sort_keys.append((f"k{i}", "ascending" if asc else "descending"))
        if not sort_keys:
            return pa.array(np.arange(rows.num_rows))
        return pc.sort_indices(pa.table(columns), sort_keys=sort_keys)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch holding ``batches`` (later schemas cast to the first one)."""
    schema = batches[0].schema
    same = [b if b.schema == schema else b.cast(schema) for b in batches]
    return same[0] if len(same) == 1 else pa.concat_batches(same)
