"""The driver loop and its control boundary, without a source or a server."""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from flowsql.runtime.driver import Boundary, Counters, Driver, Outcome, cut, pump
from flowsql.runtime.processor import SimpleJobProcessor
from flowsql.sql import parse_one
from tests.polling import wait_until


class ListSink:
    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.flushed = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None: ...

    def abort(self) -> None: ...


def _batch(n: int, start: int = 0) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(start, start + n), pa.int64())})


def test_the_loop_feeds_every_batch_then_flushes_once() -> None:
    sink = ListSink()
    driver = Driver(SimpleJobProcessor(parse_one("SELECT x FROM t WHERE x % 2 = 0")), sink)
    seen: list[int] = []
    outcome = driver.run([_batch(10), _batch(0), _batch(5, 10)], progress=seen.append)
    assert outcome is Outcome.ENDED
    assert driver.counters.records_in == 15 and driver.counters.batches == 2
    assert driver.counters.records_out == 8 == sum(b.num_rows for b in sink.batches)
    assert sink.flushed == 1
    assert seen == [10, 15]  # the empty batch is a heartbeat, not input


def test_a_limit_ends_the_loop_early_and_still_flushes() -> None:
    sink = ListSink()
    driver = Driver(SimpleJobProcessor(parse_one("SELECT x FROM t LIMIT 3")), sink)
    outcome = driver.run(_batch(2, i) for i in range(0, 100, 2))
    assert outcome is Outcome.DONE
    assert driver.counters.records_out == 3 and driver.counters.records_in < 100


def test_batches_are_cut_to_the_batch_size() -> None:
    sizes = [b.num_rows for b in cut([_batch(25), _batch(3)], 10)]
    assert sizes == [10, 10, 5, 3]


def test_a_request_goes_ahead_of_the_next_unit() -> None:
    boundary = Boundary()
    order: list[str] = []
    in_unit = threading.Event()
    release = threading.Event()

    def work(unit: int) -> bool:
        order.append(f"unit {unit}")
        if unit == 0:
            in_unit.set()
            release.wait(5)
        return True

    loop = threading.Thread(target=pump, args=(range(3), work, boundary))
    loop.start()
    in_unit.wait(5)

    def request() -> None:
        with boundary.hold(5) as reached:
            assert reached
            order.append("request")

    asker = threading.Thread(target=request)
    asker.start()
    wait_until(
        lambda: boundary.requests_waiting == 1, "the request waits for the unit in progress", 5
    )
    release.set()
    asker.join(5)
    loop.join(5)
    assert order == ["unit 0", "request", "unit 1", "unit 2"]


def test_a_request_that_finds_no_boundary_in_time_says_so() -> None:
    boundary = Boundary()
    started, release = threading.Event(), threading.Event()

    def work(_: int) -> bool:
        started.set()
        release.wait(5)
        return True

    loop = threading.Thread(target=pump, args=(range(1), work, boundary))
    loop.start()
    started.wait(5)
    with boundary.hold(0.05) as reached:
        assert not reached
    release.set()
    loop.join(5)


def test_pause_blocks_the_next_step_until_resume_and_stop_ends_a_paused_loop() -> None:
    boundary = Boundary()
    done: list[int] = []
    outcome: list[Outcome] = []
    boundary.request_pause()
    loop = threading.Thread(
        target=lambda: outcome.append(pump(range(3), lambda u: done.append(u) or True, boundary))
    )
    loop.start()
    time.sleep(0.1)
    assert done == []  # paused before the first unit
    boundary.request_resume()
    loop.join(5)
    assert done == [0, 1, 2] and outcome == [Outcome.ENDED]

    boundary.request_pause()
    stopped: list[Outcome] = []
    loop = threading.Thread(target=lambda: stopped.append(pump(range(3), lambda u: True, boundary)))
    loop.start()
    time.sleep(0.1)
    boundary.request_stop()
    loop.join(5)
    assert stopped == [Outcome.STOPPED]


def test_a_kafka_style_loop_keeps_going_while_paused() -> None:
    boundary = Boundary()
    boundary.request_pause()
    counted = Counters()

    def work(_: int) -> bool:
        counted.batches += 1
        return True

    assert pump(range(4), work, boundary, blocks_when_paused=False) is Outcome.ENDED
    assert counted.batches == 4
