"""The ceiling: minimal numpy kernels doing each scenario's work on pre-encoded arrays.

Keys arrive as dense integer codes (the generator's dictionary indices), values
as float64 arrays, event time as int64 epoch ms; one kernel call per
micro-batch, state in arrays indexed by key code, emission with the same
semantics as flowsql (EMIT FINAL at the watermark, EMIT CHANGES per batch), so
the row counts must match the engine's exactly. There is no Arrow, no
dictionary encoding, no output batches, no generality: what no engine in
Python can beat on one core. Inputs are assumed in event-time order per key, as
the generator produces them.

Each kernel takes the per-batch arrays and the number of keys and returns
``(rows, groups)`` (see :mod:`flowsql.bench.scenarios`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

Arrays = dict[str, np.ndarray]
Kernel = Callable[[list[Arrays], int], tuple[int, int]]

#: Columns each kernel reads (the first one named ``key`` is the key code).
COLUMNS: dict[str, dict[str, str]] = {
    "select": {"order_id": "order_id", "customer_id": "customer_id", "value": "total_amount"},
    "rows_window": {"key": "symbol", "value": "price"},
    "group_by_changes": {"key": "symbol", "value": "price"},
    "tumbling": {"key": "symbol", "value": "price", "ts": "timestamp"},
    "tumbling_changes": {"key": "symbol", "value": "price", "ts": "timestamp"},
    "tumbling_filtered": {"key": "symbol", "value": "price", "ts": "timestamp", "q": "quantity"},
    "sliding": {"key": "symbol", "value": "price", "ts": "timestamp"},
    "session": {"key": "symbol", "value": "price", "ts": "timestamp"},
    "min_avg_max": {"key": "station", "value": "temp"},
}


def encode(batches: list[pa.RecordBatch], kernel: str) -> tuple[list[Arrays], int]:
    """Pre-encode the batches for ``kernel`` (not timed): numpy arrays per batch,
    key columns as their dictionary codes; also the number of keys."""
    wanted = COLUMNS[kernel]
    keys = 0
    out: list[Arrays] = []
    for b in batches:
        arrays: Arrays = {}
        for alias, column in wanted.items():
            col = b.column(column)
            if pa.types.is_dictionary(col.type):
                keys = max(keys, len(col.dictionary))
                col = col.indices
            arrays[alias] = col.to_numpy()
        out.append(arrays)
    return out, keys


# ----------------------------------------------------------------- stateless


def select(batches: list[Arrays], keys: int) -> tuple[int, int]:
    """``WHERE total_amount > 100`` and three columns out."""
    rows = 0
    for a in batches:
        mask = a["value"] > 100.0
        out = (a["order_id"][mask], a["customer_id"][mask], a["value"][mask])
        rows += len(out[0])
    return rows, rows


def rows_window(
    batches: list[Arrays], keys: int, size: int = 100, sink: list[np.ndarray] | None = None
) -> tuple[int, int]:
    """AVG over the last ``size`` rows per key: per-key prefix sums, with the
    last ``size`` prefix sums of each key kept in a ring across batches. The
    averages of each batch are appended to ``sink`` when one is given."""
    seen = np.zeros(keys, np.int64)  # rows per key so far
    total = np.zeros(keys)  # sum of all values per key so far
    ring = np.zeros((keys, size))  # prefix sum of row j of key k at ring[k, j % size]
    rows = 0
    for a in batches:
        codes, values = a["key"], a["value"]
        order = np.argsort(codes, kind="stable")
        k, v = codes[order], values[order]
        counts = np.bincount(k, minlength=keys)
        starts = np.cumsum(counts) - counts
        pos = np.arange(len(k)) - starts[k]  # position inside the key's run
        csum = np.cumsum(v)
        prefix = total[k] + csum - (csum[starts[k]] - v[starts[k]])
        j = seen[k] + pos  # the row's index among all rows of its key
        back = np.where(pos >= size, np.roll(prefix, size), ring[k, (j - size) % size])
        back = np.where(j >= size, back, 0.0)
        avg = (prefix - back) / np.minimum(j + 1, size)
        out = np.empty_like(avg)
        out[order] = avg
        tail = pos >= counts[k] - size  # the last ``size`` rows of each key: unique slots
        ring[k[tail], j[tail] % size] = prefix[tail]
        total += np.bincount(k, weights=v, minlength=keys)
        seen += counts
        rows += len(out)
        if sink is not None:
            sink.append(out)
    return rows, rows


# -------------------------------------------------------------- aggregations


def group_by_changes(batches: list[Arrays], keys: int) -> tuple[int, int]:
    """Running count + avg per key; after each batch the changed keys' rows."""
    counts = np.zeros(keys, np.int64)
    sums = np.zeros(keys)
    rows = 0
    for a in batches:
        c = np.bincount(a["key"], minlength=keys)
        counts += c
        sums += np.bincount(a["key"], weights=a["value"], minlength=keys)
        changed = np.flatnonzero(c)
        _ = sums[changed] / counts[changed]
        rows += len(changed)
    return rows, int(np.count_nonzero(counts))


