"""Watermarks per input partition: the event time an input has reached.

An input is read from partitions (Kafka partitions, ...) whose records arrive
interleaved; each partition is in event-time order on its own, but one that is
read ahead of the others must not make their records late. So, as in Flink
(per-split watermarks, the minimum across inputs, ``withIdleness``), a
:class:`PartitionClock` keeps per input partition the max event time of its
records and a state:

- ``active``: holds the watermark back; a partition declared with
  :meth:`PartitionClock.expect` and not seen yet holds it at "nothing seen";
- ``idle``: the driver saw no data from it for the idle timeout; it stops
  holding the watermark back and rejoins as active with its next record;
- ``ended``: its bounded input is finished (an empty partition counts as
  finished); it no longer holds the watermark back.

The *watermark base* is the minimum over the active partitions of their max
event time (the maximum over all partitions when none is active), and it
never goes backwards: a partition that rejoins with older data holds the
watermark where it is. An operator's watermark is the base minus its allowed
lateness. The partition of a row is the ``_partition`` column; a batch without
it is one partition (:data:`UNPARTITIONED`).

Each row's watermark is the one *at its arrival*, from the records before it,
so lateness does not depend on batching. :meth:`PartitionClock.arrive` gives
the base before every row of a batch (stamped by the V1 engine and the V2
coordinator in ``__prior_max_event_time``, one shared computation) and the
base after the batch, to which every operator advances. An input with one
partition takes the path it always took: the base is the max event time and
a batch in event-time order needs no stamp.

Snapshot format (``snapshot()``; :func:`merge_snapshots` combines the copies of
V2 partitions)::

    {"format": "flowsql.event_time/1",
     "floor": int | None,            # the watermark base (None: nothing reached)
     "partitions": {partition: (max event time | None, "active" | "idle" | "ended")}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

from flowsql.errors import ExecutionError
from flowsql.exec.eventtime import in_order, prior_max
from flowsql.exec.windows import NO_TIME
from flowsql.records import PARTITION

#: The partition of rows without a ``_partition`` column (or with a NULL one).
UNPARTITIONED = -1
SNAPSHOT_FORMAT = "flowsql.event_time/1"
#: The key of the clock's snapshot in an engine snapshot.
SNAPSHOT_KEY = "event_time"
#: Above every event time: "no active partition holds the watermark here".
_UNHELD = np.iinfo(np.int64).max
#: Partition ids spanning less than this are told apart with ``bincount``.
_DENSE_SPAN = 1 << 16


class PartitionState(StrEnum):
    """Whether an input partition holds the watermark back."""

    ACTIVE = "active"
    IDLE = "idle"
    ENDED = "ended"


#: Which state wins when two copies of a clock disagree.
_RANK = {PartitionState.ACTIVE: 0, PartitionState.IDLE: 1, PartitionState.ENDED: 2}


@dataclass
class Stamp:
    """What the clock says about one batch.

    ``prior``: the watermark base before each row (None when the batch needs
    no stamp); ``base``: the watermark base after the batch; ``high``: the
    batch's max event time.
    """

    prior: np.ndarray | None
    base: int
    high: int


def partition_ids(batch: pa.RecordBatch) -> np.ndarray | None:
    """The ``_partition`` of each row as int64 (NULL: :data:`UNPARTITIONED`);
    None when the batch has no integer ``_partition`` column."""
    idx = batch.schema.get_field_index(PARTITION)
    if idx < 0:
        return None
    column = batch.column(idx)
    if not pa.types.is_integer(column.type):
        return None
    if column.null_count:
        column = column.fill_null(UNPARTITIONED)
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


class PartitionClock:
    """Max event time and state per input partition, and the watermark base."""

    def __init__(self) -> None:
        self.floor = NO_TIME  # the watermark base: never goes backwards
        self._max: dict[int, int] = {}  # partition -> max event time (NO_TIME: not seen)
        self._state: dict[int, PartitionState] = {}

    # ---------------------------------------------------------------- batches

    def arrive(self, ts: np.ndarray, partitions: np.ndarray | None, *, rows: bool) -> Stamp:
        """Take in a batch's event times (``partitions``: each row's partition,
        None = all :data:`UNPARTITIONED`).

        Args:
            ts: the rows' event times, int64, at least one.
            partitions: from :func:`partition_ids`.
            rows: the base before each row is wanted (windowed queries); it is
                given when a row could be late or a partition is interleaved.
        """
        single = _single(partitions)
        if single is not None and self._alone(single):
            return self._arrive_alone(ts, single, rows)
        if partitions is None:  # unpartitioned rows among known partitions
            partitions = np.full(len(ts), UNPARTITIONED, dtype=np.int64)
        return self._arrive_many(ts, partitions, rows)

    def _alone(self, partition: int) -> bool:
        """True when ``partition`` is the only one known (or none is)."""
        return not self._max or (len(self._max) == 1 and partition in self._max)

    def _arrive_alone(self, ts: np.ndarray, partition: int, rows: bool) -> Stamp:
        """One partition: the base is its max event time, as it always was."""
        before = None if self.floor == NO_TIME else self.floor
        prior = prior_max(ts, before) if rows and not in_order(ts, before) else None
        high = int(ts.max())
        self._max[partition] = max(self._max.get(partition, NO_TIME), high)
        self._state[partition] = PartitionState.ACTIVE
        self.floor = max(self.floor, high)
        return Stamp(prior, self.floor, high)

    def _arrive_many(self, ts: np.ndarray, partitions: np.ndarray, rows: bool) -> Stamp:
        ids, inv = _distinct(partitions)
        highs = np.full(len(ids), NO_TIME, dtype=np.int64)
        np.maximum.at(highs, inv, ts)
        joining = any(self._state.get(q) != PartitionState.ACTIVE for q in ids.tolist())
        # A joining partition may lower the minimum inside the batch: the base
        # after the batch is then the peak before that, so it takes the
        # per-row bases even when no stamp is wanted.
        bases = self._row_bases(ts, ids, inv) if rows or joining else None
        for q, high in zip(ids.tolist(), highs.tolist(), strict=True):
            self._max[q] = max(self._max.get(q, NO_TIME), high)
            self._state[q] = PartitionState.ACTIVE
        if bases is None:
            self.floor = max(self.floor, self._held())
            return Stamp(None, self.floor, int(highs.max()))
        self.floor = int(bases[-1])
        return Stamp(bases[:-1] if rows else None, self.floor, int(highs.max()))

    def _row_bases(self, ts: np.ndarray, ids: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """The base before each row and after the last (``len(ts) + 1``
        values): per partition a running max over its rows, the minimum over
        the active ones, then the running max with the floor.

        A partition that is not active before the batch (new, idle, ended)
        joins right after its first row of the batch.
        """
        n = len(ts)
        present = set(ids.tolist())
        others = [
            m
            for q, m in self._max.items()
            if q not in present and self._state[q] == PartitionState.ACTIVE
        ]
        out = np.full(n + 1, min(others, default=_UNHELD), dtype=np.int64)
        held_from = 0 if others else n + 1  # first position some partition holds
        run = np.empty(n + 1, dtype=np.int64)
        for j, q in enumerate(ids.tolist()):
            mine = inv == j
            run[0] = self._max.get(q, NO_TIME)
            run[1:] = np.where(mine, ts, NO_TIME)
            np.maximum.accumulate(run, out=run)
            start = 0 if self._state.get(q) == PartitionState.ACTIVE else int(np.argmax(mine)) + 1
            np.minimum(out[start:], run[start:], out=out[start:])
            held_from = min(held_from, start)
        if held_from:
            out[:held_from] = self._max_over_all(ts, held_from)
        np.maximum(out, self.floor, out=out)
        np.maximum.accumulate(out, out=out)
        return out

    def _max_over_all(self, ts: np.ndarray, positions: int) -> np.ndarray:
        """The max event time of every partition before each of the first
        ``positions`` positions (where no partition is active)."""
        head = np.empty(positions, dtype=np.int64)
        head[0] = max(self._max.values(), default=NO_TIME)
        head[1:] = ts[: positions - 1]
        return np.maximum.accumulate(head)

    def _held(self) -> int:
        """The minimum over active partitions' max event time; the maximum
        over all when none is active (not yet floored)."""
        active = [m for q, m in self._max.items() if self._state[q] == PartitionState.ACTIVE]
        if active:
            return min(active)
        return max(self._max.values(), default=NO_TIME)

    # ---------------------------------------------------------- driver signals

    def expect(self, partitions: Iterable[int]) -> None:
        """Partitions known to exist: those not seen yet hold the watermark at
        "nothing seen" until they send a record, end or go idle."""
        for q in partitions:
            if int(q) not in self._state:
                self._max[int(q)] = NO_TIME
                self._state[int(q)] = PartitionState.ACTIVE

    def end(self, partition: int) -> bool:
        """A partition's bounded input is finished. True when the base rose."""
        return self._set_state(partition, PartitionState.ENDED)

    def idle(self, partition: int) -> bool:
        """A partition sent nothing for the idle timeout; it rejoins with its
        next record. True when the base rose."""
        return self._set_state(partition, PartitionState.IDLE)

    def _set_state(self, partition: int, state: PartitionState) -> bool:
        q = int(partition)
        self._max.setdefault(q, NO_TIME)
        self._state[q] = state
        held = self._held()
        if held <= self.floor:
            return False
        self.floor = held
        return True

    def advance(self, event_time_ms: int) -> None:
        """The base is at least ``event_time_ms`` (an explicit advance)."""
        self.floor = max(self.floor, event_time_ms)

    # ------------------------------------------------------------------- views

    @property
    def partitioned(self) -> bool:
        """True when rows carried a ``_partition`` or partitions were declared."""
        return bool(self._max) and not (len(self._max) == 1 and UNPARTITIONED in self._max)

    def partition_times(self) -> dict[int, int | None]:
        """Max event time per partition (None: declared, nothing seen yet)."""
        return {q: None if m == NO_TIME else m for q, m in self._max.items() if q != UNPARTITIONED}

    def partition_states(self) -> dict[int, str]:
        """State per partition: ``active``, ``idle`` or ``ended``."""
        return {q: s.value for q, s in self._state.items() if q != UNPARTITIONED}

    # ---------------------------------------------------------------- snapshot

    def snapshot(self) -> dict[str, Any]:
        """The clock's state (see the module docstring for the format)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "floor": None if self.floor == NO_TIME else self.floor,
            "partitions": {
                q: (None if m == NO_TIME else m, self._state[q].value) for q, m in self._max.items()
            },
        }

    def merge(self, other: PartitionClock) -> None:
        """Take in another copy of the input's clock (a V2 partition's): the
        higher floor and, per partition, the higher max event time; a
        partition active in either is active, else idle in either is idle."""
        self.floor = max(self.floor, other.floor)
        for q, high in other._max.items():
            self._max[q] = max(self._max.get(q, NO_TIME), high)
            mine = self._state.get(q)
            if mine is None or _RANK[other._state[q]] < _RANK[mine]:
                self._state[q] = other._state[q]

    @classmethod
    def restore(
        cls, state: Mapping[str, Any] | None, max_event_time: int | None = None
    ) -> PartitionClock:
        """The clock of a snapshot; a snapshot without one (taken before
        watermarks were kept per partition) starts at ``max_event_time``."""
        clock = cls()
        if state is None:
            clock.floor = NO_TIME if max_event_time is None else int(max_event_time)
            return clock
        if state.get("format") != SNAPSHOT_FORMAT:
            raise ExecutionError(f"not an event-time snapshot (format {state.get('format')!r})")
        floor = state.get("floor")
        clock.floor = NO_TIME if floor is None else int(floor)
        for q, (high, status) in state["partitions"].items():
            clock._max[int(q)] = NO_TIME if high is None else int(high)
            clock._state[int(q)] = PartitionState(status)
        return clock


def merge_snapshots(states: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One clock snapshot from several (V2 partitions' copies), see
    :meth:`PartitionClock.merge`; None when none has a clock."""
    known = [s for s in states if s is not None]
    if not known:
        return None
    merged = PartitionClock()
    for state in known:
        merged.merge(PartitionClock.restore(state))
    return merged.snapshot()


def _single(partitions: np.ndarray | None) -> int | None:
    """The batch's one partition, or None when its rows come from several."""
    if partitions is None:
        return UNPARTITIONED
    low = int(partitions.min())
    return low if low == int(partitions.max()) else None


def _distinct(partitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct partitions of a batch, ascending, and each row's index among them."""
    low = int(partitions.min())
    if int(partitions.max()) - low < _DENSE_SPAN:
        rel = partitions - low
        counts = np.bincount(rel)
        present = np.flatnonzero(counts)
        lookup = np.empty(len(counts), dtype=np.int64)
        lookup[present] = np.arange(len(present))
        return present + low, lookup[rel]
    ids, inv = np.unique(partitions, return_inverse=True)
    return ids, inv.reshape(-1)
