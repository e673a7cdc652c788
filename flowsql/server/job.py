"""A running job: one statement driven source -> processor -> sink on its own thread
(:class:`Job`; Kafka statements run as ``flowsql.server.kafka_server_job.KafkaServerJob``).

The job thread runs the one driver loop (:class:`flowsql.runtime.driver.Driver`):
source -> processor -> sink, batch by batch. Control requests from the REST
API (pause, stop, a processor switch) go through the driver's
:class:`~flowsql.runtime.driver.Boundary`, so they see the job at a batch
boundary: the processor holds no half-processed input, so pausing,
snapshotting and switching there loses and repeats nothing. A job whose source
is idle is at a boundary too, so these requests do not wait for the next
batch to arrive.

Switching processors (``switch_processor``):

1. build the new processor while the job keeps running, and wait until it
   answers (a snapshot of its empty state), so V2 workers have started;
2. at a batch boundary (holding the boundary): drain the old processor, so the outputs
   of batches a V2 processor still has in flight reach the sink;
3. snapshot the old processor (operator state + event-time maximum);
4. restore the snapshot into the new one (V2 re-partitions keyed state by
   routing key);
5. carry the late/dead-letter counters over and swap; the job continues with
   the next batch;
6. close the old processor, after the boundary is released.

If a step fails the job keeps its old processor and the request reports the error.
Stopping does not emit open windows: it flushes the sink and, when
``server.checkpoint_dir`` is set, writes a savepoint there (processor snapshot,
source position, counters: ``flowsql.server.savepoint``); a job built with a
``Restore`` starts from one: it restores the snapshot, continues the counters
and skips the rows its source had already delivered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from flowsql.connectors.base import Sink, Source
from flowsql.errors import ExecutionError, FlowSQLError
from flowsql.plan import nodes as n
from flowsql.records import ClosingDeadLetterSink, DeadLetterSink
from flowsql.runtime.driver import Boundary, Counters, Driver, Outcome
from flowsql.runtime.factory import make_processor
from flowsql.runtime.failures import BatchFailureHandler, FailurePolicy, StopRequested
from flowsql.runtime.processor import JobProcessor
from flowsql.server.config import ProcessorChoice, Redactor
from flowsql.server.savepoint import JobCounts, Restore, Savepoints, skip_rows

log = logging.getLogger(__name__)

ProcessorFactory = Callable[[n.Statement, ProcessorChoice, DeadLetterSink], JobProcessor]


class JobState(StrEnum):
    """Where a job is in its life."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.STOPPED)


def is_processor_broken(exc: BaseException, processor: JobProcessor) -> bool:
    """True when ``exc`` left the processor unusable (a V2 worker died, or the
    coordinator shut itself down after an error), as opposed to one batch that
    could not be processed by a processor that carries on."""
    if isinstance(exc, EOFError | ConnectionError):
        return True
    return processor.closed or processor.failure is not None


@dataclass
class JobStatus:
    """What ``GET /jobs/{name}`` shows. Secrets are masked."""

    name: str
    kind: str
    state: str
    processor: str
    processor_version: str
    num_partitions: int
    records_in: int
    records_out: int
    records_per_second: float
    watermark_ms: int | None
    watermark: str | None
    late_records: int
    dead_lettered: int
    failed_batches: int
    retries: int
    last_error: str | None
    failure_strategy: str
    started_at: str
    finished_at: str | None
    sources: list[str]
    properties: dict[str, str]
    annotations: dict[str, str]
    sql: str
    pause_requested: bool = False
    switches: list[str] = field(default_factory=list)
    #: Kafka jobs only: group id, topic, guarantee, the partitions this process
    #: owns ("topic:partition"), checkpoints, rebalances, restored partitions.
    kafka: dict[str, Any] | None = None
    #: Per input partition (``_partition``; a Kafka job: per source partition):
    #: its watermark in epoch ms (None: nothing seen yet); empty for one partition.
    partition_watermarks: dict[str, int | None] = field(default_factory=dict)
    #: The input partition holding the watermark back, and how far its watermark
    #: is behind the most advanced partition's (ms).
    slowest_partition: int | None = None
    slowest_partition_lag_ms: int | None = None
    #: With ``server.checkpoint_dir``: the savepoint this run started from
    #: (``restored: true``, its id, time, records_in, source position) or why none.
    restored: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Counters(Counters):
    """Job-level counters, written by the job thread only."""

    restored_in: int = 0  # records_in carried over from a savepoint
    start_position: int = 0  # rows the source had delivered before this run
    late_carried: int = 0
    dead_carried: int = 0
    late_now: int = 0
    dead_now: int = 0
    max_event_time: int | None = None

    @property
    def position(self) -> int:
        """Rows read from the source, over every run."""
        return self.start_position + self.records_in - self.restored_in