class Tumbling:
    """Tumbling count + sum per (window, key): one bincount per batch over
    ``(window - first window) * keys + key``, open windows in a dict."""

    def __init__(self, keys: int, size_ms: int = 1000, *, changes: bool = False) -> None:
        self.keys, self.size, self.changes = keys, size_ms, changes
        self.open: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.rows = self.groups = 0

    def update(self, codes: np.ndarray, values: np.ndarray, ts: np.ndarray) -> None:
        window = ts // self.size
        w0 = int(window.min())
        span = (int(window.max()) - w0 + 1) * self.keys
        local = (window - w0) * self.keys + codes
        counts = np.bincount(local, minlength=span).reshape(-1, self.keys)
        sums = np.bincount(local, weights=values, minlength=span).reshape(-1, self.keys)
        for i in np.flatnonzero(counts.any(axis=1)):
            cnt, total = self.open.setdefault(
                w0 + int(i), (np.zeros(self.keys, np.int64), np.zeros(self.keys))
            )
            cnt += counts[i]
            total += sums[i]
            if self.changes:
                changed = np.flatnonzero(counts[i])
                _ = total[changed] / cnt[changed]
                self.rows += len(changed)

    def advance(self, watermark: int) -> None:
        for w in [w for w in self.open if (w + 1) * self.size <= watermark]:
            self._close(w)

    def flush(self) -> tuple[int, int]:
        for w in list(self.open):
            self._close(w)
        return self.rows, self.groups

    def _close(self, w: int) -> None:
        cnt, total = self.open.pop(w)
        live = np.flatnonzero(cnt)
        _ = total[live] / cnt[live]
        self.groups += len(live)
        if not self.changes:
            self.rows += len(live)


def tumbling(batches: list[Arrays], keys: int) -> tuple[int, int]:
    """1 s tumbling count + avg per key, EMIT FINAL."""
    return _run_tumbling(Tumbling(keys), batches)


def tumbling_changes(batches: list[Arrays], keys: int) -> tuple[int, int]:
    """1 s tumbling count + avg per key, EMIT CHANGES."""
    return _run_tumbling(Tumbling(keys, changes=True), batches)


def tumbling_filtered(batches: list[Arrays], keys: int, min_quantity: int = 100) -> tuple[int, int]:
    """The peers' workload: ``quantity > 100``, then 1 s tumbling count + avg."""
    state = Tumbling(keys)
    high = np.iinfo(np.int64).min
    for a in batches:
        mask = a["q"] > min_quantity
        high = max(high, int(a["ts"].max()))
        if mask.any():
            state.update(a["key"][mask], a["value"][mask], a["ts"][mask])
        state.advance(high)
    return state.flush()


def _run_tumbling(state: Tumbling, batches: list[Arrays]) -> tuple[int, int]:
    high = np.iinfo(np.int64).min
    for a in batches:
        state.update(a["key"], a["value"], a["ts"])
        high = max(high, int(a["ts"].max()))
        state.advance(high)
    return state.flush()


