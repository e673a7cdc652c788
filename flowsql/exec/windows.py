"""Event-time windows: assignment, watermarks, lateness and (group, window) slots.

- :class:`Windower` assigns rows to windows: :class:`Tumbling` (one window per
  row, ``start = ts // size * size``), :class:`Sliding` (every window
  containing the row; rows are replicated with ``numpy.repeat``) and
  :class:`Global` (no window). Windows are half-open ``[start, end)`` and
  aligned to the epoch.
- SESSION windows depend on the data: :class:`SessionTable` holds the open
  sessions and :func:`plan_sessions` merges a batch's rows with them.
- :class:`EventClock` tracks the event time an operator has reached and gives
  each row the watermark *at its arrival* (the watermark base before the row
  minus the allowed lateness), which is what makes lateness independent of
  batch size. The base is the max event time of every earlier record for an
  unpartitioned input; with several input partitions it is the minimum over
  them (``flowsql.exec.watermarks``), stamped on the rows and authoritative.
- :class:`SlotTable` maps (window, group id) pairs to dense slots that index
  the aggregate state, and recycles the slots of closed windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flowsql.errors import ExecutionError
from flowsql.exec.groupkeys import grow

#: "No event seen yet": below any real event time, with room to subtract lateness.
NO_TIME = -(1 << 62)
#: The watermark after end of input.
END_OF_TIME = 1 << 62
#: The slot that is never live (see :class:`SlotTable`).
SCRATCH = 0


@dataclass
class Arrival:
    """A batch's event times and what is known about their order.

    ``in_order``: non-decreasing and not behind any earlier record, so no row
    can be late. ``watermarks``: each row's watermark at its arrival (None when
    in order). ``reached``: the event time reached once the batch is processed
    (its max event time; with stamped watermark bases the highest of them,
    the caller's ``advance`` bringing the rest).
    """

    ts: np.ndarray
    in_order: bool
    watermarks: np.ndarray | None
    reached: int


@dataclass
class Assignment:
    """Rows of a batch assigned to windows.

    ``rows`` is the batch row of each assignment (None = one assignment per
    row, in order); ``window`` the window index (start // unit), between
    ``low`` and ``high``.
    """

    rows: np.ndarray | None
    window: np.ndarray
    low: int
    high: int


class Windower:
    """Assigns rows to windows and tells when a window closes."""

    kind = "global"
    unit = 1

    @property
    def state_key(self) -> str:
        return self.kind

    def assign(self, arrival: Arrival) -> Assignment:
        """Windows of each row."""
        return Assignment(None, np.zeros(len(arrival.ts), dtype=np.int64), 0, 0)

    def last_end(self, ts: np.ndarray) -> np.ndarray:
        """End of the last window each row belongs to (it is late once that closed)."""
        return np.full(len(ts), END_OF_TIME, dtype=np.int64)

    def bounds(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (ms) of window indexes."""
        zeros = np.zeros(len(window), dtype=np.int64)
        return zeros, zeros


class Global(Windower):
    """No window: one group per key for the whole stream."""


class Tumbling(Windower):
    """TUMBLING(size): ``[k*size, (k+1)*size)``."""

    kind = "tumbling"

    def __init__(self, size_ms: int) -> None:
        self.size = size_ms
        self.unit = size_ms

    @property
    def state_key(self) -> str:
        return f"tumbling({self.size})"

    def assign(self, arrival: Arrival) -> Assignment:
        ts = arrival.ts
        w0, w1 = int(ts[0]) // self.size, int(ts[-1]) // self.size
        if not arrival.in_order or w1 - w0 > 64:
            window = ts // self.size
            return Assignment(None, window, int(window.min()), int(window.max()))
        # Sorted: windows are runs; find their borders instead of dividing every row.
        if w0 == w1:
            return Assignment(None, np.full(len(ts), w0, dtype=np.int64), w0, w1)
        cuts = np.searchsorted(ts, np.arange(w0 + 1, w1 + 1, dtype=np.int64) * self.size)
        runs = np.diff(np.concatenate([[0], cuts, [len(ts)]]))
        return Assignment(None, np.repeat(np.arange(w0, w1 + 1, dtype=np.int64), runs), w0, w1)

    def last_end(self, ts: np.ndarray) -> np.ndarray:
        return ts // self.size * self.size + self.size

    def bounds(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = window * self.size
        return start, start + self.size


class Sliding(Windower):
    """SLIDING(size, advance): windows ``[k*advance, k*advance + size)``; a row
    belongs to every window containing it.

    Rows are not replicated per window: they are aggregated per *pane*
    (``gcd(size, advance)`` ms, a tumbling window) and a window's result is the
    merge of its ``size / pane`` panes, computed when it is emitted. Window
    indexes of the state are pane indexes.
    """

    kind = "sliding"

    def __init__(self, size_ms: int, advance_ms: int) -> None:
        self.size = size_ms
        self.advance = advance_ms
        self.pane = math.gcd(size_ms, advance_ms)
        self.unit = self.pane
        self.panes_per_window = size_ms // self.pane
        self._panes = Tumbling(self.pane)

    @property
    def state_key(self) -> str:
        return f"sliding({self.size},{self.advance})"

    def assign(self, arrival: Arrival) -> Assignment:
        return self._panes.assign(arrival)

    def last_end(self, ts: np.ndarray) -> np.ndarray:
        return ts // self.advance * self.advance + self.size

    def bounds(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._panes.bounds(window)

    def windows_of(self, pane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last window index containing each pane."""
        start = pane * self.pane
        return -((self.size - self.pane - start) // self.advance), start // self.advance

    def window_bounds(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (ms) of window indexes ``k``."""
        start = k * self.advance
        return start, start + self.size

    def first_pane(self, k: np.ndarray) -> np.ndarray:
        """The first pane of windows ``k``."""
        return k * self.advance // self.pane


class EventClock:
    """The event time an operator has reached, and each row's watermark at its arrival.

    Args:
        lateness_ms: allowed lateness; watermark = event time reached - lateness.
    """

    def __init__(self, lateness_ms: int = 0) -> None:
        self.lateness = lateness_ms
        self.max_time = NO_TIME  # event time reached: processed records and advance() calls

    @property
    def watermark(self) -> int:
        return self.max_time - self.lateness

    def arrive(self, ts: np.ndarray, prior: np.ndarray | None) -> Arrival:
        """Describe a batch before it is processed.

        ``prior`` is the ``__prior_max_event_time`` column when present: the
        watermark base before each row, stamped by the engine or the V2
        coordinator. It is authoritative: with several input partitions it
        lies below the batch's own event times, which must not raise it.
        """
        if prior is not None:
            return Arrival(ts, False, prior - self.lateness, int(prior.max()))
        in_order = bool(ts[0] >= self.max_time) and bool(np.greater_equal(ts[1:], ts[:-1]).all())
        high = int(ts[-1]) if in_order else int(ts.max())
        if in_order:
            return Arrival(ts, True, None, high)
        before = np.empty(len(ts), dtype=np.int64)
        before[0] = self.max_time
        np.maximum(np.maximum.accumulate(ts[:-1]), self.max_time, out=before[1:])
        return Arrival(ts, False, before - self.lateness, high)

    def watermarks(self, arrival: Arrival) -> np.ndarray:
        """Each row's watermark at arrival, also for an in-order batch."""
        if arrival.watermarks is not None:
            return arrival.watermarks
        ts = arrival.ts
        wm = np.empty(len(ts), dtype=np.int64)
        wm[0] = self.max_time
        np.maximum(ts[:-1], self.max_time, out=wm[1:])
        return wm - self.lateness

    def observe(self, arrival: Arrival) -> None:
        """The batch was processed."""
        self.max_time = max(self.max_time, arrival.reached)

    def advance(self, event_time_ms: int) -> int:
        """Event time reached ``event_time_ms``; return the new watermark."""
        self.max_time = max(self.max_time, event_time_ms)
        return self.watermark


@dataclass
class LocalGroups:
    """One batch's distinct (window, group) pairs: ``inv`` maps each assigned
    row to its pair, ``window``/``gid`` describe the pairs, ``counts`` count rows."""

    inv: np.ndarray
    window: np.ndarray
    gid: np.ndarray
    counts: np.ndarray


def local_groups(
    window: np.ndarray, gid: np.ndarray, groups: int, low: int, high: int
) -> LocalGroups:
    """Distinct (window, gid) pairs of a batch, vectorized; windows lie in [low, high].

    When ``windows x groups`` is small the pairs are found with ``bincount``
    over the combined code (no sort); otherwise with ``numpy.unique``.
    """
    if len(gid) == 0:
        empty = np.empty(0, dtype=np.int64)
        return LocalGroups(empty, empty, empty, empty)
    span = (high - low + 1) * groups
    code = gid if high == low else (window - low) * groups + gid
    if span <= max(8 * len(gid), 1 << 16):
        full = np.bincount(code, minlength=span)
        uniq = np.flatnonzero(full)
        lookup = np.empty(span, dtype=np.int64)
        lookup[uniq] = np.arange(len(uniq))
        inv, counts = lookup[code], full[uniq]
    else:
        found = np.unique(code, return_inverse=True, return_counts=True)
        uniq, inv, counts = found[0], found[1].reshape(-1), found[2]
    if high == low:
        return LocalGroups(inv, np.full(len(uniq), low, dtype=np.int64), uniq, counts)
    return LocalGroups(inv, uniq // groups + low, uniq % groups, counts)


class SlotTable:
    """(window index, group id) -> slot, with the window and group of each slot.

    Pairs are coded ``(window - base) << 31 | gid`` in a sorted array searched
    with ``numpy.searchsorted``; only a batch's distinct pairs are looked up.
    For the common batch that falls in one window, :meth:`window_slots` keeps
    a dense group id -> slot array of that window instead. Released slots are
    reused. Slot :data:`SCRATCH` is never live: updates for groups without rows
    in a batch land there and are never read.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self.window = np.empty(0, dtype=np.int64)
        self.gid = np.empty(0, dtype=np.int64)
        self.live = np.empty(0, dtype=bool)
        self._codes = np.empty(0, dtype=np.int64)
        self._slots = np.empty(0, dtype=np.int64)
        self._free: list[np.ndarray] = []
        self._next = SCRATCH + 1
        self._base: int | None = None
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._dense_window: int | None = None
        self._dense = np.empty(0, dtype=np.int64)  # gid -> slot in _dense_window, -1 none

    def window_slots(self, window: int, counts: np.ndarray) -> tuple[np.ndarray, int]:
        """Slot of every group id in one window, given the rows per group id:
        groups with rows get (or keep) their slot, others :data:`SCRATCH`."""
        if self._dense_window != window:
            self._dense_window, self._dense = window, self._window_map(window)
        self._dense = grow(self._dense, len(counts), -1)
        dense = self._dense[: len(counts)]
        present = counts > 0
        missing = np.flatnonzero(present & (dense < 0))
        if len(missing):
            dense[missing] = self._lookup(np.full(len(missing), window, dtype=np.int64), missing)
        return np.where(present, dense, SCRATCH), self.capacity

    def _window_map(self, window: int) -> np.ndarray:
        dense = np.empty(0, dtype=np.int64)
        if self._base is None or len(self._codes) == 0:
            return dense
        lo = (window - self._base) << 31
        a, b = np.searchsorted(self._codes, [lo, lo + (1 << 31)])
        gids = self._codes[a:b] - lo
        if len(gids):
            dense = np.full(int(gids.max()) + 1, -1, dtype=np.int64)
            dense[gids] = self._slots[a:b]
        return dense

    def __len__(self) -> int:
        return len(self._codes)

    def live_slots(self) -> np.ndarray:
        """Every slot in use."""
        return np.flatnonzero(self.live[: self._next])

    def lookup(self, window: np.ndarray, gid: np.ndarray) -> tuple[np.ndarray, int]:
        """Slots of distinct pairs, allocating new ones; also returns the new capacity."""
        last = self._last
        if last is not None and np.array_equal(last[1], gid) and np.array_equal(last[0], window):
            return last[2], self.capacity  # a steady stream: same pairs as the last batch
        slots = self._lookup(window, gid)
        self._last = (window, gid, slots)
        return slots, self.capacity

    def find(self, window: np.ndarray, gid: np.ndarray) -> np.ndarray:
        """Slots of pairs, -1 where the pair has none (nothing is allocated)."""
        if self._base is None or len(self._codes) == 0:
            return np.full(len(gid), -1, dtype=np.int64)
        rel = window - self._base
        inside = (rel >= -(1 << 31)) & (rel < 1 << 31)
        codes = (np.where(inside, rel, 0) << 31) | gid
        pos = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
        hit = inside & (self._codes[pos] == codes)
        return np.where(hit, self._slots[pos], -1)

    def _lookup(self, window: np.ndarray, gid: np.ndarray) -> np.ndarray:
        codes = self._code(window, gid)
        pos = np.searchsorted(self._codes, codes)
        found = pos < len(self._codes)
        found[found] = self._codes[pos[found]] == codes[found]
        slots = np.empty(len(codes), dtype=np.int64)
        slots[found] = self._slots[pos[found]]
        if not found.all():
            missing = ~found
            new = self._allocate(int(missing.sum()))
            slots[missing] = new
            self.window[new], self.gid[new], self.live[new] = window[missing], gid[missing], True
            order = np.argsort(codes[missing], kind="stable")
            at = pos[missing][order]
            self._codes = np.insert(self._codes, at, codes[missing][order])
            self._slots = np.insert(self._slots, at, new[order])
        return slots

    def release(self, slots: np.ndarray) -> None:
        """Free slots (their windows closed); the caller resets the aggregate state."""
        if len(slots) == 0:
            return
        self._last = None
        self._dense_window = None
        self.live[slots] = False
        keep = self.live[self._slots]
        self._codes, self._slots = self._codes[keep], self._slots[keep]
        self._free.append(slots.copy())

    def _code(self, window: np.ndarray, gid: np.ndarray) -> np.ndarray:
        if self._base is None:
            self._base = int(window.min()) if len(window) else 0
        lo, hi = int(window.min()), int(window.max())
        if lo - self._base < -(1 << 31) or hi - self._base >= 1 << 31:
            self._rebase(lo, hi)
        if len(gid) and int(gid.max()) >= 1 << 31:
            raise ExecutionError("more than 2^31 groups in one aggregate")
        return ((window - self._base) << 31) | gid

    def _rebase(self, lo: int, hi: int) -> None:
        live = self.live_slots()
        if len(live):
            lo, hi = min(lo, int(self.window[live].min())), max(hi, int(self.window[live].max()))
        if hi - lo >= 1 << 32:
            raise ExecutionError("open windows span more than 2^32 window lengths")
        self._base = (lo + hi) // 2
        codes = ((self.window[self._slots] - self._base) << 31) | self.gid[self._slots]
        order = np.argsort(codes, kind="stable")
        self._codes, self._slots = codes[order], self._slots[order]

    def _allocate(self, count: int) -> np.ndarray:
        reuse = np.concatenate(self._free) if self._free else np.empty(0, dtype=np.int64)
        take, rest = reuse[:count], reuse[count:]
        self._free = [rest] if len(rest) else []
        fresh = np.arange(self._next, self._next + count - len(take), dtype=np.int64)
        self._next += len(fresh)
        if self._next > self.capacity:
            self.window = grow(self.window, self._next, 0)
            self.gid = grow(self.gid, self._next, 0)
            self.live = grow(self.live, self._next, False)
            self.capacity = len(self.live)
        return np.concatenate([take, fresh])


class SessionTable:
    """Open sessions: group id, start (first event) and end (last event + gap) per slot."""

    def __init__(self) -> None:
        self.capacity = 0
        self.gid = np.empty(0, dtype=np.int64)
        self.start = np.empty(0, dtype=np.int64)
        self.end = np.empty(0, dtype=np.int64)
        self.live = np.empty(0, dtype=bool)
        self._free: list[int] = []
        self._next = 0

    def __len__(self) -> int:
        return int(self.live[: self._next].sum())

    def live_slots(self) -> np.ndarray:
        """Every slot in use."""
        return np.flatnonzero(self.live[: self._next])

    def open_for(self, gids: np.ndarray, watermark: int) -> np.ndarray:
        """Slots of sessions of ``gids`` (duplicates allowed) still open at
        ``watermark`` (end > watermark)."""
        live = self.live_slots()
        if len(live) == 0 or len(gids) == 0:
            return live[:0]
        wanted = np.zeros(max(int(gids.max()), int(self.gid[live].max())) + 1, dtype=bool)
        wanted[gids] = True
        return live[wanted[self.gid[live]] & (self.end[live] > watermark)]

    def allocate(self, gid: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """New slots for sessions."""
        count = len(gid)
        take = self._free[:count]
        self._free = self._free[count:]
        fresh = np.arange(self._next, self._next + count - len(take), dtype=np.int64)
        self._next += len(fresh)
        if self._next > self.capacity:
            for name, fill in (("gid", 0), ("start", 0), ("end", 0), ("live", False)):
                setattr(self, name, grow(getattr(self, name), self._next, fill))
            self.capacity = len(self.live)
        slots = np.concatenate([np.array(take, dtype=np.int64), fresh])
        self.gid[slots], self.start[slots], self.end[slots], self.live[slots] = (
            gid,
            start,
            end,
            True,
        )
        return slots

    def release(self, slots: np.ndarray) -> None:
        """Free slots (closed or merged sessions)."""
        self.live[slots] = False
        self._free.extend(slots.tolist())


@dataclass
class SessionPlan:
    """How one chunk of rows joins the open sessions.

    ``inv`` maps each row to a touched session (``size`` of them); for each:
    ``target`` (an existing slot, or -1 for a new session), ``start``, ``end``
    and ``gid``. ``merges`` lists rounds of (destination, source) slots of
    existing sessions that a row bridged; each round has distinct destinations.
    """

    inv: np.ndarray
    size: int
    target: np.ndarray
    gid: np.ndarray
    start: np.ndarray
    end: np.ndarray
    merges: list[tuple[np.ndarray, np.ndarray]]


def plan_sessions(
    gid: np.ndarray,
    ts: np.ndarray,
    gap: int,
    table: SessionTable,
    open_slots: np.ndarray,
    high_watermark: int,
) -> SessionPlan | None:
    """Merge rows (non-late, arrival order) with the open sessions of their keys.

    First the chunk's own runs: rows sorted by (key, time) chain while the
    next event is less than ``gap`` after the previous one. Then the runs and
    the open sessions (few) are sorted by (key, start) and overlapping ones
    chained. Both steps are order-independent. The plan equals
    record-at-a-time processing only if no session it touches could have
    closed while the chunk arrived, i.e. every row's ``ts + gap`` and every
    touched session's end lies above the chunk's highest arrival watermark.
    Returns None when that does not hold (the caller splits the chunk).
    """
    if int(ts.min()) + gap <= high_watermark:
        return None
    order = key_time_order(gid, ts)
    g, t = gid[order], ts[order]
    brk = np.empty(len(t), dtype=bool)
    brk[0] = True
    brk[1:] = (g[1:] != g[:-1]) | (t[1:] - t[:-1] >= gap)
    heads = np.flatnonzero(brk)
    tails = np.append(heads[1:], len(t)) - 1
    row_run = np.empty(len(t), dtype=np.int64)
    row_run[order] = np.cumsum(brk) - 1
    merged = _merge_runs(g[heads], t[heads], t[tails] + gap, table, open_slots, high_watermark)
    if merged is None:
        return None
    run_group, plan = merged
    plan.inv = run_group[row_run]
    return plan


def key_time_order(gid: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Row order sorted by (key, time), stable. Rows already in time order only
    need a stable sort by key, which numpy does as a radix sort on 16 bits."""
    if not bool(np.greater_equal(ts[1:], ts[:-1]).all()):
        return np.lexsort((ts, gid))
    top = int(gid.max())
    if top < 1 << 15:
        return np.argsort(gid.astype(np.int16), kind="stable")
    if top >= 1 << 32:
        return np.argsort(gid, kind="stable")
    order = np.argsort((gid & 0xFFFF).astype(np.uint16), kind="stable")
    return order[np.argsort((gid[order] >> 16).astype(np.uint16), kind="stable")]


def _merge_runs(
    r_gid: np.ndarray,
    r_start: np.ndarray,
    r_end: np.ndarray,
    table: SessionTable,
    open_slots: np.ndarray,
    high_watermark: int,
) -> tuple[np.ndarray, SessionPlan] | None:
    """Chain a chunk's runs with the open sessions; returns each run's touched
    session and the plan (without ``inv``)."""
    m = len(r_gid)
    g = np.concatenate([r_gid, table.gid[open_slots]])
    s = np.concatenate([r_start, table.start[open_slots]])
    e = np.concatenate([r_end, table.end[open_slots]])
    order = np.lexsort((s, g))
    g, s, e = g[order], s[order], e[order]
    runs = _run_ids(g, s, e)
    is_run = order < m
    touched = np.bincount(runs[is_run], minlength=int(runs[-1]) + 1) > 0
    sess_pos = np.flatnonzero(~is_run)
    sess_slots = open_slots[order[sess_pos] - m]
    sess_touched = touched[runs[sess_pos]]
    if bool((table.end[sess_slots[sess_touched]] <= high_watermark).any()):
        return None
    compact = np.cumsum(touched) - 1
    run_group = np.empty(m, dtype=np.int64)
    run_group[order[is_run]] = compact[runs[is_run]]
    new_group = np.empty(len(runs), dtype=bool)
    new_group[0] = True
    new_group[1:] = runs[1:] != runs[:-1]
    heads = np.flatnonzero(new_group)
    keep = touched[runs[heads]]
    size = int(touched.sum())
    target, merges = _targets(sess_slots, compact[runs[sess_pos]], sess_touched, size)
    end = np.maximum.reduceat(e, heads)[keep]
    plan = SessionPlan(
        np.empty(0, dtype=np.int64), size, target, g[heads][keep], s[heads][keep], end, merges
    )
    return run_group, plan


def _run_ids(g: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Chain intervals sorted by (key, start): a new run starts at a new key or
    when the start is at/after the max end so far within the key."""
    new_key = np.empty(len(g), dtype=bool)
    new_key[0] = True
    new_key[1:] = g[1:] != g[:-1]
    seg = np.cumsum(new_key) - 1
    low = int(e.min())
    ends = e - low
    span = int(ends.max()) + 1
    uniq: np.ndarray | None = None
    if (int(seg[-1]) + 1) * span >= 1 << 62:
        uniq, ends = np.unique(e, return_inverse=True)
        span = len(uniq)
    running = np.maximum.accumulate(seg * span + ends) - seg * span  # max end so far, per key
    running_ms = uniq[running] if uniq is not None else running + low
    new_run = new_key.copy()
    new_run[1:] |= s[1:] >= running_ms[:-1]
    return np.cumsum(new_run) - 1


def _targets(
    slots: np.ndarray, run: np.ndarray, touched: np.ndarray, size: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Target slot per touched run (its first open session, else -1) and the
    rounds of merges of the other sessions into it."""
    target = np.full(size, -1, dtype=np.int64)
    slots, run = slots[touched], run[touched]
    if len(slots) == 0:
        return target, []
    head = np.empty(len(run), dtype=bool)
    head[0] = True
    head[1:] = run[1:] != run[:-1]
    target[run[head]] = slots[head]
    idx = np.arange(len(run))
    rank = idx - np.maximum.accumulate(np.where(head, idx, 0))
    merges = [(target[run[rank == r]], slots[rank == r]) for r in range(1, int(rank.max()) + 1)]
    return target, merges
