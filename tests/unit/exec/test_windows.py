"""Window assignment, arrival watermarks, local grouping, slot and session tables."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsql.exec.windows import (
    NO_TIME,
    EventClock,
    SessionTable,
    Sliding,
    SlotTable,
    Tumbling,
    local_groups,
    plan_sessions,
)

times = st.lists(st.integers(-(10**6), 10**13), min_size=1, max_size=60)


@given(times, st.integers(1, 5000), st.booleans())
def test_tumbling_window_contains_its_row(ts: list[int], size: int, sort: bool) -> None:
    arr = np.array(sorted(ts) if sort else ts, dtype=np.int64)
    clock = EventClock()
    a = Tumbling(size).assign(clock.arrive(arr, None))
    start, end = Tumbling(size).bounds(a.window)
    assert a.rows is None
    assert np.all((start <= arr) & (arr < end)) and np.all(start % size == 0)
    assert a.low == a.window.min() and a.high == a.window.max()


@given(times, st.integers(1, 300), st.integers(1, 300))
def test_sliding_pane_feeds_exactly_the_windows_containing_the_row(
    ts: list[int], advance: int, extra: int
) -> None:
    size = advance + extra
    arr = np.array(ts, dtype=np.int64)
    w = Sliding(size, advance)
    a = w.assign(EventClock().arrive(arr, None))
    assert a.rows is None, "rows are not replicated: they go to one pane each"
    pane_start, pane_end = w.bounds(a.window)
    assert np.all((pane_start <= arr) & (arr < pane_end))
    first, last = w.windows_of(a.window)
    for i, t in enumerate(ts):
        lo = -(-(t - size + 1) // advance)  # ceil((t - size + 1) / advance)
        assert (int(first[i]), int(last[i])) == (lo, t // advance)
        start, end = w.window_bounds(np.arange(lo, t // advance + 1))
        assert np.all((start <= t) & (t < end))
        assert int(w.last_end(arr[i : i + 1])[0]) == int(end[-1])
        assert int(w.first_pane(np.array([lo]))[0]) * w.pane == int(start[0])


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=50), st.integers(0, 100))
def test_arrival_watermark_is_max_of_earlier_records(ts: list[int], lateness: int) -> None:
    clock = EventClock(lateness)
    clock.advance(500)
    arrival = clock.arrive(np.array(ts, dtype=np.int64), None)
    want = [max([500, *ts[:i]]) - lateness for i in range(len(ts))]
    assert clock.watermarks(arrival).tolist() == want
    if arrival.watermarks is None:
        assert arrival.in_order and ts == sorted(ts) and ts[0] >= 500
    clock.observe(arrival)
    assert clock.max_time == max(500, *ts)


def test_prior_column_overrides_the_local_max() -> None:
    clock = EventClock(10)
    arrival = clock.arrive(np.array([5, 6], dtype=np.int64), np.array([100, 200], dtype=np.int64))
    assert arrival.watermarks is not None and arrival.watermarks.tolist() == [90, 190]
    assert EventClock().max_time == NO_TIME


def test_stamped_batch_does_not_raise_the_clock_past_the_stamp() -> None:
    # Another input partition holds the watermark base at 100..200: the rows'
    # own event times (900) must not raise it; the caller's advance does.
    clock = EventClock(10)
    clock.advance(50)
    ts = np.array([500, 900], dtype=np.int64)
    arrival = clock.arrive(ts, np.array([100, 200], dtype=np.int64))
    assert arrival.watermarks is not None and arrival.watermarks.tolist() == [90, 190]
    clock.observe(arrival)
    assert clock.max_time == 200
    assert clock.advance(300) == 290


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)), min_size=1, max_size=80),
    st.booleans(),
)
@settings(max_examples=60)
def test_local_groups_find_distinct_pairs(pairs: list[tuple[int, int]], big: bool) -> None:
    window = np.array([p[0] for p in pairs], dtype=np.int64) + (10**9 if big else 0)
    gid = np.array([p[1] for p in pairs], dtype=np.int64)
    groups = 10**6 if big else 31  # big: the numpy.unique path
    lg = local_groups(window, gid, groups, int(window.min()), int(window.max()))
    assert len(set(pairs)) == len(lg.gid)
    assert np.array_equal(lg.window[lg.inv], window) and np.array_equal(lg.gid[lg.inv], gid)
    assert np.array_equal(lg.counts, np.bincount(lg.inv, minlength=len(lg.gid)))


def test_slot_table_reuses_released_slots_and_survives_rebase() -> None:
    table = SlotTable()
    slots, capacity = table.lookup(np.array([5, 5, 6]), np.array([0, 1, 0]))
    assert sorted(slots.tolist()) == [1, 2, 3] and capacity >= 4  # slot 0 is the scratch slot
    again, _ = table.lookup(np.array([6, 5]), np.array([0, 1]))
    assert again.tolist() == [slots[2], slots[1]]
    table.release(slots[:2])
    assert len(table) == 1
    fresh, _ = table.lookup(np.array([7, 7]), np.array([3, 4]))
    assert set(fresh.tolist()) == set(slots[:2].tolist())
    far, _ = table.lookup(np.array([6 + 3 * 2**30]), np.array([9]))  # forces a rebase
    assert table.lookup(np.array([6, 7]), np.array([0, 3]))[0].tolist() == [slots[2], fresh[0]]
    assert table.window[far[0]] == 6 + 3 * 2**30


def test_plan_sessions_merges_and_bridges() -> None:
    table = SessionTable()
    table.allocate(np.array([0, 0, 1]), np.array([0, 500, 0]), np.array([100, 600, 100]))
    open_slots = table.open_for(np.array([0, 1]), watermark=-1)
    plan = plan_sessions(
        np.array([0, 1, 2]), np.array([90, 300, 50]), 100, table, open_slots, high_watermark=0
    )
    assert plan is not None
    assert plan.size == 3
    got = sorted(
        zip(
            plan.gid.tolist(),
            plan.start.tolist(),
            plan.end.tolist(),
            plan.target.tolist(),
            strict=True,
        )
    )
    assert got == [(0, 0, 190, 0), (1, 300, 400, -1), (2, 50, 150, -1)]
    bridge = plan_sessions(np.array([0]), np.array([90]), 420, table, open_slots, high_watermark=0)
    assert bridge is not None and bridge.merges
    dst, src = bridge.merges[0]
    assert dst.tolist() == [0] and src.tolist() == [1]
    assert (bridge.start.tolist(), bridge.end.tolist()) == ([0], [600])


def test_plan_sessions_refuses_when_a_touched_session_may_close() -> None:
    table = SessionTable()
    table.allocate(np.array([0]), np.array([0]), np.array([100]))
    open_slots = table.open_for(np.array([0]), watermark=50)
    assert plan_sessions(np.array([0]), np.array([90]), 100, table, open_slots, 120) is None
    assert plan_sessions(np.array([0]), np.array([10]), 100, table, open_slots, 99) is not None