def sliding(
    batches: list[Arrays], keys: int, size_ms: int = 10_000, advance_ms: int = 1000
) -> tuple[int, int]:
    """Sliding windows as sums of panes of ``advance_ms``: one bincount per batch
    into panes; a window closing sums its ``size / advance`` panes."""
    per = size_ms // advance_ms
    panes = Tumbling(keys, advance_ms)
    next_start: int | None = None  # first pane of the next window to close
    rows = 0
    for a in batches:
        panes.update(a["key"], a["value"], a["ts"])
        if next_start is None:
            next_start = int(a["ts"].min()) // advance_ms - per + 1
        watermark = int(a["ts"].max())
        while (next_start + per) * advance_ms <= watermark:
            rows += _close_pane_window(panes.open, next_start, per, keys)
            next_start += 1
    last = max(panes.open) if panes.open else -1
    while next_start is not None and next_start <= last:
        rows += _close_pane_window(panes.open, next_start, per, keys)
        next_start += 1
    return rows, rows


def _close_pane_window(
    open_: dict[int, tuple[np.ndarray, np.ndarray]], first: int, per: int, keys: int
) -> int:
    cnt, total = np.zeros(keys, np.int64), np.zeros(keys)
    for p in range(first, first + per):
        if p in open_:
            cnt += open_[p][0]
            total += open_[p][1]
    open_.pop(first, None)  # no later window starts at or before this pane
    live = np.flatnonzero(cnt)
    _ = total[live] / cnt[live]
    return len(live)


def session(batches: list[Arrays], keys: int, gap_ms: int = 5000) -> tuple[int, int]:
    """Sessions per key (gap ``gap_ms``): per batch, rows grouped by key are cut
    where the gap is reached; each key's last segment is its open session
    (extending the one open before the batch unless it starts a new one);
    sessions whose end (last event + gap) the watermark passed are emitted."""
    active = np.zeros(keys, bool)
    last = np.zeros(keys, np.int64)
    count = np.zeros(keys, np.int64)
    total = np.zeros(keys)
    rows = 0
    for a in batches:
        order = np.argsort(a["key"], kind="stable")  # input is in event-time order
        k, t, v = a["key"][order], a["ts"][order], a["value"][order]
        first = np.r_[True, k[1:] != k[:-1]]
        prev = np.empty_like(t)
        prev[1:] = t[:-1]
        prev[first] = np.where(active[k[first]], last[k[first]], t[first] - gap_ms)
        new = t - prev >= gap_ms
        # sessions completed inside the batch: each new start closes the one before it
        rows += int(np.count_nonzero(new & ~first))
        rows += int(np.count_nonzero(new & first & active[k]))
        ends = np.flatnonzero(np.r_[k[1:] != k[:-1], True])
        start = np.maximum.accumulate(np.where(new | first, np.arange(len(k)), 0))[ends]
        csum = np.cumsum(v)
        here = k[ends]
        fresh = new[start]
        count[here] = np.where(fresh, 0, count[here]) + (ends - start + 1)
        total[here] = np.where(fresh, 0.0, total[here]) + csum[ends] - csum[start] + v[start]
        last[here] = t[ends]
        active[here] = True
        closing = active & (last + gap_ms <= int(a["ts"].max()))
        _ = total[closing] / count[closing]
        rows += int(np.count_nonzero(closing))
        active &= ~closing
    rows += int(np.count_nonzero(active))
    return rows, rows


def min_avg_max(batches: list[Arrays], keys: int) -> tuple[int, int]:
    """Min, avg, max per key over the whole input, EMIT FINAL (1BRC)."""
    counts = np.zeros(keys, np.int64)
    sums = np.zeros(keys)
    mins = np.full(keys, np.inf)
    maxs = np.full(keys, -np.inf)
    for a in batches:
        codes, temps = a["key"], a["value"]
        counts += np.bincount(codes, minlength=keys)
        sums += np.bincount(codes, weights=temps, minlength=keys)
        np.minimum.at(mins, codes, temps)
        np.maximum.at(maxs, codes, temps)
    live = np.flatnonzero(counts)
    _ = (mins[live], sums[live] / counts[live], maxs[live])
    return len(live), len(live)


KERNELS: dict[str, Kernel] = {
    "select": select,
    "rows_window": rows_window,
    "group_by_changes": group_by_changes,
    "tumbling": tumbling,
    "tumbling_changes": tumbling_changes,
    "tumbling_filtered": tumbling_filtered,
    "sliding": sliding,
    "session": session,
    "min_avg_max": min_avg_max,
}
