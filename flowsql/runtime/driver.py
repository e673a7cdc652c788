"""The one driver loop every job runs on, and the one way to control it.

A job is a loop over input units (a source's batches, or a Kafka consumer's
polls): each unit goes through the processor and its outputs into the sink.
:func:`pump` is that loop; :class:`Driver` is it for one processor and one
sink (``flowsql run`` and the job server's jobs), and the Kafka job drives its
per-partition processors with the same :func:`pump` and :class:`Outputs`.

Control (pause, resume, processor switch or rescale, stop) goes through a
:class:`Boundary`. The job thread holds it while one unit is processed; a
control request holds it between two units, so the request sees the job at a
*batch boundary*: the processor holds no half-processed input, and pausing,
snapshotting or switching there loses and repeats nothing. Requests go first:
a busy job does not starve them. A job waiting for input does not hold the
boundary, so requests do not wait for the next batch to arrive.

The steps of one unit, for every job kind:

1. wait while control requests are pending (and, for a job that blocks on
   pause, while paused); end with ``STOPPED`` once a stop is requested;
2. count the unit's records in, run them through the processor (under the
   job's failure policy when it has one) and write what it returns;
3. after the last unit, flush the processor (open windows, EMIT FINAL) and
   the sink, in one more step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa

from flowsql.connectors.base import Sink
from flowsql.runtime.failures import BatchFailureHandler
from flowsql.runtime.processor import JobProcessor

if TYPE_CHECKING:
    from flowsql.runtime.splits import SourceSplit

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")

#: Called after each batch with the records read so far.
Progress = Callable[[int], None]


class Outcome(StrEnum):
    """How a driver loop ended."""

    ENDED = "ended"  # the input ended
    DONE = "done"  # the work wanted no more input (a LIMIT was reached)
    STOPPED = "stopped"  # a stop was requested


@dataclass
class Counters:
    """What every job counts; written by the job thread only, read by anyone."""

    records_in: int = 0
    records_out: int = 0
    batches: int = 0
    active_s: float = 0.0  # time spent processing, idle waits excluded


class Boundary:
    """Where control requests meet the job thread: between two units.

    The job thread wraps each unit in :meth:`step`; a request wraps its action
    in :meth:`hold`. Pause and stop are flags the steps read.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # held by a step or a request
        self._resumed = threading.Condition(self._lock)
        self._gate = threading.Condition(threading.Lock())
        self._waiting = 0  # requests waiting for the lock
        self._pause = False
        self.stopping = threading.Event()

    @property
    def pause_requested(self) -> bool:
        return self._pause

    @property
    def requests_waiting(self) -> int:
        """Control requests waiting for the unit in progress to end."""
        return self._waiting

    @contextmanager
    def step(self, *, blocks_when_paused: bool = True) -> Iterator[bool]:
        """Hold the boundary for one unit of the job thread; yields False when
        the job is to stop instead. Waits for pending requests first and, when
        ``blocks_when_paused``, while a pause is requested."""
        go = self.enter(blocks_when_paused=blocks_when_paused)
        try:
            yield go
        finally:
            self._lock.release()

    def enter(self, *, blocks_when_paused: bool = True) -> bool:
        """:meth:`step` without the context manager, for the driver loop's hot
        path: acquire the boundary (release it with :meth:`leave`); False when
        the job is to stop."""
        if self._waiting:  # read without the gate: a request missed here waits one unit
            with self._gate:
                self._gate.wait_for(lambda: self._waiting == 0)
        self._lock.acquire()
        if blocks_when_paused:
            while self._pause and not self.stopping.is_set():
                self._resumed.wait()
        return not self.stopping.is_set()

    def leave(self) -> None:
        """End a unit begun with :meth:`enter`."""
        self._lock.release()

    @contextmanager
    def hold(self, timeout: float | None) -> Iterator[bool]:
        """Hold the boundary for a control request, ahead of the job's next step;
        yields False when the unit in progress did not end within ``timeout`` s."""
        with self._gate:
            self._waiting += 1
        try:
            reached = self._lock.acquire(timeout=-1 if timeout is None else timeout)
        finally:
            with self._gate:
                self._waiting -= 1
                self._gate.notify_all()
        try:
            yield reached
        finally:
            if reached:
                self._lock.release()

    @contextmanager
    def try_hold(self) -> Iterator[bool]:
        """Hold the boundary if no step or request holds it now; never waits."""
        reached = self._lock.acquire(blocking=False)
        try:
            yield reached
        finally:
            if reached:
                self._lock.release()

    def request_pause(self) -> None:
        """Steps that block when paused wait from the next one on."""
        self._pause = True

    def request_resume(self) -> None:
        """Let paused steps go on (waits for the boundary)."""
        self._pause = False
        with self._resumed:
            self._resumed.notify_all()

    def request_stop(self) -> None:
        """The next step yields False; wakes a paused job. Never waits."""
        self.stopping.set()
        with self.try_hold() as held:
            if held:
                self._resumed.notify_all()


