"""Watermarks per input partition (``_partition``): the watermark a row sees is
the minimum over the active partitions of their max event time (earlier
records) minus the allowed lateness, and never goes backwards.

- ``PartitionClock`` against a record-at-a-time model (hypothesis), and its
  rules: min over partitions, an unseen declared partition holds, an ended or
  idle one releases, an idle one rejoins, the watermark is monotonic;
- the engine: reading order never makes data late once the partitions are
  declared; windows close on the minimum; metrics per partition;
- snapshots: the clock survives V1 restore, V1 <-> V2 and rescale; older
  snapshots restore;
- V1 and V2 (2 and 4 partitions) give the same rows on interleaved input;
- hypothesis: a tumbling COUNT/SUM (EMIT FINAL, EMIT CHANGES folded) equals the
  exact aggregate of the whole input however the partitions are interleaved
  and batched, with 0 late records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsql.engine import Engine
from flowsql.exec.eventtime import in_order
from flowsql.exec.watermarks import (
    SNAPSHOT_KEY,
    UNPARTITIONED,
    PartitionClock,
    merge_snapshots,
    partition_ids,
)
from flowsql.exec.windows import NO_TIME
from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.processor import JobProcessor, SimpleJobProcessor
from flowsql.sql import parse_one

T0 = 1_700_000_000_000
TUMBLING = (
    "SELECT k, _window_start, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k"
    " WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
)
Row = dict[str, Any]


def ts_array(values: Sequence[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ------------------------------------------------------------------ the clock


class ModelClock:
    """The rule, one record at a time."""

    def __init__(self) -> None:
        self.floor = NO_TIME
        self.max: dict[int, int] = {}
        self.state: dict[int, str] = {}

    def held(self) -> int:
        active = [m for q, m in self.max.items() if self.state[q] == "active"]
        return min(active) if active else max(self.max.values(), default=NO_TIME)

    def settle(self) -> None:
        self.floor = max(self.floor, self.held())

    def record(self, t: int, q: int) -> int:
        """The base the record sees, then take it in."""
        before = self.floor
        self.max[q] = max(self.max.get(q, NO_TIME), t)
        self.state[q] = "active"
        self.settle()
        return before

    def signal(self, q: int, state: str) -> None:
        self.max.setdefault(q, NO_TIME)
        self.state[q] = state
        self.settle()

    def expect(self, partitions: list[int]) -> None:
        for q in partitions:
            if q not in self.state:
                self.max[q], self.state[q] = NO_TIME, "active"


@dataclass
class Batch:
    ts: list[int]
    partitions: list[int] | None
    rows: bool


Op = tuple[str, Any]

partition_values = st.integers(-1, 3)
batches = st.integers(1, 12).flatmap(
    lambda n: st.builds(
        Batch,
        st.lists(st.integers(0, 400), min_size=n, max_size=n),
        st.one_of(st.none(), st.lists(partition_values, min_size=n, max_size=n)),
        st.booleans(),
    )
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), batches),
        st.tuples(st.just("expect"), st.lists(partition_values, max_size=3)),
        st.tuples(st.sampled_from(["end", "idle"]), partition_values),
        st.tuples(st.just("advance"), st.integers(0, 400)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_clock_equals_the_record_at_a_time_rule(steps: list[Op]) -> None:
    clock, model = PartitionClock(), ModelClock()
    for kind, arg in steps:
        floor_before = clock.floor
        if kind == "batch":
            _check_batch(clock, model, arg)
        elif kind == "expect":
            clock.expect(arg)
            model.expect(arg)
        elif kind == "advance":
            clock.advance(arg)
            model.floor = max(model.floor, arg)
        else:
            rose = getattr(clock, kind)(arg)
            model.signal(arg, {"end": "ended", "idle": "idle"}[kind])
            assert rose == (model.floor > floor_before)
        assert clock.floor == model.floor >= floor_before  # monotonic
        assert clock.snapshot()["partitions"] == {
            q: (None if m == NO_TIME else m, model.state[q]) for q, m in model.max.items()
        }


def _check_batch(clock: PartitionClock, model: ModelClock, batch: Batch) -> None:
    ts = ts_array(batch.ts)
    parts = None if batch.partitions is None else ts_array(batch.partitions)
    labels = batch.partitions or [UNPARTITIONED] * len(ts)
    alone = len(set(labels)) == 1 and set(model.max) <= set(labels)
    first_ever = alone and model.floor == NO_TIME
    floor = model.floor
    want = ts_array([model.record(t, q) for t, q in zip(batch.ts, labels, strict=True)])
    if first_ever:
        want[0] = ts[0]  # an unpartitioned input's very first row sees its own time
    stamp = clock.arrive(ts, parts, rows=batch.rows)
    assert stamp.high == max(batch.ts) and stamp.base == clock.floor
    if stamp.prior is not None:
        assert batch.rows and stamp.prior.tolist() == want.tolist()
    elif batch.rows:  # no stamp only for one partition in event-time order
        assert alone and in_order(ts, None if floor == NO_TIME else floor)


def test_watermark_base_is_the_min_over_partitions() -> None:
    clock = PartitionClock()
    stamp = clock.arrive(ts_array([100, 50, 120, 60]), ts_array([0, 1, 0, 1]), rows=True)
    # partition 1 joins after its first row: row 1 sees partition 0 alone
    assert stamp.prior is not None and stamp.prior.tolist() == [NO_TIME, 100, 100, 100]
    assert clock.floor == 100  # min(120, 60) = 60 < 100: the watermark does not go back
    clock.arrive(ts_array([200, 150]), ts_array([0, 1]), rows=False)
    assert clock.floor == 150
    assert clock.partition_times() == {0: 200, 1: 150}


def test_declared_partition_holds_until_it_sends() -> None:
    clock = PartitionClock()
    clock.expect([0, 1, 2])
    stamp = clock.arrive(ts_array([100, 110, 120]), ts_array([0, 1, 0]), rows=True)
    assert stamp.prior is not None and stamp.prior.tolist() == [NO_TIME] * 3
    assert clock.floor == NO_TIME and stamp.base == NO_TIME
    clock.arrive(ts_array([90]), ts_array([2]), rows=True)
    assert clock.floor == 90


def test_end_partition_releases_the_watermark() -> None:
    clock = PartitionClock()
    clock.expect([0, 1, 2])
    clock.arrive(ts_array([100, 300]), ts_array([0, 1]), rows=True)
    assert clock.end(2)  # empty, finished
    assert clock.floor == 100
    assert clock.end(0)
    assert clock.floor == 300
    assert not clock.end(1)  # none active: the max over all, which is 300
    assert clock.partition_states() == {0: "ended", 1: "ended", 2: "ended"}


def test_idle_partition_releases_and_rejoins_without_going_back() -> None:
    clock = PartitionClock()
    clock.expect([0, 1])
    clock.arrive(ts_array([100, 50]), ts_array([0, 1]), rows=True)
    assert clock.floor == 50
    clock.arrive(ts_array([400]), ts_array([0]), rows=True)
    assert clock.floor == 50
    assert clock.idle(1)
    assert clock.floor == 400
    stamp = clock.arrive(ts_array([60, 70, 500]), ts_array([1, 1, 0]), rows=True)
    assert stamp.prior is not None and stamp.prior.tolist() == [400, 400, 400]
    assert clock.floor == 400  # partition 1 is back and holds it (at 70 < 400)
    assert clock.partition_states() == {0: "active", 1: "active"}
    clock.arrive(ts_array([450]), ts_array([1]), rows=True)
    assert clock.floor == 450


def test_one_partition_keeps_the_unpartitioned_path() -> None:
    clock = PartitionClock()
    in_order_batch = clock.arrive(ts_array([5, 7, 9]), ts_array([3, 3, 3]), rows=True)
    assert in_order_batch.prior is None and clock.floor == 9
    late = clock.arrive(ts_array([8, 12, 10]), None, rows=True)  # a second partition: -1
    assert late.prior is not None and late.prior.tolist() == [9, 9, 9]
    assert clock.partition_times() == {3: 9}  # rows without _partition are partition -1


def test_partition_ids_read_the_partition_column() -> None:
    batch = pa.record_batch({"_partition": pa.array([1, None, 3], pa.int32()), "x": [1, 2, 3]})
    ids = partition_ids(batch)
    assert ids is not None and ids.tolist() == [1, UNPARTITIONED, 3] and ids.dtype == np.int64
    assert partition_ids(pa.record_batch({"x": [1]})) is None
    assert partition_ids(pa.record_batch({"_partition": ["a"]})) is None


def test_snapshot_round_trip_and_merge() -> None:
    clock = PartitionClock()
    clock.expect([0, 1, 2])
    clock.arrive(ts_array([100, 80]), ts_array([0, 1]), rows=False)
    clock.idle(2)
    again = PartitionClock.restore(clock.snapshot())
    assert again.snapshot() == clock.snapshot() and again.floor == 80
    other = PartitionClock()
    other.arrive(ts_array([150]), ts_array([1]), rows=False)
    merged = PartitionClock.restore(merge_snapshots([clock.snapshot(), other.snapshot()]))
    assert merged.partition_times() == {0: 100, 1: 150, 2: None}
    assert merged.partition_states() == {0: "active", 1: "active", 2: "idle"}
    assert merged.floor == 150
    old = PartitionClock.restore(None, 1234)  # a snapshot from before per-partition clocks
    assert old.floor == 1234 and not old.partitioned


# ----------------------------------------------------------------- the engine


def partition_table(
    parts: int, rows: int, *, seed: int = 1, span_ms: int = 6_000, jitter: int = 0
) -> list[pa.Table]:
    """One table per input partition, each in event-time order (``jitter``:
    some rows up to that many ms behind their partition's order)."""
    rng = np.random.default_rng(seed)
    tables = []
    for p in range(parts):
        ts = T0 + np.sort(rng.integers(0, span_ms, rows))
        if jitter:
            ts -= rng.integers(0, jitter, rows) * (rng.random(rows) < 0.1)
        tables.append(
            pa.table(
                {
                    "k": pa.array([f"k{i}" for i in rng.integers(0, 4, rows)]),
                    "v": pa.array(rng.integers(1, 100, rows), pa.int64()),
                    "ts": pa.array(ts, pa.int64()),
                    "_partition": pa.array(np.full(rows, p), pa.int32()),
                }
            )
        )
    return tables


def interleave(tables: Sequence[pa.Table], order: Sequence[int]) -> pa.Table:
    """Rows of the partitions in ``order`` (a partition index per row), each
    partition's rows in their own order."""
    taken = [0] * len(tables)
    pieces = []
    for p in order:
        pieces.append(tables[p].slice(taken[p], 1))
        taken[p] += 1
    return pa.concat_tables(pieces).combine_chunks()


def one_after_another(tables: Sequence[pa.Table]) -> pa.Table:
    """A topic read one partition after the other."""
    return pa.concat_tables(tables).combine_chunks()


def rows_of(batches: list[pa.RecordBatch]) -> list[Row]:
    return [r for b in batches for r in b.to_pylist()]


def exact(table: pa.Table) -> dict[tuple[str, int], tuple[int, int]]:
    """(k, window start) -> (COUNT, SUM) over the whole input."""
    start = pa.array(np.asarray(table.column("ts")) // 1000 * 1000)
    grouped = (
        table.append_column("w", start)
        .group_by(["k", "w"])
        .aggregate([("v", "count"), ("v", "sum")])
    )
    return {(r["k"], r["w"]): (r["v_count"], r["v_sum"]) for r in grouped.to_pylist()}


def folded(rows: list[Row]) -> dict[tuple[str, int], tuple[int, int]]:
    """The last row per (k, window): the EMIT FINAL result of a changelog."""
    return {(r["k"], r["_window_start"]): (r["n"], r["s"]) for r in rows}


def test_partitions_read_one_after_another_are_not_late_once_declared() -> None:
    tables = partition_table(3, 200)
    table = one_after_another(tables)
    undeclared = Engine(TUMBLING)
    for b in table.to_batches(max_chunksize=100):
        undeclared.process(b)
    assert undeclared.metrics.late_records > 0  # what a global max does
    engine = Engine(TUMBLING)
    engine.expect_partitions(range(3))
    head = one_after_another(tables[:2])
    out = [o for b in head.to_batches(max_chunksize=100) for o in engine.process(b)]
    assert out == []  # partition 2 holds the watermark until it sends
    out += [o for b in tables[2].to_batches(max_chunksize=100) for o in engine.process(b)]
    assert out  # windows close as partition 2 catches up
    out += engine.flush()
    assert engine.metrics.late_records == 0
    assert folded(rows_of(out)) == exact(table)


def test_windows_close_on_the_slowest_partition() -> None:
    engine = Engine(TUMBLING)
    engine.expect_partitions([0, 1])
    fast = pa.table(
        {"k": ["a"] * 3, "v": [1, 2, 3], "ts": [T0, T0 + 1_500, T0 + 5_000], "_partition": [0] * 3}
    )
    assert rows_of(engine.process(fast.to_batches()[0])) == []
    slow = pa.table({"k": ["a"], "v": [10], "ts": [T0 + 1_200], "_partition": [1]})
    got = rows_of(engine.process(slow.to_batches()[0]))
    assert [(r["_window_start"], r["n"], r["s"]) for r in got] == [(T0, 1, 1)]
    assert engine.metrics.watermark == T0 + 1_200
    assert engine.metrics.max_event_time == T0 + 5_000
    assert engine.metrics.partition_watermarks == {0: T0 + 5_000, 1: T0 + 1_200}
    assert engine.metrics.slowest_partition() == 1
    got = rows_of(engine.end_partition(1))
    assert [(r["_window_start"], r["n"], r["s"]) for r in got] == [(T0 + 1_000, 2, 12)]
    assert engine.metrics.partition_states == {0: "active", 1: "ended"}
    assert engine.metrics.slowest_partition() == 0


def test_idle_partition_releases_then_rejoins() -> None:
    sql = TUMBLING + " WITH ('watermark.allowed_lateness' = '500ms')"
    engine = Engine(sql)
    engine.expect_partitions([0, 1])
    first = pa.table({"k": ["a", "a"], "v": [1, 2], "ts": [T0, T0 + 3_000], "_partition": [0, 0]})
    assert engine.process(first.to_batches()[0]) == []
    assert engine.metrics.slowest_partition() == 1 and engine.metrics.watermark is None
    closed = rows_of(engine.idle_partition(1))
    assert [(r["_window_start"], r["n"]) for r in closed] == [(T0, 1)]
    assert engine.metrics.watermark == T0 + 2_500
    # partition 1 rejoins with older data: within lateness it counts, the
    # watermark holds (it does not go back) and now waits for partition 1
    back = pa.table(
        {
            "k": ["a", "a", "a"],
            "v": [5, 7, 9],
            "ts": [T0 + 2_600, T0 + 2_700, T0 + 900],
            "_partition": [1, 1, 1],
        }
    )
    assert engine.process(back.to_batches()[0]) == []
    assert engine.metrics.late_records == 1  # T0 + 900: its window closed while 1 was idle
    assert engine.metrics.watermark == T0 + 2_500
    assert engine.metrics.partition_states == {0: "active", 1: "active"}
    more = pa.table({"k": ["a"], "v": [100], "ts": [T0 + 9_000], "_partition": [0]})
    assert engine.process(more.to_batches()[0]) == []  # partition 1 holds at T0 + 2_700
    out = rows_of(engine.flush())
    assert [(r["_window_start"], r["n"], r["s"]) for r in out] == [
        (T0 + 2_000, 2, 12),
        (T0 + 3_000, 1, 2),
        (T0 + 9_000, 1, 100),
    ]


def test_unpartitioned_input_reports_no_partitions() -> None:
    engine = Engine(TUMBLING)
    table = pa.table({"k": ["a", "b"], "v": [1, 2], "ts": [T0, T0 + 10]})
    engine.process(table.to_batches()[0])
    assert engine.metrics.partition_watermarks == {} and engine.metrics.slowest_partition() is None
    assert engine.metrics.watermark == T0 + 10


# ------------------------------------------------------------ snapshots


def _feed(processor: JobProcessor, table: pa.Table, batch: int = 64) -> list[pa.RecordBatch]:
    return [o for b in table.to_batches(max_chunksize=batch) for o in processor.process_batch(b)]


def _processor(kind: str, statement: Any) -> JobProcessor:
    """``v1`` or ``v2xN``."""
    if kind == "v1":
        return SimpleJobProcessor(statement)
    return PartitionedJobCoordinator(statement, num_partitions=int(kind.removeprefix("v2x")))


@pytest.mark.parametrize(
    ("source", "target"),
    [("v1", "v1"), ("v1", "v2x3"), ("v2x2", "v1"), ("v2x2", "v2x4"), ("v1", "old-format")],
)
def test_partition_clock_survives_restore(source: str, target: str) -> None:
    tables = partition_table(3, 150, seed=4)
    head, tail = one_after_another(tables[:2]), tables[2]
    statement = parse_one(TUMBLING)
    first = _processor(source, statement)
    try:
        first.expect_partitions(range(3))
        out = _feed(first, head) + first.drain()
        assert out == []  # partition 2 holds the watermark
        state = first.snapshot()
    finally:
        first.close()
    assert state[SNAPSHOT_KEY]["partitions"][2] == (None, "active")
    if target == "old-format":
        del state[SNAPSHOT_KEY]  # taken before watermarks were kept per partition
    second = _processor("v1" if target == "old-format" else target, statement)
    try:
        second.restore(state)
        out += _feed(second, tail)
        out += second.flush()
        late = second.metrics.late_records
    finally:
        second.close()
    if target == "old-format":
        assert late > 0  # the old rule: the first two partitions' max
    else:
        assert late == 0
        assert folded(rows_of(out)) == exact(one_after_another(tables))


def test_v2_snapshot_carries_the_coordinator_clock() -> None:
    statement = parse_one(TUMBLING)
    tables = partition_table(2, 100, seed=8)
    with PartitionedJobCoordinator(statement, num_partitions=2) as v2:
        v2.expect_partitions([0, 1, 5])
        _feed(v2, one_after_another(tables))
        v2.idle_partition(5)
        state = v2.snapshot()
    clock = PartitionClock.restore(state[SNAPSHOT_KEY])
    assert clock.partition_states() == {0: "active", 1: "active", 5: "idle"}
    assert clock.floor == min(int(np.max(t.column("ts"))) for t in tables)


# ------------------------------------------------------------ V1 == V2

V1_V2_QUERIES = {
    "tumbling": TUMBLING + " WITH ('watermark.allowed_lateness' = '300ms')",
    "sliding": (
        "SELECT k, _window_start, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k"
        " WINDOW SLIDING(ts, INTERVAL '1' SECOND, INTERVAL '250' MILLISECOND)"
    ),
    "session": (
        "SELECT k, _window_start, _window_end, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k"
        " WINDOW SESSION(ts, INTERVAL '40' MILLISECOND)"
    ),
    "changes": TUMBLING + " EMIT CHANGES",
}


def _drive(processor: JobProcessor, table: pa.Table, parts: int) -> list[Row]:
    """Declare ``parts + 1`` partitions (the last never sends), feed the input
    with an idle signal in the middle and end signals at the end."""
    out: list[pa.RecordBatch] = []
    try:
        processor.expect_partitions(range(parts + 1))
        batches = table.to_batches(max_chunksize=37)
        for i, b in enumerate(batches):
            out += processor.process_batch(b)
            if i == len(batches) // 3:
                out += processor.idle_partition(parts)
            if i == len(batches) // 2:
                out += processor.end_partition(0)  # partition 0 then still sends: it rejoins
        for p in range(parts):
            out += processor.end_partition(p)
        out += processor.flush()
        return rows_of(out) + [{"late": processor.metrics.late_records}]
    finally:
        processor.close()


@pytest.mark.parametrize("parts", [2, 4])
@pytest.mark.parametrize("query", sorted(V1_V2_QUERIES))
def test_v1_equals_v2_on_interleaved_partitions(query: str, parts: int) -> None:
    rows = 120
    tables = partition_table(parts, rows, seed=parts, span_ms=3_000, jitter=1_500)
    rng = np.random.default_rng(parts)
    ahead = np.zeros(rows // 2, dtype=np.int64)  # partition 0 runs ahead first
    rest = np.concatenate([np.zeros(rows - rows // 2), np.repeat(np.arange(1, parts), rows)])
    table = interleave(tables, np.concatenate([ahead, rng.permutation(rest)]).astype(int).tolist())
    statement = parse_one(V1_V2_QUERIES[query])
    v1 = _drive(SimpleJobProcessor(statement), table, parts)
    v2 = _drive(PartitionedJobCoordinator(statement, num_partitions=parts), table, parts)
    assert v1[-1]["late"] > 0  # the jitter makes some rows late within their partition
    assert v2 == v1


# ------------------------------------------------------- order independence


@st.composite
def interleaved_input(draw: st.DrawFn) -> tuple[pa.Table, int, list[int]]:
    """Partitions each in event-time order, interleaved and cut into batches
    at random."""
    parts = draw(st.integers(1, 4))
    tables = []
    labels: list[int] = []
    for p in range(parts):
        ts = sorted(draw(st.lists(st.integers(0, 8_000), min_size=0, max_size=25)))
        keys = draw(st.lists(st.sampled_from("ab"), min_size=len(ts), max_size=len(ts)))
        tables.append(
            pa.table(
                {
                    "k": pa.array(keys, pa.string()),
                    "v": pa.array(range(len(ts)), pa.int64()),
                    "ts": pa.array([T0 + t for t in ts], pa.int64()),
                    "_partition": pa.array([p] * len(ts), pa.int32()),
                }
            )
        )
        labels += [p] * len(ts)
    order = draw(st.permutations(labels))
    table = interleave(tables, order) if order else tables[0]
    cuts = draw(st.lists(st.integers(1, max(1, len(order) - 1)), max_size=6))
    return table, parts, sorted({c for c in cuts if c < len(order)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleaved_input(), st.booleans(), st.booleans())
def test_windowed_result_does_not_depend_on_interleaving_or_batching(
    data: tuple[pa.Table, int, list[int]], changes: bool, end_each: bool
) -> None:
    table, parts, cuts = data
    engine = Engine(TUMBLING + (" EMIT CHANGES" if changes else " EMIT FINAL"))
    engine.expect_partitions(range(parts))
    out: list[pa.RecordBatch] = []
    for start, stop in zip([0, *cuts], [*cuts, table.num_rows], strict=True):
        if stop > start:
            out += engine.process(table.slice(start, stop - start).to_batches()[0])
    if end_each:
        for p in range(parts):
            out += engine.end_partition(p)
        if table.num_rows:  # every partition ended: the watermark is the max event time
            assert engine.metrics.watermark == engine.metrics.max_event_time
    closed_by_flush = engine.flush()
    if end_each and not changes:  # the watermark already closed every window it passed
        high = engine.metrics.max_event_time
        assert all(r["_window_start"] + 1_000 > high for r in rows_of(closed_by_flush))
    out += closed_by_flush
    assert engine.metrics.late_records == 0
    rows = rows_of(out)
    assert folded(rows) == exact(table)
    if not changes:
        assert len(rows) == len(folded(rows))  # one row per (key, window)
