"""The GROUP BY operator: keys, aggregates, windows, watermarks, late data, emit modes.

One batch goes through these steps, all vectorized:

1. Event times come from ``_timestamp``; each row's watermark at arrival is
   the watermark base before it minus the allowed lateness: the max event time
   of every earlier record (``EventClock``), or the ``__prior_max_event_time``
   column stamped by the engine or the V2 coordinator (out-of-order batches;
   with several input partitions always: the minimum over the partitions,
   ``flowsql.exec.watermarks``). That per-record watermark is what makes
   results independent of batch size and of the partitions' interleaving.
2. Group keys become persistent dense ids (``GroupKeys``).
3. The windower assigns rows to windows by integer division. A row whose
   windows all closed before it arrived is late: counted, and dead-lettered
   with ``late.data.strategy = 'dlq'``.
4. The batch's (window, group) pairs map to dense slots (``SlotTable``) and
   every aggregator folds the rows into its state arrays at those slots.
   - TUMBLING: one slot per (window, group).
   - SLIDING: one slot per (pane, group), panes being ``gcd(size, advance)``
     long; a window's row merges its panes when emitted. Windows that close
     while a batch arrives are emitted (and sealed) before the rest of the
     batch is folded, so a pane never feeds a window closed before the row.
   - SESSION: rows merge with the open sessions of their keys
     (``plan_sessions``); chunks of the batch during which a touched session
     could close are split until record-at-a-time semantics hold.
5. EMIT CHANGES returns the current row of every (group, window) the batch changed.

``advance(t)`` sets the watermark to ``t - lateness`` and, for windowed
queries, emits (EMIT FINAL) and frees every window whose end is at or below
it; ``flush()`` does the same at +infinity and emits non-windowed EMIT FINAL
groups. Rows come out ordered by (window end, window start, key values), keys
ascending with NULLs last.

Snapshot format (``snapshot()``, picklable; ``restore``, ``merge_state``,
``split`` and ``merge`` read it)::

    {"format": "flowsql.aggregate/1", "operator": name, "state_key": str,
     "keys": [key names], "key_types": [pa.DataType], "arg_types": [pa.DataType | None],
     "max_event_time": int | None,   # the operator's max event time seen
     "next_window": int | None,      # sliding: first window index not yet emitted
     "groups": pa.Table}   # one row per live (group, window), (group, pane) or
                           # session: key columns (output names and types),
                           # _window_start, _window_end, __max_ts (non-windowed
                           # _timestamp), then "<agg name>.<field>" state columns

State is stored by key *values*, so it can be split by key to move a job to
more partitions (``split``: the router hashes the groups' key values) and
merged back (``merge``: disjoint groups concatenated). ``merge_state`` also
combines partial aggregates of the same groups (two-phase aggregation).

Known limits: EMIT CHANGES on sessions does not retract a session that a later
record merged into another (its last row stays the pre-merge value); group
keys and COUNT(DISTINCT) values are remembered for the operator's lifetime;
SUM/AVG(DISTINCT) are not supported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError
from flowsql.exec.aggregators import Aggregator, Grouping, make_aggregator
from flowsql.exec.expressions import compile_expr
from flowsql.exec.groupkeys import GroupKeys, grow
from flowsql.exec.operator import KeyRouter, OperatorContext
from flowsql.exec.state import key_columns, merge_values, split_table
from flowsql.exec.windows import (
    END_OF_TIME,
    NO_TIME,
    Arrival,
    EventClock,
    Global,
    SessionTable,
    Sliding,
    SlotTable,
    Tumbling,
    Windower,
    local_groups,
    plan_sessions,
)
from flowsql.plan.expr import Col, Expr
from flowsql.plan.nodes import Aggregate, WindowSpec
from flowsql.records import TIMESTAMP, WINDOW_END, WINDOW_START, DeadLetter

__all__ = ["PRIOR_MAX", "AggregateOp"]

#: Column the engine or a V2 coordinator may add: the watermark base before each row.
PRIOR_MAX = "__prior_max_event_time"
MAX_TS = "__max_ts"
SNAPSHOT_FORMAT = "flowsql.aggregate/1"


def check_snapshot(state: dict[str, Any], state_key: str) -> None:
    """Refuse a snapshot that is not an aggregate's or is for another query."""
    if state.get("format") != SNAPSHOT_FORMAT:
        raise ExecutionError(f"not an aggregate snapshot (format {state.get('format')!r})")
    if state.get("state_key") != state_key:
        raise ExecutionError(
            f"snapshot is for {state.get('state_key')}, not {state_key}: the query changed"
        )