class JobThread:
    """What every server job shares: a name, a thread, a life (state, start and
    finish times, last error, processor switches) and the common part of its status.

    Subclasses run the job in :meth:`_run` on the thread :meth:`start` starts.
    """

    def __init__(self, statement: n.Statement, name: str | None, redactor: Redactor) -> None:
        self.name = name or statement.name
        self.statement = statement
        self.redactor = redactor
        self._lateness_ms = allowed_lateness(statement.plan)
        self._state = JobState.RUNNING
        self._last_error: str | None = None
        self._switches: list[str] = []
        self._started = datetime.now(UTC)
        self._finished: datetime | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the job thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"flowsql-job-{self.name}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job thread to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        raise NotImplementedError

    def _switched(self, before: str, after: str) -> None:
        self._switches.append(f"{before} -> {after}")
        log.info("job %s: switched processor %s", self.name, self._switches[-1])

    def _status(
        self,
        *,
        state: JobState,
        label: tuple[str, str, int],
        counters: Counters,
        watermark: int | None,
        partition_watermarks: dict[int, int | None],
        last_error: str | None,
        pause_requested: bool,
        **kind_fields: Any,
    ) -> JobStatus:
        """The status fields every job kind fills the same way; ``kind_fields``
        are the rest (late and dead-lettered counts, failures, Kafka details)."""
        st = self.statement
        name, version, partitions = label
        slowest, lag = slowest_partition(partition_watermarks)
        return JobStatus(
            name=self.name,
            kind=st.kind,
            state=state.value,
            processor=name,
            processor_version=version,
            num_partitions=partitions,
            records_in=counters.records_in,
            records_out=counters.records_out,
            watermark_ms=watermark,
            watermark=iso_time(watermark),
            last_error=error_headline(self.redactor.text(last_error)),
            started_at=self._started.isoformat(timespec="seconds"),
            finished_at=self._finished.isoformat(timespec="seconds") if self._finished else None,
            sources=list(st.sources),
            properties=self.redactor.properties(st.properties),
            annotations=dict(st.annotations),
            sql=self.redactor.sql(st.sql),
            pause_requested=pause_requested and state is JobState.RUNNING,
            switches=list(self._switches),
            partition_watermarks={str(q): m for q, m in sorted(partition_watermarks.items())},
            slowest_partition=slowest,
            slowest_partition_lag_ms=lag,
            **kind_fields,
        )


