"""ROWS window functions with state carried across batches per partition.

``RowsWindowOp`` evaluates the functions of a :class:`~flowsql.plan.nodes.RowsWindow`
node: ROW_NUMBER, RANK, DENSE_RANK, LAG, LEAD and SUM/AVG/MIN/MAX/COUNT/COUNT(*)
over the frame ``preceding`` rows before the current one plus the current
row (``None`` = UNBOUNDED PRECEDING).

Semantics on a stream:

- Rows belong to the partition of their PARTITION BY values (one partition
  when there are none). Within a partition rows are taken in arrival order
  across batches; ORDER BY sorts the rows of each batch (stable, NULLs last).
  So the streaming input is assumed to arrive in ORDER BY order, and then the
  results equal the bounded SQL results and do not depend on the batch size.
- A frame reaches back into earlier batches: the last rows of every partition
  are kept (as many as the largest frame or LAG offset needs), and ROW_NUMBER,
  RANK, DENSE_RANK and unbounded aggregates continue from carried counters.
- LEAD needs rows that have not arrived yet: a row is held back until its
  partition has received ``offset`` more rows, or until end of input
  (``flush``), when missing lead rows give the default (NULL if none).
- Output rows keep the arrival order of the input (held-back rows come out in
  arrival order among the rows released with them). Output columns are the
  input columns followed by one column per function.

Result types: ROW_NUMBER/RANK/DENSE_RANK/COUNT are int64; SUM is int64 for
integers, float64 for floats, DECIMAL(38, s) for decimals; AVG is float64, or
DECIMAL(38, max(s, 6)) rounded half away from zero for decimals; MIN/MAX/LAG/
LEAD keep the argument's type. Floating sums are accumulated sequentially in
blocks aligned to each partition's row numbers (see ``rowkernels``), so they
are bit-for-bit the same at any batch size. Integer sums wrap on int64 overflow.
NaN ordering in MIN/MAX follows numpy (NaN propagates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError, PlanError, UnsupportedError
from flowsql.exec import rows_state
from flowsql.exec.expressions import compile_expr
from flowsql.exec.groupkeys import GroupKeys, grow
from flowsql.exec.operator import KeyRouter, OperatorContext
from flowsql.exec.rowkernels import (
    Frames,
    Segments,
    Vals,
    identity_of,
    plain,
    ranges,
    seg_cumsum_int,
    to_vals,
)
from flowsql.plan.expr import WINDOW_FUNCTIONS, Col, Expr, WinCall
from flowsql.plan.nodes import RowsWindow

Evaluator = Callable[[pa.RecordBatch], pa.Array]

_INT64 = pa.int64()


def compile_expression(expr: Expr) -> Evaluator:
    """Compile a plan expression (the expression compiler is imported lazily)."""
    return compile_expr(expr)


class TailStore:
    """The last ``depth`` rows of every partition, as numpy slabs.

    Each partition's tail is a contiguous run ``[start, start + length)`` of
    the slabs; a new tail is appended and the old run becomes garbage, which is
    compacted away once it outweighs the live rows.

    Args:
        depth: rows kept per partition.
        width: number of columns kept.
    """

    def __init__(self, depth: int, width: int) -> None:
        self.depth = depth
        self.start = np.zeros(0, dtype=np.int64)
        self.length = np.zeros(0, dtype=np.int64)
        self.cols: list[Vals | None] = [None] * width
        self.used = 0
        self.live = 0

    def grow(self, size: int) -> None:
        """Make room for partition ids below ``size``."""
        self.start = grow(self.start, size, 0)
        self.length = grow(self.length, size, 0)

    def gather(self, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tail lengths of ``pids`` and the slab rows of their tails, concatenated."""
        t = self.length[pids]
        return t, np.repeat(self.start[pids], t) + ranges(t)

    def column(self, i: int, idx: np.ndarray) -> Vals | None:
        """Column ``i`` at slab rows ``idx`` (None before anything was stored)."""
        slab = self.cols[i]
        return None if slab is None else slab.take(idx)

    def replace(self, pids: np.ndarray, lengths: np.ndarray, columns: list[Vals]) -> None:
        """New tails of ``pids`` (``lengths`` rows each, concatenated in ``columns``)."""
        total = int(lengths.sum())
        self.live += total - int(self.length[pids].sum())
        for i, vals in enumerate(columns):
            self.cols[i] = _append(self.cols[i], self.used, vals)
        self.start[pids] = self.used + np.cumsum(lengths) - lengths
        self.length[pids] = lengths
        self.used += total
        if self.used > 2 * self.live + 4096:
            self.compact()

    def compact(self) -> None:
        """Drop the garbage: keep only live rows, in partition-id order."""
        pids = np.flatnonzero(self.length)
        t, idx = self.gather(pids)
        self.cols = [None if c is None else c.take(idx) for c in self.cols]
        self.start[pids] = np.cumsum(t) - t
        self.used = self.live = int(t.sum())

    def snapshot(self, size: int) -> dict[str, Any]:
        """Live tails of partition ids below ``size``."""
        self.compact()
        cols = [
            None if c is None else (c.data.copy(), c.valid.copy(), c.type, c.kind)
            for c in self.cols
        ]
        return {
            "start": self.start[:size].copy(),
            "length": self.length[:size].copy(),
            "cols": cols,
        }

    def restore(self, state: dict[str, Any], remap: np.ndarray) -> None:
        """Load a snapshot whose partition ``i`` is now ``remap[i]``."""
        self.grow(len(remap))
        self.start[remap] = state["start"]
        self.length[remap] = state["length"]
        self.cols = [None if c is None else Vals(*c) for c in state["cols"]]
        self.used = self.live = int(state["length"].sum())