Evaluator = Callable[[pa.RecordBatch], pa.Array]


def evaluator(expr: Expr) -> Evaluator:
    """A batch -> column function for a key or argument expression."""
    if isinstance(expr, Col):
        name = expr.name

        def column(batch: pa.RecordBatch) -> pa.Array:
            idx = batch.schema.get_field_index(name)
            if idx < 0:
                raise ExecutionError(
                    f"column '{name}' is not in the aggregate input"
                    f" (columns: {', '.join(batch.schema.names)})"
                )
            return batch.column(idx)

        return column
    return compile_expr(expr)


def make_windower(spec: WindowSpec | None) -> Windower:
    """The windower for a window spec (sessions are handled by the operator)."""
    if spec is None or spec.kind == "session":
        return Global()
    if spec.kind == "tumbling":
        return Tumbling(spec.size_ms)
    return Sliding(spec.size_ms, spec.advance_ms)


class AggregateOp:
    """Compiled :class:`~flowsql.plan.nodes.Aggregate` node.

    Args:
        node: the plan node.
        ctx: where late-record counts and dead letters go.
    """

    def __init__(self, node: Aggregate, ctx: OperatorContext) -> None:
        self.node = node
        self.ctx = ctx
        self.windowed = node.window is not None
        self.session_gap = (
            node.window.gap_ms if node.window and node.window.kind == "session" else 0
        )
        self.windower = make_windower(node.window)
        self.sliding = isinstance(self.windower, Sliding)
        self.name = f"aggregate({self.window_name})"
        self.emit_changes = node.emit == "changes"
        self._key_evals = [evaluator(e) for _, e in node.keys]
        self._arg_exprs, self._arg_index = _dedupe_args(node)
        self._arg_evals = [evaluator(e) for e in self._arg_exprs]
        self._reset_state()

    @property
    def window_name(self) -> str:
        w = self.node.window
        if w is None:
            return "no window"
        return {
            "tumbling": f"tumbling {w.size_ms}ms",
            "sliding": f"sliding {w.size_ms}ms/{w.advance_ms}ms",
            "session": f"session gap {w.gap_ms}ms",
        }[w.kind]

    @property
    def state_key(self) -> str:
        """Changes when keys, aggregates or window change (old state is then invalid)."""
        aggs = ",".join(f"{n}={c.fn}{'!' if c.distinct else ''}" for n, c in self.node.aggs)
        keys = ",".join(n for n, _ in self.node.keys)
        return f"aggregate[{keys}|{aggs}|{self.window_name}]"

    def _reset_state(self) -> None:
        self.clock = EventClock(self.node.allowed_lateness_ms)
        self.keys = GroupKeys(tuple(n for n, _ in self.node.keys))
        self.aggs: list[Aggregator] = []
        self._started = False
        self._arg_types: list[pa.DataType] = []
        self.table: SlotTable | SessionTable = SessionTable() if self.session_gap else SlotTable()
        self._capacity = 0
        self._max_ts = np.empty(0, dtype=np.int64)
        self._min_end = END_OF_TIME  # no live window ends before this
        self._rank: np.ndarray | None = None
        self._next_k = NO_TIME  # sliding: windows below this index are emitted/closed
        self._scratch: list[Aggregator] = []  # sliding: merges panes into windows
        self._pending: list[pa.RecordBatch] = []  # windows closed inside process()
        self._early: list[pa.RecordBatch] = []  # EMIT CHANGES rows of those windows

    # ------------------------------------------------------------------ process

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Fold one batch in; return windows it closed (sliding) and, with EMIT
        CHANGES, the rows it changed."""
        if batch.num_rows == 0:
            return []
        arrival = self.clock.arrive(_timestamps(batch), _prior(batch))
        keys = [_as_array(f(batch), batch.num_rows) for f in self._key_evals]
        gid = self.keys.encode(keys, batch.num_rows)
        args = self._args(batch)
        if self.session_gap:
            changed = self._process_sessions(batch, arrival, gid, args)
        elif self.sliding:
            changed = self._process_sliding(batch, arrival, gid, args)
        else:
            changed = self._process_windows(batch, arrival, gid, args)
        self.clock.observe(arrival)
        out, self._pending = self._pending, []
        if self.emit_changes:
            early, self._early = self._early, []
            if len(changed):
                early.append(self._window_changes(changed) if self.sliding else self._rows(changed))
            early = [b for b in early if b.num_rows]
            out += [pa.concat_batches(early)] if len(early) > 1 else early
        return out

    def _process_windows(
        self, batch: pa.RecordBatch, arrival: Arrival, gid: np.ndarray, args: list[pa.Array]
    ) -> np.ndarray:
        a = self.windower.assign(arrival)
        rows, window, ts, wm = None, a.window, arrival.ts, arrival.watermarks
        if self.windowed and wm is not None:
            open_ = self.windower.bounds(window)[1] > wm
            if not open_.all():
                rows = np.flatnonzero(open_)
                self._report_late(batch, np.flatnonzero(~open_), wm, ts)
                window = window[rows]
        return self._fold(rows, window, a.low, a.high, gid, ts, args)

    def _fold(
        self,
        rows: np.ndarray | None,
        window: np.ndarray,
        low: int,
        high: int,
        gid: np.ndarray,
        ts: np.ndarray,
        args: list[pa.Array],
    ) -> np.ndarray:
        """Aggregate rows (None = all) into their (window, group) slots."""
        if rows is not None and len(rows) == 0:
            return rows
        assert isinstance(self.table, SlotTable)
        g_rows, groups = (gid if rows is None else gid[rows]), self.keys.count
        if high == low and groups <= 4 * len(g_rows):
            # One window, few groups: group ids are the local groups (no compaction).
            counts = np.bincount(g_rows, minlength=groups)
            slots, capacity = self.table.window_slots(low, counts)
            g = Grouping(g_rows, groups, rows, ts if rows is None else ts[rows], counts)
            changed = slots[counts > 0] if self.emit_changes else slots[:0]
        else:
            lg = local_groups(window, g_rows, groups, low, high)
            slots, capacity = self.table.lookup(lg.window, lg.gid)
            g = Grouping(lg.inv, len(lg.gid), rows, ts if rows is None else ts[rows], lg.counts)
            changed = slots
        self._grow(capacity)
        g.slots = slots
        self._update(g, args)
        if isinstance(self.windower, Tumbling):  # cheap bound: the batch's first window
            self._min_end = min(self._min_end, (low + 1) * self.windower.size)
        elif self.windowed:
            first = int(self._first_end(np.array([low]))[0])
            self._min_end = min(self._min_end, first)
        return changed

    def _first_end(self, window: np.ndarray) -> np.ndarray:
        """End of the first window still to be emitted that state ``window`` feeds."""
        if isinstance(self.windower, Sliding):
            k = np.maximum(self.windower.windows_of(window)[0], self._next_k)
            return self.windower.window_bounds(k)[1]
        return self.windower.bounds(window)[1]

    def _update(self, g: Grouping, args: list[pa.Array]) -> None:
        for agg, idx in zip(self.aggs, self._arg_index, strict=True):
            agg.update(g, [args[i] for i in idx])
        if not self.windowed:
            np.maximum.at(self._max_ts, g.row_slots(), g.ts)

    # ------------------------------------------------------------------ sliding

    def _process_sliding(
        self, batch: pa.RecordBatch, arrival: Arrival, gid: np.ndarray, args: list[pa.Array]
    ) -> np.ndarray:
        # Rows go to panes. Windows that close while the batch arrives are
        # emitted (and sealed) before the rows that follow, so a pane never
        # feeds a window that closed before the row arrived.
        assert isinstance(self.windower, Sliding)
        ts, wm = arrival.ts, self.clock.watermarks(arrival)
        a = self.windower.assign(arrival)
        late = self.windower.last_end(ts) <= wm
        rows = np.arange(len(ts))
        if late.any():
            self._report_late(batch, np.flatnonzero(late), wm, ts)
            rows = np.flatnonzero(~late)
        changed: list[np.ndarray] = []
        closed_at = None
        while len(rows):
            cut = self._next_cut(a.window[rows], wm[rows])
            if cut == 0 and closed_at == int(wm[rows[0]]):
                cut = 1  # already closed at this watermark: nothing more can close
            if cut:
                part = rows[:cut]
                changed.append(self._fold(part, a.window[part], a.low, a.high, gid, ts, args))
            if cut < len(rows):
                closed_at = int(wm[rows[cut]])
                self._close_inside(closed_at, changed)
            rows = rows[cut:]
        return np.unique(np.concatenate(changed)) if changed else np.empty(0, dtype=np.int64)

    def _close_inside(self, watermark: int, changed: list[np.ndarray]) -> None:
        """Close windows in the middle of a batch; with EMIT CHANGES first emit
        the windows the batch changed that are closing now."""
        assert isinstance(self.windower, Sliding)
        if self.emit_changes and changed:
            k_max = (watermark - self.windower.size) // self.windower.advance
            panes = np.unique(np.concatenate(changed))
            if k_max >= self._next_k:
                self._early.append(self._window_changes(panes, k_max))
        self._pending += self._close(watermark)

    def _next_cut(self, panes: np.ndarray, wm: np.ndarray) -> int:
        """Rows before the first one whose watermark closes a window that the
        state or an earlier (or its own) row feeds."""
        ends = self._first_end(panes)
        if int(wm[-1]) < min(self._min_end, int(ends.min())):
            return len(panes)
        limit = np.minimum(np.minimum.accumulate(ends), self._min_end)
        return int(np.argmax(wm >= limit)) if bool((wm >= limit).any()) else len(panes)

    def _close_sliding(self, watermark: int) -> list[pa.RecordBatch]:
        assert isinstance(self.windower, Sliding)
        w = self.windower
        k_max = (watermark - w.size) // w.advance  # last window with end <= watermark
        assert isinstance(self.table, SlotTable)
        live = self.table.live_slots()
        first, last = w.windows_of(self.table.window[live])
        first = np.maximum(first, self._next_k)
        upto = np.minimum(last, k_max)
        out: list[pa.RecordBatch] = []
        if not self.emit_changes and bool((upto >= first).any()):
            out.append(self._window_rows(*self._window_pairs(live, first, upto)))
        self._next_k = max(self._next_k, k_max + 1)
        self._free(live[last <= k_max])
        rest = live[last > k_max]
        self._min_end = (
            int(self._first_end(self.table.window[rest]).min()) if len(rest) else END_OF_TIME
        )
        return out

    def _window_pairs(
        self, panes: np.ndarray, first: np.ndarray, last: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (window, group) pairs fed by pane slots over window ranges."""
        assert isinstance(self.table, SlotTable)
        count = np.maximum(last - first + 1, 0)
        rep = np.repeat(np.arange(len(panes)), count)
        offset = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
        k = first[rep] + offset
        gid = self.table.gid[panes][rep]
        if len(k) == 0:
            return k, gid
        lg = local_groups(k, gid, self.keys.count, int(k.min()), int(k.max()))
        return lg.window, lg.gid

    def _window_changes(self, panes: np.ndarray, upto: int | None = None) -> pa.RecordBatch:
        """Current rows of the open windows (up to index ``upto``) fed by changed panes."""
        assert isinstance(self.windower, Sliding) and isinstance(self.table, SlotTable)
        first, last = self.windower.windows_of(self.table.window[panes])
        last = last if upto is None else np.minimum(last, upto)
        return self._window_rows(*self._window_pairs(panes, np.maximum(first, self._next_k), last))

    def _window_rows(self, k: np.ndarray, gid: np.ndarray) -> pa.RecordBatch:
        """Rows of sliding windows ``k`` for groups ``gid``: their panes merged."""
        assert isinstance(self.windower, Sliding)
        w = self.windower
        start, end = w.window_bounds(k)
        order = self._order_by(gid, start, end)
        k, gid, start, end = k[order], gid[order], start[order], end[order]
        idx = np.arange(len(k))
        for sc in self._scratch:
            sc.initialize(len(k))
        first = w.first_pane(k)
        assert isinstance(self.table, SlotTable)
        for j in range(w.panes_per_window):
            slots = self.table.find(first + j, gid)
            have = slots >= 0
            if not have.any():
                continue
            for agg, sc in zip(self.aggs, self._scratch, strict=True):
                sc.merge(idx[have], agg.extract(slots[have]))
        results = [sc.result(idx) for sc in self._scratch]
        for sc in self._scratch:
            sc.reset(idx)
        return self._build(gid, start, end, end - 1, results)

    # ----------------------------------------------------------------- sessions

    def _process_sessions(
        self, batch: pa.RecordBatch, arrival: Arrival, gid: np.ndarray, args: list[pa.Array]
    ) -> np.ndarray:
        ts, wm = arrival.ts, self.clock.watermarks(arrival)
        late = ts + self.session_gap <= wm
        if late.any():
            self._report_late(batch, np.flatnonzero(late), wm, ts)
        changed: list[np.ndarray] = []
        self._session_chunk(np.flatnonzero(~late), ts, gid, wm, args, changed)
        if not changed:
            return np.empty(0, dtype=np.int64)
        slots = np.unique(np.concatenate(changed))
        return slots[self.table.live[slots]]

    def _session_chunk(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        gid: np.ndarray,
        wm: np.ndarray,
        args: list[pa.Array],
        changed: list[np.ndarray],
    ) -> None:
        # Rows are in arrival order. A chunk is applied at once only when no
        # session it touches can close while it arrives; otherwise it is halved.
        if len(rows) == 0:
            return
        assert isinstance(self.table, SessionTable)
        c_gid, c_ts, c_wm = gid[rows], ts[rows], wm[rows]
        open_slots = self.table.open_for(c_gid, int(c_wm.min()))
        plan = plan_sessions(c_gid, c_ts, self.session_gap, self.table, open_slots, int(c_wm.max()))
        if plan is None:
            half = len(rows) // 2
            self._session_chunk(rows[:half], ts, gid, wm, args, changed)
            self._session_chunk(rows[half:], ts, gid, wm, args, changed)
            return
        for dst, src in plan.merges:
            for agg in self.aggs:
                agg.merge(dst, agg.extract(src))
                agg.reset(src)
            self.table.release(src)
        new = plan.target < 0
        if new.any():
            plan.target[new] = self.table.allocate(plan.gid[new], plan.start[new], plan.end[new])
            self._grow(self.table.capacity)
        self.table.start[plan.target] = plan.start
        self.table.end[plan.target] = plan.end
        self._min_end = min(self._min_end, int(plan.end.min()))
        g = Grouping(plan.inv, plan.size, rows, c_ts)
        g.slots = plan.target
        self._update(g, args)
        changed.append(plan.target.copy())

    # ------------------------------------------------------------ watermark / end

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        """Event time reached ``event_time_ms``: close windows ending at or before
        the watermark (emitting them with EMIT FINAL)."""
        watermark = self.clock.advance(event_time_ms)
        if not self.windowed:
            return []
        out = self._close(watermark) if watermark >= self._min_end else []
        if isinstance(self.windower, Sliding):  # windows without data close too
            k_max = (watermark - self.windower.size) // self.windower.advance
            self._next_k = max(self._next_k, k_max + 1)
        return out

    def flush(self) -> list[pa.RecordBatch]:
        """End of input: emit every open window, and non-windowed EMIT FINAL groups."""
        if self.windowed:
            out = self._close(END_OF_TIME)
        else:
            live = self.table.live_slots()
            out = [] if self.emit_changes or len(live) == 0 else [self._rows(live)]
            self._free(live)
        self.clock.advance(END_OF_TIME + self.clock.lateness)
        return out

    def _close(self, watermark: int) -> list[pa.RecordBatch]:
        if self.sliding:
            return self._close_sliding(watermark)
        live = self.table.live_slots()
        ends = self._bounds(live)[1]
        closing = live[ends <= watermark]
        rest = ends[ends > watermark]
        self._min_end = int(rest.min()) if len(rest) else END_OF_TIME
        if len(closing) == 0:
            return []
        out = [] if self.emit_changes else [self._rows(closing)]
        self._free(closing)
        return out

    def _free(self, slots: np.ndarray) -> None:
        for agg in self.aggs:
            agg.reset(slots)
        if not self.windowed:
            self._max_ts[slots] = NO_TIME
        self.table.release(slots)

    # ------------------------------------------------------------------- output

    def _rows(self, slots: np.ndarray) -> pa.RecordBatch:
        """Output rows of ``slots``, ordered by (window end, window start, keys)."""
        gid = self.table.gid[slots]
        start, end = self._bounds(slots)
        order = self._order_by(gid, start, end)
        slots, gid, start, end = slots[order], gid[order], start[order], end[order]
        stamp = end - 1 if self.windowed else self._max_ts[slots]
        return self._build(gid, start, end, stamp, [a.result(slots) for a in self.aggs])

    def _build(
        self,
        gid: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        stamp: np.ndarray,
        results: list[pa.Array],
    ) -> pa.RecordBatch:
        names = [n for n, _ in self.node.keys]
        columns = self.keys.decode(gid) if names else []
        if self.windowed:
            names += [WINDOW_START, WINDOW_END]
            columns += [pa.array(start, pa.int64()), pa.array(end, pa.int64())]
        names += [a.name for a in self.aggs] + [TIMESTAMP]
        columns += results + [pa.array(stamp, pa.int64())]
        return pa.RecordBatch.from_arrays(columns, names=names)

    def _order_by(self, gid: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Order of rows by (window end, window start, key values)."""
        if len(gid) <= 1:
            return np.arange(len(gid))
        rank = self._ranks(gid) if self.node.keys else None
        if self.windowed:
            return np.lexsort(([rank] if rank is not None else []) + [start, end])
        if rank is not None:
            return np.argsort(rank, kind="stable")
        return np.arange(len(gid))

    def _ranks(self, gids: np.ndarray) -> np.ndarray:
        """Sort rank of the key values of ``gids`` (a cached rank of every group
        while the set of groups is stable; else a sort of just these)."""
        count = self.keys.count
        if self._rank is not None and len(self._rank) == count:
            return self._rank[gids]
        if len(gids) * 8 < count:
            return _sort_rank(self.keys.decode(gids))
        self._rank = _sort_rank(self.keys.decode(np.arange(count)))
        return self._rank[gids]

    def _bounds(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.table, SessionTable):
            return self.table.start[slots], self.table.end[slots]
        return self.windower.bounds(self.table.window[slots])

    # ---------------------------------------------------------------- late data

    def _report_late(
        self, batch: pa.RecordBatch, rows: np.ndarray, wm: np.ndarray, ts: np.ndarray
    ) -> None:
        self.ctx.late_records += len(rows)
        if self.node.late_strategy != "dlq":
            return
        if self.session_gap:
            starts, ends = ts[rows], ts[rows] + self.session_gap
        else:
            ends = self.windower.last_end(ts[rows])
            starts = ends - getattr(self.windower, "size", 0)
        records = _drop_internal(batch).take(pa.array(rows)).to_pylist()
        for rec, s, e, w in zip(
            records, starts.tolist(), ends.tolist(), wm[rows].tolist(), strict=True
        ):
            self.ctx.dead_letters.append(
                DeadLetter(
                    error=f"late record: window [{s}, {e}) closed at watermark {w}",
                    original=json.dumps(rec, default=str),
                    position=_position(rec),
                    operator=self.name,
                )
            )

    # -------------------------------------------------------------- arguments

    def _args(self, batch: pa.RecordBatch) -> list[pa.Array]:
        args = [_as_array(f(batch), batch.num_rows) for f in self._arg_evals]
        if not self._started:
            self._start([a.type for a in args])
        return [self._conform(i, a) for i, a in enumerate(args)]

    def _conform(self, i: int, arr: pa.Array) -> pa.Array:
        want = self._arg_types[i]
        if arr.type == want:
            return arr
        try:
            return arr.cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ExecutionError(
                f"{self.name}: aggregate argument changed type from {want} to {arr.type}: {exc}"
            ) from None

    def _start(self, arg_types: list[pa.DataType]) -> None:
        self._arg_types = list(arg_types)
        self._started = True
        self.aggs = []
        for (name, call), idx in zip(self.node.aggs, self._arg_index, strict=True):
            arg_type = arg_types[idx[0]] if idx else None
            self.aggs.append(make_aggregator(name, call, arg_type))
        for agg in self.aggs:
            agg.initialize(self._capacity)
        if self.sliding:
            self._scratch = [make_aggregator(a.name, a.call, a.arg_type) for a in self.aggs]

    def _grow(self, capacity: int) -> None:
        if capacity <= self._capacity:
            return
        self._capacity = capacity
        for agg in self.aggs:
            agg.initialize(capacity)
        if not self.windowed:
            self._max_ts = grow(self._max_ts, capacity, NO_TIME)

    # ----------------------------------------------------------- snapshot/restore

    def snapshot(self) -> dict[str, Any]:
        """The operator's complete state (see the module docstring for the format)."""
        live = self.table.live_slots()
        return {
            "format": SNAPSHOT_FORMAT,
            "operator": self.name,
            "state_key": self.state_key,
            "keys": [n for n, _ in self.node.keys],
            "key_types": self.keys.types,
            "arg_types": list(self._arg_types),
            "max_event_time": None if self.clock.max_time == NO_TIME else self.clock.max_time,
            "next_window": None if self._next_k == NO_TIME else self._next_k,
            "groups": self._state_table(live),
        }

    def _state_table(self, slots: np.ndarray) -> pa.Table:
        names = [n for n, _ in self.node.keys]
        columns: list[pa.Array] = (
            self.keys.decode(self.table.gid[slots]) if names and self.keys.encoders else []
        )
        if names and not self.keys.encoders:
            columns = [pa.array([], pa.null()) for _ in names]
        start, end = self._bounds(slots)
        names += [WINDOW_START, WINDOW_END, MAX_TS]
        stamp = self._max_ts[slots] if not self.windowed else np.zeros(len(slots), dtype=np.int64)
        columns += [
            pa.array(start, pa.int64()),
            pa.array(end, pa.int64()),
            pa.array(stamp, pa.int64()),
        ]
        for agg in self.aggs:
            for field, col in agg.export(agg.extract(slots)).items():
                names.append(f"{agg.name}.{field}")
                columns.append(col)
        return pa.Table.from_arrays(columns, names=names)

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
        check_snapshot(state, self.state_key)
        self._reset_state()
        stored = state.get("max_event_time")
        self.clock.max_time = NO_TIME if stored is None else int(stored)
        nxt = state.get("next_window")
        self._next_k = NO_TIME if nxt is None else int(nxt)
        self.merge_state(state)

    def merge_state(self, state: dict[str, Any]) -> None:
        """Merge a snapshot's groups into this operator (two-phase aggregation;
        restoring a split snapshot). Sessions are added, not re-merged."""
        check_snapshot(state, self.state_key)
        table: pa.Table = state["groups"]
        arg_types = list(state.get("arg_types") or [])
        if not self._started and len(arg_types) == len(self._arg_exprs):
            self._start(arg_types)
        if table.num_rows == 0:
            return
        table = table.combine_chunks()
        slots = self._restore_slots(table)
        for agg in self.aggs:
            prefix = f"{agg.name}."
            cols = {
                c[len(prefix) :]: table.column(c).chunk(0)
                for c in table.column_names
                if c.startswith(prefix)
            }
            agg.merge(slots, agg.load(cols))
        if not self.windowed:
            stamps = table.column(MAX_TS).to_numpy()
            self._max_ts[slots] = np.maximum(self._max_ts[slots], stamps)

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        """One snapshot per partition: the groups whose key values it owns."""
        if router.num_partitions == 1:
            return [state]
        groups: pa.Table = state["groups"]
        columns = key_columns(groups.schema.names, router, self._stored_as)
        return [dict(state, groups=part) for part in split_table(groups, columns, router)]

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Snapshots of disjoint groups as one: groups concatenated, settings
        kept, event-time maxima maxed."""
        merged: dict[str, Any] = merge_values(states)
        return merged

    @property
    def _stored_as(self) -> dict[str, str]:
        """Routing key column -> the GROUP BY output name the groups store it under."""
        return {e.name: name for name, e in self.node.keys if isinstance(e, Col) and e.name != name}

    def _restore_slots(self, table: pa.Table) -> np.ndarray:
        keys = [table.column(n).chunk(0) for n, _ in self.node.keys]
        gid = self.keys.encode(keys, table.num_rows)
        start = table.column(WINDOW_START).to_numpy()
        end = table.column(WINDOW_END).to_numpy()
        if isinstance(self.table, SessionTable):
            slots = self.table.allocate(gid, start, end)
            self._grow(self.table.capacity)
            self._min_end = min(self._min_end, int(end.min()))
            return slots
        window = start // self.windower.unit if self.windowed else np.zeros_like(gid)
        slots, capacity = self.table.lookup(window, gid)
        self._grow(capacity)
        if self.windowed:
            self._min_end = min(self._min_end, int(self._first_end(window).min()))
        return slots


def _dedupe_args(node: Aggregate) -> tuple[list[Expr], list[tuple[int, ...]]]:
    exprs: list[Expr] = []
    index: list[tuple[int, ...]] = []
    for _, call in node.aggs:
        idx = []
        for arg in call.args:
            if arg not in exprs:
                exprs.append(arg)
            idx.append(exprs.index(arg))
        index.append(tuple(idx))
    return exprs, index


def _timestamps(batch: pa.RecordBatch) -> np.ndarray:
    idx = batch.schema.get_field_index(TIMESTAMP)
    if idx < 0:
        raise ExecutionError("aggregate input has no _timestamp column (event time)")
    col = batch.column(idx)
    if col.null_count:
        raise ExecutionError("aggregate input has NULL event times in _timestamp")
    if col.type != pa.int64():
        col = col.cast(pa.int64())
    return col.to_numpy(zero_copy_only=False)


def _prior(batch: pa.RecordBatch) -> np.ndarray | None:
    idx = batch.schema.get_field_index(PRIOR_MAX)
    if idx < 0:
        return None
    return batch.column(idx).cast(pa.int64()).fill_null(NO_TIME).to_numpy(zero_copy_only=False)


def _as_array(value: Any, rows: int) -> pa.Array:
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    if isinstance(value, pa.Scalar):
        return pa.repeat(value, rows)
    return value


def _drop_internal(batch: pa.RecordBatch) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(PRIOR_MAX)
    return batch if idx < 0 else batch.remove_column(idx)


def _position(rec: dict[str, Any]) -> str:
    parts = [f"{c}={rec[c]}" for c in ("_partition", "_offset") if rec.get(c) is not None]
    return " ".join(parts)


def _sort_rank(columns: list[pa.Array]) -> np.ndarray:
    """Rank of each row by the columns' values, ascending, NULLs last."""
    names = [f"k{i}" for i in range(len(columns))]
    table = pa.Table.from_arrays(columns, names=names)
    order = pc.sort_indices(table, sort_keys=[(n, "ascending", "at_end") for n in names])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order.to_numpy()] = np.arange(len(order))
    return rank