class Job(JobThread):
    """One deployed statement running on its own thread.

    Args:
        statement: the planned statement.
        source: where its input comes from.
        sink: where its output goes.
        choice: the processor to start with.
        policy: what to do with a batch that raises.
        dead_letters: where bad records go.
        redactor: masks secrets in everything the job shows.
        processor_factory: builds processors (tests inject fakes).
        name: the job's name (default: the statement's).
        savepoints: where a stopped job leaves its savepoint (None: nowhere).
        restore: what to start from (None: nothing).
        batch_size: larger source batches are cut to this many rows (zero-copy).
    """

    def __init__(
        self,
        statement: n.Statement,
        *,
        source: Source,
        sink: Sink,
        choice: ProcessorChoice,
        policy: FailurePolicy,
        dead_letters: ClosingDeadLetterSink,
        redactor: Redactor,
        processor_factory: ProcessorFactory = make_processor,
        name: str | None = None,
        savepoints: Savepoints | None = None,
        restore: Restore | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(statement, name, redactor)
        self.source = source
        self.sink = sink
        self.choice = choice
        self.policy = policy
        self.dead_letters = dead_letters
        self.savepoints = savepoints
        self._factory = processor_factory
        self._counters = _Counters()
        self.boundary = Boundary()  # held while the processor or the sink is in use
        self._released = False
        self._failures = BatchFailureHandler(
            policy,
            job=self.name,
            write_letters=dead_letters.write,
            stopping=self.boundary.stopping,
            is_fatal=lambda exc: is_processor_broken(exc, self.processor),
        )
        self.driver = Driver(
            processor_factory(statement, choice, dead_letters),
            sink,
            counters=self._counters,
            failures=self._failures,
            boundary=self.boundary,
            batch_size=batch_size,
            on_batch=self._refresh_counters,
        )
        self._restored = None if restore is None else self._start_from(restore)
        self._processor_label = _label(self.processor)

    @property
    def processor(self) -> JobProcessor:
        """The processor running the statement now (a switch replaces it)."""
        return self.driver.processor

    # -- control (any thread) -------------------------------------------------------

    @property
    def state(self) -> JobState:
        return self._state

    def pause(self, timeout: float = 30.0) -> JobState:
        """Pause at the next batch boundary: wait up to ``timeout`` s for the batch
        being processed; the pause applies after it either way."""
        self.boundary.request_pause()
        with self.boundary.hold(timeout) as reached:
            if reached and not self._state.terminal and self.boundary.pause_requested:
                try:
                    self._drain()
                    self.sink.flush()
                except Exception as exc:  # a dead V2 worker, a broken sink: the job fails
                    self._fail(exc)
                    return self._state
                self._set_state(JobState.PAUSED)
        return self._state

    def resume(self) -> JobState:
        """Let a paused job continue."""
        with self.boundary.hold(None):
            self.boundary.request_resume()
            if self._state is JobState.PAUSED:
                self._set_state(JobState.RUNNING)
        return self._state

    def stop(self, timeout: float = 10.0) -> JobState:
        """Stop at the next batch boundary (open windows are not emitted) and wait up
        to ``timeout`` s for the job thread to end."""
        self.request_stop()
        with self.boundary.hold(timeout) as reached:
            if reached:
                self._stop_at_boundary()
        self.join(timeout)
        return self._state

    def request_stop(self) -> None:
        """Ask the job to stop at the next batch boundary; do not wait."""
        self.boundary.request_stop()

    def close_unstarted(self) -> None:
        """Release the processor, source and sinks of a job that was never started."""
        with self.boundary.hold(None):
            self._release(keep_output=False)
        close_quietly(self.source, self.name)

    def check_health(self) -> None:
        """Fail the job now if its processor broke while the job was idle (a V2
        worker died); called by the server's watchdog. Never waits for a batch."""
        if self._state.terminal:
            return
        with self.boundary.try_hold() as held:
            failure = self.processor.failure if held else None
            if failure is not None and not self._state.terminal:
                self._fail(failure)

    def switch_processor(self, choice: ProcessorChoice, timeout: float = 30.0) -> JobStatus:
        """Move the job to another processor at the next batch boundary.

        Raises:
            ExecutionError: the job has ended, the batch being processed did not
                finish within ``timeout`` s, or the switch failed (the job then
                keeps its processor).
        """
        self._check_not_ended("switch")
        new = self._factory(self.statement, choice, self.dead_letters)  # Step 1
        old: JobProcessor | None = None
        try:
            new.snapshot()  # answered once V2 workers have started: no wait at the boundary
            with self.boundary.hold(timeout) as reached:
                if not reached:
                    raise ExecutionError(
                        f"job '{self.name}': no batch boundary within {timeout}s; try again"
                    )
                self._check_not_ended("switch")
                old = self._swap(new, choice)
        finally:
            close_quietly(new if old is None else old, self.name)  # Step 6
        return self.status()

    def _check_not_ended(self, action: str) -> None:
        if self._state.terminal:
            raise ExecutionError(f"job '{self.name}' is {self._state.value}: cannot {action}")

    def status(self) -> JobStatus:
        """A view of the job, read without waiting for the batch in progress."""
        c = self._counters
        failures = self._failures.counters
        return self._status(
            state=self._state,
            label=self._processor_label,
            counters=c,
            watermark=self._watermark(),
            partition_watermarks=self.processor.metrics.partition_watermarks,
            last_error=self._last_error or self._failures.last_error,
            pause_requested=self.boundary.pause_requested,
            records_per_second=rate(c.records_in - c.restored_in, c.active_s),
            late_records=c.late_carried + c.late_now,
            dead_lettered=c.dead_carried + c.dead_now + failures.dead_lettered,
            failed_batches=failures.failed_batches,
            retries=failures.retries,
            failure_strategy=self.policy.strategy.value,
            restored=None if self._restored is None else dict(self._restored),
        )

    def _watermark(self) -> int | None:
        """The processor's watermark (minimum over input partitions), else the
        largest event time seen minus the allowed lateness (a restored job
        before its first batch)."""
        mark = self.processor.metrics.watermark
        high = self._counters.max_event_time
        if mark is None and high is not None:
            return high - self._lateness_ms
        return mark

    # -- the job thread ---------------------------------------------------------------

    def _run(self) -> None:
        batches = skip_rows(self.source.batches(), self._counters.position)
        try:
            outcome = self.driver.run(batches, at_end=self._input_ended)
            if outcome is Outcome.STOPPED:
                self._stop_at_boundary()
        except StopRequested:
            self._stop_at_boundary()
        except BaseException as exc:  # the thread records every failure
            self._fail(exc)
        finally:
            self._close()

    def _input_ended(self) -> None:
        """The driver flushed the processor and the sink at the end of input."""
        self._save(finished=True)
        self._end(JobState.FINISHED)

    def _drain(self) -> None:
        """Emit what a V2 processor still holds for batches it was already given."""
        if not is_processor_broken(Exception(), self.processor):
            self.driver.drain()

    def _refresh_counters(self) -> None:
        metrics = self.processor.metrics
        c = self._counters
        c.late_now = metrics.late_records
        c.dead_now = metrics.dead_lettered + self.source.dead_lettered
        high = metrics.max_event_time
        if high is not None and (c.max_event_time is None or high > c.max_event_time):
            c.max_event_time = high

    # -- transitions (callers hold the boundary) -----------------------------------------------

    def _swap(self, new: JobProcessor, choice: ProcessorChoice) -> JobProcessor:
        """Steps 2-5 of a switch; returns the old processor (still open)."""
        old = self.processor
        self._drain()  # Step 2
        new.restore(old.snapshot())  # Steps 3 and 4
        self._refresh_counters()  # Step 5
        c = self._counters
        c.late_carried += c.late_now
        c.dead_carried += old.metrics.dead_lettered
        c.late_now = 0
        c.dead_now = self.source.dead_lettered
        self.driver.processor, self.choice = new, choice
        self._processor_label = _label(new)
        self._switched(_label_text(old), _label_text(new))
        return old

    def _stop_at_boundary(self) -> None:
        with self.boundary.hold(None):
            if self._state.terminal:
                return
            try:
                self._drain()
                self.sink.flush()
                self._save(finished=False)
            except Exception as exc:
                self._last_error = self.redactor.text(
                    f"while stopping: {_describe(exc, self.processor)}"
                )
                log.warning("job %s: %s", self.name, self._last_error)
            self._end(JobState.STOPPED)

    # -- savepoints ----------------------------------------------------------------------

    def _start_from(self, restore: Restore) -> dict[str, Any]:
        """Restore a savepoint into the new processor and continue its counters;
        returns what ``status()`` shows. A snapshot that does not restore leaves
        the job starting from nothing, with the reason."""
        if restore.state is not None:
            try:
                self.processor.restore(restore.state)
            except Exception as exc:
                log.warning("job %s: savepoint not restored: %s", self.name, exc)
                close_quietly(self.processor, self.name)
                self.driver.processor = self._factory(
                    self.statement, self.choice, self.dead_letters
                )
                return {
                    "restored": False,
                    "reason": f"restore failed: {_describe(exc, self.processor)}",
                }
        counts, c = restore.counts, self._counters
        c.records_in = c.restored_in = counts.records_in
        c.records_out = counts.records_out
        c.late_carried = counts.late_records
        c.dead_carried = restore.dead_carried
        c.max_event_time = counts.max_event_time
        c.start_position = restore.position
        if restore.state is not None:
            log.info("job %s: restored %s", self.name, restore.report)
        return restore.report

    def _save(self, *, finished: bool) -> None:
        """Write the savepoint: the processor snapshot and the counters after a stop,
        a marker that the input ended after the last batch (nothing to resume)."""
        if self.savepoints is None:
            return
        status = self.status()
        counts = JobCounts(
            records_in=status.records_in,
            records_out=status.records_out,
            late_records=status.late_records,
            dead_lettered=status.dead_lettered,
            source_dead_lettered=self.source.dead_lettered,
            max_event_time=self._counters.max_event_time,
        )
        try:
            state = None if finished else self.processor.snapshot()
            saved = self.savepoints.save(state, counts, self._counters.position)
        except Exception as exc:
            log.warning("job %s: savepoint not written: %s", self.name, exc)
            return
        log.info(
            "job %s: savepoint %d written (%d records in)", self.name, saved, counts.records_in
        )

    def _end(self, state: JobState) -> None:
        """Release the processor and the sink, then publish the final state."""
        problem = self._release(keep_output=state is not JobState.FAILED)
        if problem and state is JobState.FINISHED:
            state, self._last_error = JobState.FAILED, problem
        self._finished = datetime.now(UTC)
        self._state = state
        self.boundary.request_stop()  # the job thread, paused or not, ends at its next step
        log.info("job %s: %s", self.name, state.value)

    def _release(self, *, keep_output: bool) -> str | None:
        """Close the processor, the sink (abort it after a failure) and the dead-letter
        sink, once. Returns the error of a sink that could not be closed."""
        if self._released:
            return None
        self._released = True
        close_quietly(self.processor, self.name)
        close_quietly(self.dead_letters, self.name)
        try:
            if keep_output:
                self.sink.close()
            else:
                self.sink.abort()
        except Exception as exc:
            log.error("job %s: closing the sink failed: %s", self.name, exc)
            return self.redactor.text(f"closing the sink failed: {exc}")
        return None

    def _set_state(self, state: JobState) -> None:
        self._state = state

    def _fail(self, exc: BaseException) -> None:
        reason = self.redactor.text(_describe(exc, self.processor)) or ""
        with self.boundary.hold(None):
            self._last_error = reason
            log.error("job %s failed: %s", self.name, reason)
            if not self._state.terminal:
                self._end(JobState.FAILED)

    def _close(self) -> None:
        with self.boundary.hold(None):
            if not self._state.terminal:
                self._end(JobState.FAILED)
        close_quietly(self.source, self.name)


def _label(processor: JobProcessor) -> tuple[str, str, int]:
    return processor.processor_name, processor.processor_version, processor.num_partitions


def _label_text(processor: JobProcessor) -> str:
    return f"{processor.processor_version}({processor.num_partitions})"


def _describe(exc: BaseException, processor: JobProcessor) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FlowSQLError) else str(exc)
    if is_processor_broken(exc, processor) and processor.processor_version != "V1":
        return f"processor {processor.processor_name} failed: {text}"
    return text