def pump(
    units: Iterable[Unit],
    work: Callable[[Unit], bool],
    boundary: Boundary,
    *,
    blocks_when_paused: bool = True,
) -> Outcome:
    """The driver loop: ``work(unit)`` for every unit, each at a batch boundary.

    ``work`` returns False when it wants no more input. The units' iterator is
    closed however the loop ends.
    """
    it = iter(units)
    try:
        for unit in it:
            go = boundary.enter(blocks_when_paused=blocks_when_paused)
            try:
                if not go:
                    return Outcome.STOPPED
                if not work(unit):
                    return Outcome.DONE
            finally:
                boundary.leave()
    finally:
        if isinstance(it, Generator):
            it.close()
    return Outcome.ENDED


class Outputs:
    """A job's sink and its output counter."""

    def __init__(self, sink: Sink, counters: Counters) -> None:
        self.sink = sink
        self.counters = counters

    def emit(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Write the non-empty batches."""
        for batch in batches:
            if batch.num_rows:
                self.sink.write(batch)
                self.counters.records_out += batch.num_rows


class Driver:
    """One processor fed from one source into one sink: the loop of ``flowsql
    run`` and of the job server's jobs.

    Args:
        processor: runs the statement; may be swapped between steps (a switch).
        sink: where outputs go.
        counters: the job's counters (continued after a restore).
        failures: the job's failure policy; None: an error ends the job.
        boundary: where control requests meet this driver (default: its own).
        batch_size: batches larger than this are cut (zero-copy) before the processor.
        on_batch: called after each processed batch (the job refreshes its view).
    """

    def __init__(
        self,
        processor: JobProcessor,
        sink: Sink,
        *,
        counters: Counters | None = None,
        failures: BatchFailureHandler | None = None,
        boundary: Boundary | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self.processor = processor
        self.counters = counters or Counters()
        self.outputs = Outputs(sink, self.counters)
        self.failures = failures
        self.boundary = boundary or Boundary()
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.progress: Progress | None = None

    @property
    def sink(self) -> Sink:
        return self.outputs.sink

    def run(
        self,
        batches: Iterable[pa.RecordBatch],
        *,
        progress: Progress | None = None,
        at_end: Callable[[], None] | None = None,
    ) -> Outcome:
        """Feed every batch, then flush (unless stopped); ``at_end`` runs in the
        flush's step, after the sink was flushed."""
        self.progress = progress
        if self.batch_size is not None:
            batches = cut(batches, self.batch_size)
        outcome = pump(batches, self._step, self.boundary)
        if outcome is Outcome.STOPPED:
            return outcome
        with self.boundary.step() as go:
            if not go:
                return Outcome.STOPPED
            self.finish()
            if at_end is not None:
                at_end()
        return outcome

    def run_splits(
        self, splits: Sequence[SourceSplit], *, progress: Progress | None = None
    ) -> Outcome:
        """Let the processor read the input as splits (V2 over a file): it
        counts the records and emits everything, the flush included."""
        metrics = self.processor.metrics
        for batch in self.processor.run_splits(splits):
            self.outputs.emit([batch])
            self.counters.records_in = metrics.records_in
            if progress is not None:
                progress(metrics.records_in)
        self.counters.records_in = metrics.records_in
        self.sink.flush()
        return Outcome.DONE if self.processor.done else Outcome.ENDED

    def _step(self, batch: pa.RecordBatch) -> bool:
        if batch.num_rows:
            self.feed(batch)
            if self.progress is not None:
                self.progress(self.counters.records_in)
        else:
            self.check()
        return not self.processor.done

    def feed(self, batch: pa.RecordBatch) -> None:
        """One batch through the processor into the sink."""
        began = time.perf_counter()
        c = self.counters
        c.records_in += batch.num_rows
        c.batches += 1
        if self.failures is None:
            out = self.processor.process_batch(batch)
        else:
            out = self.failures.run(self.processor.process_batch, batch)
        self.outputs.emit(out)
        if self.on_batch is not None:
            self.on_batch()
        c.active_s += time.perf_counter() - began

    def check(self) -> None:
        """On an idle source's heartbeat: raise now if the processor broke (a V2
        worker died) while there was nothing to give it."""
        failure = self.processor.failure
        if failure is not None:
            raise failure

    def drain(self) -> None:
        """Write what a pipelined (V2) processor still holds for batches it took."""
        self.outputs.emit(self.processor.drain())
        if self.on_batch is not None:
            self.on_batch()

    def finish(self) -> None:
        """End of input: flush the processor (open windows, EMIT FINAL), then the sink."""
        if self.failures is None:
            out = self.processor.flush()
        else:
            out = self.failures.run_flush(self.processor.flush)
        self.outputs.emit(out)
        if self.on_batch is not None:
            self.on_batch()
        self.sink.flush()


def cut(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Batches of at most ``size`` rows (zero-copy slices of larger ones)."""
    it = iter(batches)
    try:
        for batch in it:
            if batch.num_rows <= size:
                yield batch
                continue
            for start in range(0, batch.num_rows, size):
                yield batch.slice(start, size)
    finally:
        if isinstance(it, Generator):
            it.close()