def _append(slab: Vals | None, used: int, vals: Vals) -> Vals:
    """``vals`` written into ``slab`` at row ``used`` (capacity doubles)."""
    need = used + len(vals.data)
    if slab is None:
        slab = Vals(np.empty(0, vals.data.dtype), np.empty(0, bool), vals.type, vals.kind)
    data, valid = slab.data, slab.valid
    if data.dtype != vals.data.dtype:
        data = data.astype(object if vals.data.dtype == object else np.result_type(data, vals.data))
    if need > len(data):
        cap = max(need, 2 * len(data), 64)
        data = np.concatenate([data[:used], np.zeros(cap - used, data.dtype)])
        valid = np.concatenate([valid[:used], np.zeros(cap - used, bool)])
    data[used:need] = vals.data
    valid[used:need] = vals.valid
    return Vals(data, valid, vals.type, vals.kind)


class Round:
    """One pass over the rows being released: layout and evaluated columns.

    Rows of a round (held-back rows first, then the new batch) are put in
    computation order ``comp``: grouped by partition, held-back rows first,
    then the batch's rows in ORDER BY order. Per partition ``g`` (ascending
    id ``pids[g]``) the round has ``cand[g]`` rows, of which the first ``m[g]``
    are released now. The *extended* column of an expression lays out, per
    partition, its carried tail (``t[g]`` rows) followed by its round rows;
    ``q`` are the extended positions of the released rows and ``r`` their row
    numbers in the partition.
    """

    def __init__(
        self,
        op: RowsWindowOp,
        rows: pa.RecordBatch,
        comp: np.ndarray,
        pids: np.ndarray,
        cand: np.ndarray,
        hold: np.ndarray,
    ) -> None:
        self.op, self.rows, self.comp, self.pids = op, rows, comp, pids
        self.cand, self.m = cand, cand - hold
        self.count = op.count[pids]
        self.t, self._tail_idx = op.tail.gather(pids)
        self.ext_len = self.t + cand
        self.ext_start = np.cumsum(self.ext_len) - self.ext_len
        self.base = self.count - self.t
        group = np.repeat(np.arange(len(pids)), cand)
        first = np.cumsum(cand) - cand
        within = np.arange(len(comp)) - first[group]
        self._cand_pos = within + (self.ext_start + self.t)[group]
        if hold.any():
            released = within < self.m[group]
            self.rel_rows, self.held_rows = comp[released], comp[~released]
            self.rel_group, within = group[released], within[released]
            self.q = self._cand_pos[released]
        else:
            self.rel_rows, self.held_rows = comp, comp[:0]
            self.rel_group, self.q = group, self._cand_pos
        self.r = within + self.count[self.rel_group]
        self._ext_src: np.ndarray | None = None
        self._vals: dict[Expr, Vals] = {}
        self._ext: dict[Expr, Vals] = {}
        self._frames: dict[int, Frames] = {}
        self._segments: Segments | None = None

    @property
    def size(self) -> int:
        """Number of released rows."""
        return len(self.rel_rows)

    @property
    def rel_pids(self) -> np.ndarray:
        """Partition id of each released row."""
        return self.pids[self.rel_group]

    def last_released(self) -> tuple[np.ndarray, np.ndarray]:
        """Partitions that released rows, and the index of their last released row."""
        has = np.flatnonzero(self.m)
        return self.pids[has], (np.cumsum(self.m) - 1)[has]

    @property
    def ext_src(self) -> np.ndarray:
        """Where each extended position comes from in ``[tail rows, round rows]``."""
        if self._ext_src is None:
            src = np.empty(int(self.ext_len.sum()), dtype=np.int64)
            tails = len(self._tail_idx)
            src[np.repeat(self.ext_start, self.t) + ranges(self.t)] = np.arange(tails)
            src[self._cand_pos] = tails + self.comp
            self._ext_src = src
        return self._ext_src

    def frames(self, preceding: int) -> Frames:
        """Frames of ``preceding`` rows over the extended columns."""
        if preceding not in self._frames:
            self._frames[preceding] = Frames(self.ext_len, self.base, self.q, self.r, preceding)
        return self._frames[preceding]

    @property
    def segments(self) -> Segments:
        """The released rows, one segment per partition."""
        if self._segments is None:
            self._segments = Segments(self.m)
        return self._segments

    def vals(self, expr: Expr) -> Vals:
        """``expr`` over the round's rows (in row order)."""
        if expr not in self._vals:
            self._vals[expr] = to_vals(self.op.evaluate(expr, self.rows))
        return self._vals[expr]

    def released(self, expr: Expr) -> Vals:
        """``expr`` at the released rows, in computation order."""
        return self.vals(expr).take(self.rel_rows)

    def ext(self, expr: Expr) -> Vals:
        """The extended column of ``expr``: carried tails followed by round rows."""
        if expr not in self._ext:
            here = self.vals(expr)
            tail = self.op.tail_column(expr, self._tail_idx, here)
            data = np.concatenate([tail.data, here.data])[self.ext_src]
            if tail.valid.all() and here.valid.all():
                valid = np.ones(len(data), dtype=bool)
            else:
                valid = np.concatenate([tail.valid, here.valid])[self.ext_src]
            self._ext[expr] = Vals(data, valid, here.type, here.kind)
        return self._ext[expr]

    def new_peer(self) -> np.ndarray:
        """Whether each released row starts a new group of ORDER BY peers."""
        peer = np.ones(self.size, dtype=bool)
        prev = np.maximum(self.q - 1, 0)
        for expr, _ in self.op.node.order_by:
            v = self.ext(expr)
            a_ok, b_ok = v.valid[self.q], v.valid[prev]
            same = np.asarray(v.data[self.q] == v.data[prev], dtype=bool)
            peer &= (a_ok & b_ok & same) | (~a_ok & ~b_ok)
        return (self.r == 0) | ~peer

    def new_tails(self, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Partitions whose tail changes, their new tail lengths and extended positions."""
        has = np.flatnonzero(self.m)
        kept = self.t[has] + self.m[has]
        lengths = np.minimum(kept, depth)
        pos = np.repeat(self.ext_start[has] + kept - lengths, lengths) + ranges(lengths)
        return self.pids[has], lengths, pos


class WindowFunction:
    """One function of a RowsWindow node, evaluated a round at a time.

    ``tail_exprs`` are the expressions whose last ``depth`` values per
    partition must be carried; ``lookahead`` is how many later rows a row waits
    for (LEAD).
    """

    depth = 0
    lookahead = 0
    tail_exprs: tuple[Expr, ...] = ()

    def __init__(self, name: str, call: WinCall) -> None:
        self.name = name
        self.call = call

    def compute(self, rnd: Round) -> Vals:
        """Values of the released rows, in computation order."""
        raise NotImplementedError

    def snapshot(self, size: int) -> dict[str, Any]:
        """Per-partition state for ids below ``size``."""
        return {}

    def restore(self, state: dict[str, Any], remap: np.ndarray) -> None:
        """Load a snapshot whose partition ``i`` is now ``remap[i]``."""
        return None


def _ints(values: np.ndarray) -> Vals:
    return Vals(values.astype(np.int64, copy=False), np.ones(len(values), bool), _INT64, "num")


class RowNumber(WindowFunction):
    """ROW_NUMBER(): 1, 2, ... per partition."""

    def compute(self, rnd: Round) -> Vals:
        return _ints(rnd.r + 1)


class Rank(WindowFunction):
    """RANK() and DENSE_RANK() over the ORDER BY values, continuing across batches."""

    depth = 1

    def __init__(self, name: str, call: WinCall, order: tuple[Expr, ...]) -> None:
        super().__init__(name, call)
        self.dense = call.fn == "dense_rank"
        self.tail_exprs = order
        self.last = np.zeros(0, dtype=np.int64)

    def compute(self, rnd: Round) -> Vals:
        self.last = grow(self.last, int(rnd.pids.max()) + 1, 0)
        new = rnd.new_peer()
        first = np.zeros(rnd.size, dtype=bool)
        first[(np.cumsum(rnd.m) - rnd.m)[rnd.m > 0]] = True
        carried = self.last[rnd.rel_pids]
        if self.dense:
            steps = np.cumsum(new)
            anchor = np.maximum.accumulate(np.where(first, np.arange(rnd.size), 0))
            out = carried + steps - steps[anchor] + new[anchor]
        else:
            anchor = np.maximum.accumulate(np.where(new | first, np.arange(rnd.size), 0))
            out = np.where(new, rnd.r + 1, carried)[anchor]
        pids, last = rnd.last_released()
        self.last[pids] = out[last]
        return _ints(out)

    def snapshot(self, size: int) -> dict[str, Any]:
        return {"last": grow(self.last, size, 0)[:size].copy()}

    def restore(self, state: dict[str, Any], remap: np.ndarray) -> None:
        self.last = np.zeros(len(remap), dtype=np.int64)
        self.last[remap] = state["last"]


class Shift(WindowFunction):
    """LAG(x, offset, default) and LEAD(x, offset, default)."""

    def __init__(self, name: str, call: WinCall) -> None:
        super().__init__(name, call)
        if len(call.args) != 1:
            raise PlanError(f"{call.fn.upper()} takes one argument, got {len(call.args)}")
        self.arg = call.args[0]
        offset = call.offset if call.fn == "lag" else -call.offset
        self.back = offset  # > 0 looks back (LAG), < 0 looks ahead (LEAD)
        if offset >= 0:
            self.depth, self.tail_exprs = offset, (self.arg,)
        else:
            self.lookahead = -offset

    def compute(self, rnd: Round) -> Vals:
        v = rnd.ext(self.arg)
        src = rnd.q - self.back
        if self.back >= 0:
            ok = rnd.r >= self.back
        else:
            ok = src < (rnd.ext_start + rnd.ext_len)[rnd.rel_group]
        out = v.take(np.where(ok, src, 0))
        out.valid &= ok
        if self.call.default is not None and not ok.all():
            default = rnd.op.evaluate(self.call.default, rnd.rows)
            d = to_vals(plain(default).cast(v.type)).take(rnd.rel_rows)
            out.data = np.where(ok, out.data, d.data)
            out.valid = np.where(ok, out.valid, d.valid)
        return out


class FrameAggregate(WindowFunction):
    """SUM/AVG/MIN/MAX/COUNT/COUNT(*) over ``preceding`` rows and the current row."""

    _UFUNCS = {"sum": np.add, "avg": np.add, "min": np.minimum, "max": np.maximum}

    def __init__(self, name: str, call: WinCall) -> None:
        super().__init__(name, call)
        self.fn = call.fn
        want = 0 if self.fn == "count_star" else 1
        if len(call.args) != want:
            raise PlanError(f"{self.fn.upper()} takes {want} argument(s), got {len(call.args)}")
        if call.preceding is not None and call.preceding < 0:
            raise PlanError(f"ROWS frame of {self.fn.upper()} must not reach forward")
        self.arg = call.args[0] if call.args else None
        self.preceding = call.preceding
        if self.preceding is not None and self.arg is not None:
            self.depth, self.tail_exprs = self.preceding, (self.arg,)
        self.carry: dict[str, np.ndarray] = {}  # unbounded frames: per-partition running value
        self.ident: dict[str, Any] = {}

    def compute(self, rnd: Round) -> Vals:
        if self.arg is None:
            span = rnd.r if self.preceding is None else np.minimum(rnd.r, self.preceding)
            return _ints(span + 1)
        v = rnd.released(self.arg) if self.preceding is None else rnd.ext(self.arg)
        count = self._count(rnd, v.valid)
        if self.fn == "count":
            return _ints(count)
        if v.kind == "obj" and self.fn in ("sum", "avg"):
            raise ExecutionError(f"{self.fn.upper()} of {v.type} is not defined ({self.name})")
        if v.kind == "obj":
            return self._ordinal_extreme(rnd, v, count)
        ufunc = self._UFUNCS[self.fn]
        data = v.data
        if v.kind == "dec" and self.fn in ("sum", "avg") and data.dtype != object:
            data = _widen_for_sum(data, self.preceding)
        if not v.valid.all():
            data = np.where(v.valid, data, identity_of(ufunc, data))
        total = self._reduce(rnd, ufunc, data, "value")
        return self._result(v, total, count)

    def _count(self, rnd: Round, valid: np.ndarray) -> np.ndarray:
        if self.preceding is not None:
            return rnd.frames(self.preceding).count(valid)
        ints = valid.astype(np.int64)
        carry = self._carry("count", ints, np.add, int(rnd.pids.max()) + 1)
        acc = seg_cumsum_int(ints, rnd.m, carry[rnd.pids])
        pids, last = rnd.last_released()
        carry[pids] = acc[last]
        return acc

    def _reduce(self, rnd: Round, ufunc: np.ufunc, data: np.ndarray, role: str) -> np.ndarray:
        if self.preceding is not None:
            return rnd.frames(self.preceding).reduce(ufunc, data)
        carry = self._carry(role, data, ufunc, int(rnd.pids.max()) + 1)
        acc = rnd.segments.accumulate(ufunc, data, carry[rnd.pids])
        pids, last = rnd.last_released()
        carry[pids] = acc[last]
        return acc

    def _carry(self, role: str, data: np.ndarray, ufunc: np.ufunc, size: int) -> np.ndarray:
        ident = self.ident.setdefault(role, identity_of(ufunc, data))
        carry = self.carry.get(role)
        if carry is None:
            carry = np.full(0, ident, dtype=data.dtype)
        elif carry.dtype != data.dtype and data.dtype == object:
            carry = carry.astype(object)
        self.carry[role] = carry = grow(carry, size, ident)
        return carry

    def _result(self, v: Vals, total: np.ndarray, count: np.ndarray) -> Vals:
        has = count > 0
        if self.fn in ("min", "max"):
            return Vals(total, has, v.type, v.kind)
        if v.kind == "dec":
            return _decimal_result(self.fn, v.type, total, count, has)
        floating = total.dtype == np.float64
        if self.fn == "sum":
            out_type = pa.float64() if floating else _INT64
            return Vals(total + 0.0 if floating else total, has, out_type, "num")  # no -0.0
        with np.errstate(all="ignore"):
            avg = total / np.maximum(count, 1)
        return Vals(avg.astype(np.float64), has, pa.float64(), "num")

    def _ordinal_extreme(self, rnd: Round, v: Vals, count: np.ndarray) -> Vals:
        """MIN/MAX of strings and other non-numeric types through sort ranks."""
        ufunc = self._UFUNCS[self.fn]
        pool, carried = v.data[v.valid], None
        if self.preceding is None:
            size = int(rnd.pids.max()) + 1
            carried = grow(self.carry.get("object", np.empty(0, object)), size, None)
            self.carry["object"], self.ident["object"] = carried, None
            prior = carried[rnd.pids]
            pool = np.concatenate([pool, prior[prior != None]])  # noqa: E711
        uniq, codes = np.unique(pool, return_inverse=True)
        data = np.full(len(v.data), identity_of(ufunc, codes), dtype=np.int64)
        data[v.valid] = codes[: int(v.valid.sum())]
        if self.preceding is not None:
            best = self._reduce(rnd, ufunc, data, "codes")
        else:
            assert carried is not None
            best = self._running_codes(rnd, ufunc, data, carried, uniq)
        found = np.clip(best, 0, max(len(uniq) - 1, 0))
        values = uniq[found] if len(uniq) else np.full(len(best), None, dtype=object)
        return Vals(values.astype(object), count > 0, v.type, "obj")

    def _running_codes(
        self, rnd: Round, ufunc: np.ufunc, data: np.ndarray, carried: np.ndarray, uniq: np.ndarray
    ) -> np.ndarray:
        prior = carried[rnd.pids]
        init = np.full(len(prior), identity_of(ufunc, data), dtype=np.int64)
        known = prior != None  # noqa: E711
        init[known] = np.searchsorted(uniq, prior[known])
        acc = rnd.segments.accumulate(ufunc, data, init)
        pids, last = rnd.last_released()
        ok = (acc[last] >= 0) & (acc[last] < len(uniq))
        carried[pids[ok]] = uniq[acc[last][ok]]
        return acc

    def snapshot(self, size: int) -> dict[str, Any]:
        return {role: (arr[:size].copy(), self.ident[role]) for role, arr in self.carry.items()}

    def restore(self, state: dict[str, Any], remap: np.ndarray) -> None:
        self.carry, self.ident = {}, {}
        for role, (arr, ident) in state.items():
            out = np.full(len(remap), ident, dtype=arr.dtype)
            out[remap[: len(arr)]] = arr
            self.carry[role], self.ident[role] = out, ident


def _widen_for_sum(data: np.ndarray, preceding: int | None) -> np.ndarray:
    """Unscaled decimals as Python ints when an int64 sum could overflow."""
    if preceding is None or len(data) == 0:
        return data.astype(object)
    bound = int(np.abs(data).max()) * (preceding + 1)
    return data if bound < (1 << 62) else data.astype(object)


def _decimal_result(
    fn: str, t: pa.DataType, total: np.ndarray, count: np.ndarray, has: np.ndarray
) -> Vals:
    """SUM as DECIMAL(38, s); AVG as DECIMAL(38, max(s, 6)) rounded half away from zero."""
    if fn == "sum":
        return Vals(total, has, pa.decimal128(38, t.scale), "dec")
    scale = min(38, max(t.scale, 6))
    num = total.astype(object) * (10 ** (scale - t.scale))
    den = np.maximum(count, 1).astype(object)
    quotient = (2 * np.abs(num) + den) // (2 * den)
    return Vals(np.where(num < 0, -quotient, quotient), has, pa.decimal128(38, scale), "dec")


def make_function(name: str, call: WinCall, order: tuple[Expr, ...]) -> WindowFunction:
    """The evaluator of one window call."""
    if call.fn not in WINDOW_FUNCTIONS:
        raise UnsupportedError(f"unknown window function {call.fn.upper()}")
    if call.fn == "row_number":
        return RowNumber(name, call)
    if call.fn in ("rank", "dense_rank"):
        return Rank(name, call, order)
    if call.fn in ("lag", "lead"):
        return Shift(name, call)
    return FrameAggregate(name, call)


class RowsWindowOp:
    """Operator for :class:`~flowsql.plan.nodes.RowsWindow` (see module docstring)."""

    name = "rows_window"

    def __init__(self, node: RowsWindow, ctx: OperatorContext) -> None:
        self.node = node
        self.ctx = ctx
        order = tuple(expr for expr, _ in node.order_by)
        self.funcs = [make_function(name, call, order) for name, call in node.funcs]
        self.tail_exprs = list(dict.fromkeys(e for f in self.funcs for e in f.tail_exprs))
        self.tail = TailStore(max((f.depth for f in self.funcs), default=0), len(self.tail_exprs))
        self.lookahead = max((f.lookahead for f in self.funcs), default=0)
        self.keys = GroupKeys(tuple(f"p{i}" for i in range(len(node.partition_by))))
        self.count = np.zeros(0, dtype=np.int64)  # rows released per partition
        self.pending: pa.RecordBatch | None = None  # held back for LEAD, arrival order
        self.pending_order = np.zeros(0, dtype=np.int64)  # their computation order
        self._compiled: dict[Expr, Evaluator] = {}

    def evaluate(self, expr: Expr, batch: pa.RecordBatch, decode: bool = True) -> pa.Array:
        """``expr`` over ``batch`` (compiled once); dictionaries decoded unless not ``decode``."""
        if expr not in self._compiled:
            self._compiled[expr] = compile_expression(expr)
        out = self._compiled[expr](batch)
        return plain(out) if decode else out

    def tail_column(self, expr: Expr, idx: np.ndarray, like: Vals) -> Vals:
        """Carried tail values of ``expr`` at slab rows ``idx`` (blank if not carried)."""
        if expr in self.tail_exprs:
            got = self.tail.column(self.tail_exprs.index(expr), idx)
            if got is not None:
                return got
        blank = np.zeros(len(idx), dtype=like.data.dtype)
        return Vals(blank, np.zeros(len(idx), bool), like.type, like.kind)

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Compute the functions for ``batch``; emit the rows that are complete."""
        if batch.num_rows == 0:
            return []
        return self._run(batch, final=False)

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        """ROWS frames do not depend on event time."""
        return []

    def flush(self) -> list[pa.RecordBatch]:
        """End of input: release rows held back for LEAD."""
        if self.pending is None:
            return []
        return self._run(None, final=True)

    def _run(self, batch: pa.RecordBatch | None, final: bool) -> list[pa.RecordBatch]:
        rows, n_held = self._round_rows(batch)
        gid = self.keys.encode(
            [self.evaluate(e, rows, decode=False) for e in self.node.partition_by],
            rows.num_rows,
        )
        self._grow(self.keys.count)
        local, pids = _local_ids(gid, self.keys.count)
        first = np.concatenate([self.pending_order, n_held + self._batch_order(batch)])
        comp = first[np.argsort(_narrow(local[first], len(pids)), kind="stable")]
        cand = np.bincount(local, minlength=len(pids))
        hold = np.zeros_like(cand) if final else np.minimum(cand, self.lookahead)
        rnd = Round(self, rows, comp, pids, cand, hold)
        results = [f.compute(rnd) for f in self.funcs] if rnd.size else []
        self._keep_tails(rnd)
        self.count[pids] += rnd.m
        self._hold(rows, rnd.held_rows)
        return self._emit(rows, rnd, results)

    def _round_rows(self, batch: pa.RecordBatch | None) -> tuple[pa.RecordBatch, int]:
        held = self.pending
        if held is None:
            assert batch is not None
            return batch, 0
        if batch is None:
            return held, held.num_rows
        if held.schema != batch.schema:
            held = held.cast(batch.schema)
        return pa.concat_batches([held, batch]), held.num_rows

    def _batch_order(self, batch: pa.RecordBatch | None) -> np.ndarray:
        """Positions of the batch's rows in ORDER BY order (stable, NULLs last)."""
        if batch is None:
            return np.zeros(0, dtype=np.int64)
        n = batch.num_rows
        if not self.node.order_by:
            return np.arange(n, dtype=np.int64)
        keys = [self.evaluate(e, batch) for e, _ in self.node.order_by]
        if len(keys) == 1 and not keys[0].null_count and _is_number(keys[0].type):
            values = to_vals(keys[0]).data
            ascending = self.node.order_by[0][1]
            step = np.diff(values)
            if bool((step >= 0).all() if ascending else (step <= 0).all()):
                return np.arange(n, dtype=np.int64)
            if ascending:
                return np.argsort(values, kind="stable")
        table = pa.table({f"k{i}": k for i, k in enumerate(keys)})
        sort_keys = [
            (f"k{i}", "ascending" if asc else "descending")
            for i, (_, asc) in enumerate(self.node.order_by)
        ]
        order = pc.sort_indices(table, sort_keys=sort_keys)  # NULLs last
        return order.to_numpy().astype(np.int64)

    def _grow(self, size: int) -> None:
        self.count = grow(self.count, size, 0)
        self.tail.grow(size)

    def _keep_tails(self, rnd: Round) -> None:
        if not self.tail.depth or not self.tail_exprs or not rnd.size:
            return
        pids, lengths, pos = rnd.new_tails(self.tail.depth)
        self.tail.replace(pids, lengths, [rnd.ext(e).take(pos) for e in self.tail_exprs])

    def _hold(self, rows: pa.RecordBatch, held: np.ndarray) -> None:
        if len(held) == 0:
            self.pending, self.pending_order = None, np.zeros(0, dtype=np.int64)
            return
        arrival = np.sort(held)
        self.pending = rows.take(pa.array(arrival))
        self.pending_order = np.searchsorted(arrival, held)

    def _emit(self, rows: pa.RecordBatch, rnd: Round, results: list[Vals]) -> list[pa.RecordBatch]:
        if not rnd.size:
            return []
        if rnd.size == rows.num_rows:
            out_rows, dest = rows, rnd.rel_rows
        else:
            released = np.zeros(rows.num_rows, dtype=bool)
            released[rnd.rel_rows] = True
            picked = np.flatnonzero(released)
            slot = np.zeros(rows.num_rows, dtype=np.int64)
            slot[picked] = np.arange(len(picked))
            out_rows, dest = rows.take(pa.array(picked)), slot[rnd.rel_rows]
        columns = list(out_rows.columns)
        for vals in results:
            data = np.empty_like(vals.data)
            valid = np.empty_like(vals.valid)
            data[dest], valid[dest] = vals.data, vals.valid
            columns.append(Vals(data, valid, vals.type, vals.kind).to_arrow())
        names = out_rows.schema.names + [f.name for f in self.funcs]
        return [pa.RecordBatch.from_arrays(columns, names=names)]

    def snapshot(self) -> dict[str, Any]:
        """Partition keys, counters, tails, function state and held-back rows."""
        size = self.keys.count
        keyed = size and self.node.partition_by
        keys = self.keys.decode(np.arange(size, dtype=np.int64)) if keyed else []
        return {
            "size": size,
            "keys": list(keys),
            "count": grow(self.count, size, 0)[:size].copy(),
            "tail": self.tail.snapshot(size),
            "funcs": [f.snapshot(size) for f in self.funcs],
            "pending": self.pending,
            "pending_order": self.pending_order.copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot` output."""
        self.keys = GroupKeys(self.keys.names)
        size = state["size"]
        remap = self.keys.encode(list(state["keys"]), size) if size else np.zeros(0, np.int64)
        self.count = np.zeros(size, dtype=np.int64)
        self.count[remap] = state["count"]
        self.tail = TailStore(self.tail.depth, len(self.tail_exprs))
        self.tail.restore(state["tail"], remap)
        for f, fs in zip(self.funcs, state["funcs"], strict=True):
            f.restore(fs, remap)
        self.pending = state["pending"]
        self.pending_order = np.asarray(state["pending_order"], dtype=np.int64)

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        """One state per partition: the PARTITION BY values it owns, with their
        counters, tails and function state, and the held-back rows routed to it
        (see ``flowsql.exec.rows_state`` for the layout)."""
        if router.num_partitions == 1:
            return [state]
        if arrival:
            state = rows_state.numbered(state)
        owner = self._owners(state, router)
        pending = state["pending"]
        routed = router.partitions(pending) if pending is not None else np.zeros(0, np.uint16)
        return [
            rows_state.select(state, np.flatnonzero(owner == p), np.flatnonzero(routed == p))
            for p in range(router.num_partitions)
        ]

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """States of disjoint PARTITION BY values as one; held-back rows in
        arrival order."""
        if len(states) == 1:
            return rows_state.by_arrival(states[0])
        return rows_state.concat(states)

    def _owners(self, state: dict[str, Any], router: KeyRouter) -> np.ndarray:
        """The partition of each PARTITION BY value (id) of ``state``: a routing
        key column that is not a PARTITION BY column hashes as NULL."""
        if not int(state["size"]):
            return np.zeros(0, np.uint16)
        keys = list(state["keys"])
        first = reversed(list(enumerate(self.node.partition_by)))  # the first match wins
        where = {e.name: i for i, e in first if isinstance(e, Col) and i < len(keys)}
        return router.partitions_of(
            [keys[where[c]] if c in where else None for c in router.key_columns]
        )


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)


def _local_ids(gid: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch-local dense ids (ascending partition id) and the partition id of each."""
    if count <= 4 * len(gid) + 1024:
        present = np.bincount(gid, minlength=count)
        pids = np.flatnonzero(present)
        table = np.zeros(count, dtype=np.int64)
        table[pids] = np.arange(len(pids))
        return table[gid], pids
    found = np.unique(gid, return_inverse=True)
    return found[1].astype(np.int64), found[0]


def _narrow(local: np.ndarray, groups: int) -> np.ndarray:
    """Local ids in the smallest dtype (numpy sorts 16-bit keys by radix)."""
    if groups <= 1 << 16:
        return local.astype(np.uint16)
    return local