def rate(records: int, seconds: float) -> float:
    """Records per second of active time, rounded for status."""
    return round(records / seconds, 1) if seconds > 0 else 0.0


def slowest_partition(marks: dict[int, int | None]) -> tuple[int | None, int | None]:
    """The partition with the lowest watermark (one with none first) and its
    lag behind the highest, in ms; (None, None) for fewer than two partitions."""
    if len(marks) < 2:
        return None, None
    slowest = min(marks, key=lambda q: (marks[q] is not None, marks[q] or 0, q))
    seen = [m for m in marks.values() if m is not None]
    low = marks[slowest]
    return slowest, None if low is None or not seen else max(seen) - low


def error_headline(error: str | None) -> str | None:
    """An error without the worker traceback V2 appends (that stays in the log)."""
    if error is None:
        return None
    return error.split("\nTraceback", 1)[0].rstrip()[:2000]


def allowed_lateness(plan: n.Node) -> int:
    """The allowed lateness (ms) of the plan's windowed aggregate, 0 without one."""
    for node in n.walk(plan):
        if isinstance(node, n.Aggregate) and node.window is not None:
            return node.allowed_lateness_ms
    return 0


def iso_time(ms: int | None) -> str | None:
    """Epoch ms as an ISO-8601 UTC time (None when out of range)."""
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


class Closeable(Protocol):
    """What a job releases when it ends: processors, sources, sinks, clients."""

    def close(self) -> None: ...


def close_quietly(thing: Closeable, job: str) -> None:
    """Close ``thing``; log, never raise, when closing fails."""
    try:
        thing.close()
    except Exception as exc:
        log.warning("job %s: closing %s failed: %s", job, type(thing).__name__, exc)
