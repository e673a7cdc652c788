"""V2: ``PartitionedJobCoordinator``, the hash-partitioned multi-core processor.

The coordinator runs in the caller's thread; each partition is a worker process
with a private engine (``flowsql.runtime.worker``). For every input batch:

1. assign event time (``_timestamp``) here, before routing, exactly as V1's
   engine would;
2. keep the watermarks per input partition (``_partition``) here, with the
   same :class:`~flowsql.exec.watermarks.PartitionClock` as V1's engine, and
   for windowed queries stamp each row with ``__prior_max_event_time``: the
   watermark base before it over the whole input (the largest earlier event
   time; with several input partitions the minimum over them), so each
   partition decides lateness exactly as V1 does (an unpartitioned batch in
   event-time order needs no stamp: none of its rows can be late);
3. route rows by a stable hash of the routing key (``HashRouter``) and send
   each partition its rows together with the new watermark base, to which
   every partition advances, so windows close in all partitions together (the
   workers' engines are driven: they never advance on their own rows).
   Declared, ended and idle input partitions (:meth:`expect_partitions`,
   :meth:`end_partition`, :meth:`idle_partition`) change the base here, in
   order with the batches; a rise is sent to every partition;
4. collect the partitions' outputs for the batch and merge them into V1's
   order (``flowsql.runtime.ordering``): window end, window start, then key for
   aggregates; arrival order for everything else.

Up to ``max_in_flight`` batches per partition are outstanding, so routing the
next batch overlaps the partitions' work; outputs therefore come back from a
later ``process_batch`` (or ``drain``/``flush``) call, always in input order.

No wait on a worker is unbounded: a worker that dies is seen at once (its
process sentinel), one that stalls with work outstanding within
``'v2.heartbeat.timeout'`` (see ``flowsql.runtime.worker``); either fails the
call with an :class:`ExecutionError` naming the partition and the pid.

Queries whose routing strategy is ``single`` (LIMIT, DISTINCT, ORDER BY over
everything, ...) run on one partition; ``two_phase`` queries (global
aggregates) also run on one partition on this path, while ``run_splits``
(the source-parallel path, ``flowsql.runtime.splits``) aggregates them in
two phases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any, NoReturn

import pyarrow as pa

from flowsql.engine import Engine, EngineMetrics, event_time_column, report_watermarks
from flowsql.errors import BatchError, ExecutionError
from flowsql.exec.compile import compile_plan
from flowsql.exec.eventtime import (
    PRIOR_MAX_EVENT_TIME,
    EventTimeAssigner,
    allowed_lateness,
    has_windowed_aggregate,
)
from flowsql.exec.operator import Operator, OperatorContext
from flowsql.exec.watermarks import SNAPSHOT_KEY, PartitionClock, partition_ids
from flowsql.exec.windows import NO_TIME
from flowsql.plan import nodes as n
from flowsql.plan.partial import SplitPlan, reads_column, split_plan
from flowsql.plan.routing import routing
from flowsql.records import OFFSET, TIMESTAMP, DeadLetterSink, ListDeadLetters
from flowsql.runtime.ordering import output_order
from flowsql.runtime.router import HashRouter
from flowsql.runtime.splits import (
    SPLITS_IN_FLIGHT,
    PartialMerge,
    SourceSplit,
    SplitTask,
    as_batches,
    shift_letter,
)
from flowsql.runtime.worker import (
    EngineSpec,
    PartitionError,
    PartitionWorker,
    Reply,
    close_all,
    heartbeat_timeout,
    worker_env,
)
from flowsql.state.snapshots import merge_states, split_state

log = logging.getLogger(__name__)

#: Batches each partition may have outstanding before the coordinator waits.
DEFAULT_MAX_IN_FLIGHT = 3


class PartitionedJobCoordinator:
    """V2: N worker processes, each owning a private engine for ``statement``.

    Args:
        statement: the planned query.
        num_partitions: partitions to run (default: CPU count). Queries that
            cannot be hash-partitioned use one; see :attr:`routing`.
        event_time: event-time column when the query does not name one.
        dead_letters: sink for undecodable and (with the dlq strategy) late rows.
        job: name used in errors, process names and metrics.
        max_in_flight: batches a partition may have outstanding (backpressure).
        heartbeat_timeout_s: a worker silent this long with work outstanding
            fails the job (0: never); default: the WITH key
            ``'v2.heartbeat.timeout'``, else 10 s.
    """

    processor_name = "PartitionedJobCoordinator"
    processor_version = "V2"

    def __init__(
        self,
        statement: n.Statement,
        *,
        num_partitions: int | None = None,
        event_time: str | None = None,
        dead_letters: DeadLetterSink | None = None,
        job: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        heartbeat_timeout_s: float | None = None,
    ) -> None:
        self.statement = statement
        self.job = job or statement.name
        self.event_time = event_time
        self.requested_partitions = max(1, num_partitions or os.cpu_count() or 1)
        self.routing = _routing(statement)
        partitions = self.requested_partitions if self.routing.strategy == "hash" else 1
        self.router = HashRouter(self.routing.key_columns, partitions)
        self.dead_letters: DeadLetterSink = dead_letters or ListDeadLetters()
        self.metrics = EngineMetrics()
        self.max_in_flight = max(1, max_in_flight)
        if heartbeat_timeout_s is None:
            heartbeat_timeout_s = heartbeat_timeout(statement.properties)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        source = statement.sources[0] if statement.sources else ""
        self._clock = EventTimeAssigner(event_time_column(statement, event_time), source)
        self._stamp_prior_max = has_windowed_aggregate(statement.plan)
        self._watermarks = PartitionClock()
        self._lateness = allowed_lateness(statement.plan)
        self.order = output_order(statement, partitions)
        self._arrived = 0  # rows routed so far (numbers rows when ordering by arrival)
        self._late = [0] * partitions
        self._pending: dict[int, dict[int, list[pa.RecordBatch]]] = {}
        self._next_seq = 0
        self._ready: list[pa.RecordBatch] = []
        self._done = False
        self._closed = False
        self._ran_splits = False
        self._inputs: dict[int, pa.RecordBatch] = {}  # batches in flight, by seq
        self._errors: dict[int, PartitionError] = {}
        self._failed: list[BatchError] = []
        self._state_codec: list[Operator] | None = None
        self.workers: list[PartitionWorker] = []
        try:
            spec = EngineSpec(self.order.statement, self.job)
            env = worker_env(partitions)
            self.workers = [self._start_worker(p, spec, env) for p in range(partitions)]
            for w in self.workers:
                w.wait_ready()  # they start in parallel; a worker that cannot start fails here
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ protocol

    @property
    def num_partitions(self) -> int:
        """Partitions actually running (1 when the query cannot be partitioned)."""
        return self.router.num_partitions

    @property
    def done(self) -> bool:
        return self._done

    @property
    def failure(self) -> ExecutionError | None:
        """The error of a worker that died or stalled, checked without waiting
        (None while all are healthy)."""
        for w in self.workers:
            error = w.failure()
            if error is not None:
                return error
        return None

    def check_workers(self) -> None:
        """Fail (close every worker and raise) if a worker died or stalled."""
        error = self.failure
        if error is not None:
            self.fail(error)

    @property
    def tick(self) -> float | None:
        """Longest wait on the workers between two checks of :meth:`check_workers`."""
        return self.workers[0].tick if self.workers else None

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Route one batch to the partitions; return the outputs finished so far."""
        self._check_open()
        if isinstance(batch, pa.Table):
            return [o for b in batch.to_batches() for o in self.process_batch(b)]
        self._collect(block=False)
        self._raise_failed()
        if not self._done and batch.num_rows:
            self._route(batch)
        self._collect(block=False)
        return self._take_ready()

    def expect_partitions(self, partitions: Iterable[int]) -> None:
        """The input's partitions (``_partition`` values) known to exist: those
        not seen yet hold the watermark until they send, end or go idle."""
        self._check_open()
        self._watermarks.expect(partitions)
        report_watermarks(self.metrics, self._watermarks, self._lateness)

    def end_partition(self, partition: int) -> list[pa.RecordBatch]:
        """A partition's bounded input is finished (an empty one too): it no
        longer holds the watermark back. Returns the outputs finished so far."""
        self._check_open()
        return self._signal(self._watermarks.end(partition))

    def idle_partition(self, partition: int) -> list[pa.RecordBatch]:
        """A partition sent nothing for the idle timeout: it no longer holds the
        watermark back until its next record. Returns the outputs finished so far."""
        self._check_open()
        return self._signal(self._watermarks.idle(partition))

    def _signal(self, rose: bool) -> list[pa.RecordBatch]:
        """After a partition signal: send a risen watermark base to every partition."""
        report_watermarks(self.metrics, self._watermarks, self._lateness)
        self._collect(block=False)
        self._raise_failed()
        if rose and not self._done:
            self._broadcast("batch", self._watermarks.floor)
        self._collect(block=False)
        return self._take_ready()

    def drain(self) -> list[pa.RecordBatch]:
        """Wait for every batch already given; return all outputs not yet returned.

        The job server calls this before ``snapshot()`` when it switches a job
        to another processor, so that no output is lost.
        """
        self._check_open()
        self._collect(block=True)
        self._raise_failed()
        return self._take_ready()

    def flush(self) -> list[pa.RecordBatch]:
        """End of input: every partition emits its open windows and final aggregates."""
        self._check_open()
        if self._ran_splits:
            return []  # run_splits already flushed
        self._collect(block=True)
        self._raise_failed()
        self._broadcast("flush")
        self._collect(block=True)
        self._raise_failed()
        return self._take_ready()

    def snapshot(self) -> dict[str, Any]:
        """Partition-independent state, in the format of ``Engine.snapshot()``.

        Restorable by V1 (``SimpleJobProcessor``) and by V2 with any partition
        count. Outputs of batches in flight are kept for the next call; the job
        server calls ``drain()`` first.
        """
        self._check_open()
        self._collect(block=True)
        states = self._ask_all("snapshot")
        merged = merge_states(states, self._operators(), self.router)
        merged["max_event_time"] = self.metrics.max_event_time
        merged[SNAPSHOT_KEY] = self._watermarks.snapshot()  # the workers keep none
        return merged

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot taken by V1 or by V2 with any partition count."""
        self._check_open()
        self._collect(block=True)
        parts = split_state(state, self._operators(), self.router, arrival=self.order.arrival)
        for w, part in zip(self.routed, parts, strict=True):
            self.send(w, "restore", part)
        self._collect(block=True)
        self.metrics.max_event_time = state.get("max_event_time")
        self._watermarks = PartitionClock.restore(
            state.get(SNAPSHOT_KEY), self.metrics.max_event_time
        )
        report_watermarks(self.metrics, self._watermarks, self._lateness)

    def _operators(self) -> list[Operator]:
        """Operators of the partitions' plan, built here only to split and
        merge their state (they hold none)."""
        if self._state_codec is None:
            self._state_codec = compile_plan(self.order.statement.plan, OperatorContext(self.job))
        return self._state_codec

    def can_split(self) -> bool:
        """True when :meth:`run_splits` can run this query (it cannot when the
        query reads ``_offset``, which splits number on their own)."""
        return not reads_column(self.statement, OFFSET)

    def run_splits(self, splits: Iterable[SourceSplit]) -> Iterator[pa.RecordBatch]:
        """Run the query over a bounded input given as splits, each read and
        decoded by a worker (``flowsql.runtime.splits``); yield every output
        batch in order, the end-of-input flush included.

        Uses ``requested_partitions`` workers whatever the routing strategy:
        what crosses processes is partial aggregates (or filtered rows), which
        the coordinator merges in input order. Decode errors count in
        ``metrics.dead_lettered``.
        """
        self._check_open()
        plan = split_plan(self.statement)
        log.debug("job %s: source-parallel run: %s", self.job, plan.reason)
        self._ensure_workers(self.requested_partitions)
        run = SplitRun(self, plan)
        self._ran_splits = True
        yield from run.run(list(splits))
        self._done = True

    def _ensure_workers(self, count: int) -> None:
        spec = EngineSpec(self.statement, self.job)
        env = worker_env(count)
        while len(self.workers) < count:
            self.workers.append(self._start_worker(len(self.workers), spec, env))
        for w in self.workers:
            w.wait_ready()
        self._late += [0] * (count - len(self._late))

    def _start_worker(self, p: int, spec: EngineSpec, env: dict[str, str]) -> PartitionWorker:
        return PartitionWorker(p, spec, self.job, env, heartbeat_timeout=self.heartbeat_timeout_s)

    @property
    def closed(self) -> bool:
        """True once closed, by the caller or by :meth:`fail` after a worker error."""
        return self._closed

    def close(self) -> None:
        """Stop and reap every worker process (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        close_all(self.workers)

    def __enter__(self) -> PartitionedJobCoordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- routing

    def _route(self, batch: pa.RecordBatch) -> None:
        given = batch
        self.metrics.records_in += batch.num_rows
        batch, letters = self._clock.assign(batch)
        if letters:
            self.metrics.dead_lettered += len(letters)
            self.dead_letters.write(letters)
        if not batch.num_rows:
            return
        ts = batch.column(TIMESTAMP).to_numpy(zero_copy_only=False)
        stamp = self._watermarks.arrive(ts, partition_ids(batch), rows=self._stamp_prior_max)
        if stamp.prior is not None:
            batch = batch.append_column(PRIOR_MAX_EVENT_TIME, pa.array(stamp.prior))
        prev = self.metrics.max_event_time
        self.metrics.max_event_time = stamp.high if prev is None else max(prev, stamp.high)
        report_watermarks(self.metrics, self._watermarks, self._lateness)
        base = None if stamp.base == NO_TIME else stamp.base
        batch = self.order.tag(batch, self._arrived)
        self._arrived += batch.num_rows
        parts = self.router.split(batch)
        self._inputs[self.routed[0].sent] = given
        for w, part in zip(self.routed, parts, strict=True):
            self._wait_for_credit(w)
            self.send(w, "batch", base, [part])

    @property
    def routed(self) -> list[PartitionWorker]:
        """The workers that own the routed partitions."""
        return self.workers[: self.router.num_partitions]

    def _broadcast(self, kind: str, arg: Any = None) -> None:
        for w in self.routed:
            self._wait_for_credit(w)
            self.send(w, kind, arg)

    def _ask_all(self, kind: str) -> list[Any]:
        """Send ``kind`` to every partition and return their answers' values."""
        values: list[Any] = [None] * len(self.routed)
        for p, w in enumerate(self.routed):
            seq = self.send(w, kind)
            while True:
                got_seq, out, reply = self._receive(w)
                self._store(p, got_seq, out, reply)
                if got_seq == seq:
                    values[p] = reply
                    break
        self._merge_complete()
        for reply in values:
            if isinstance(reply, PartitionError):
                raise reply
        return [reply.value for reply in values]

    # ----------------------------------------------------------- collecting

    def send(
        self, w: PartitionWorker, kind: str, arg: Any = None, batches: Sequence[pa.RecordBatch] = ()
    ) -> int:
        """Send one message to worker ``w``; a broken pipe fails the job. Returns its sequence number."""
        try:
            return w.send(kind, arg, batches)
        except ExecutionError as exc:
            self.fail(exc)

    def _wait_for_credit(self, w: PartitionWorker) -> None:
        while w.in_flight >= self.max_in_flight:
            self._store(w.partition, *self._receive(w))
        self._merge_complete()

    def _collect(self, *, block: bool) -> None:
        """Store every available reply (all outstanding ones when ``block``)."""
        for p, w in enumerate(self.routed):
            while w.in_flight and (block or self._ready_to_read(w)):
                self._store(p, *self._receive(w))
        self._merge_complete()

    def _ready_to_read(self, w: PartitionWorker) -> bool:
        if w.conn.poll():
            return True
        if w.process.exitcode is not None:
            self.fail(w.death_error())
        return False

    def _receive(
        self, w: PartitionWorker
    ) -> tuple[int, list[pa.RecordBatch], Reply | PartitionError]:
        """The next reply of ``w`` (or the error its handler raised); while
        waiting, a death or stall of *any* worker raises."""
        others = [x for x in self.workers if x is not w]
        sentinels: list[Any] = [w.conn, w.process.sentinel, *(x.process.sentinel for x in others)]
        while True:
            ready = wait(sentinels, self.tick)
            if not ready:
                self.check_workers()
                continue
            for x in others:
                if x.process.sentinel in ready:
                    self.fail(x.death_error())
            try:
                got = w.receive(timeout=0)
            except PartitionError as exc:
                return exc.seq, [], exc
            except ExecutionError as exc:
                self.fail(exc)
            if got is not None:
                return got

    def fail(self, error: ExecutionError) -> NoReturn:
        """Log ``error``, close every worker and raise it: the processor is unusable."""
        log.error("%s", error)
        self.close()
        raise error

    def _store(
        self, p: int, seq: int, out: list[pa.RecordBatch], reply: Reply | PartitionError
    ) -> None:
        if isinstance(reply, PartitionError):
            self._errors.setdefault(seq, reply)
            self._pending.setdefault(seq, {})[p] = []
            return
        self._late[p] = reply.late_records
        self.metrics.late_records = sum(self._late)
        if reply.dead_letters:
            self.metrics.dead_lettered += len(reply.dead_letters)
            self.dead_letters.write(reply.dead_letters)
        if reply.done:
            self._done = True
        self._pending.setdefault(seq, {})[p] = out

    def _merge_complete(self) -> None:
        """Move the outputs of every batch all partitions answered to ``_ready``."""
        routed = self.router.num_partitions
        while len(got := self._pending.get(self._next_seq, {})) == routed:
            seq = self._next_seq
            del self._pending[seq]
            self._next_seq += 1
            given = self._inputs.pop(seq, None)
            if seq in self._errors:
                error = self._errors.pop(seq)
                self._failed.append(BatchError(str(error), given))
                continue
            self._ready += self.order.merge([got[p] for p in range(routed)])

    def _raise_failed(self) -> None:
        if self._failed:
            raise self._failed.pop(0)

    def _take_ready(self) -> list[pa.RecordBatch]:
        out, self._ready = self._ready, []
        self.metrics.records_out += sum(b.num_rows for b in out)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutionError(f"job '{self.job}': the V2 coordinator is closed")


def _routing(statement: n.Statement) -> Any:
    return routing(statement)


# -------------------------------------------------------- source-parallel runs


class SplitRun:
    """One source-parallel run of a coordinator's query over a list of splits.

    Protocol, per split taken in input order:

    1. count its records, renumber and forward its dead letters;
    2. note ``M`` = max event time before it, then raise the max by its own;
    3. two-phase: merge its partials (late ones, by ``M``, are counted) and emit
       the windows the new max closes; else: its rows as they are;
    4. push what was emitted through the upper plan, if any, and yield it.
    """

    def __init__(self, coordinator: PartitionedJobCoordinator, plan: SplitPlan) -> None:
        self.co = coordinator
        self.plan = plan
        self.merge = PartialMerge(plan) if plan.two_phase else None
        self.upper = _upper_engine(plan, coordinator) if plan.upper is not None else None
        self.splits: list[Any] = []
        self.line_counts: list[int] = []  # lines of splits[i], counted when first needed
        self.worker_late = 0
        self.upper_dead = 0

    def run(self, splits: list[Any]) -> Iterator[pa.RecordBatch]:
        co = self.co
        self.splits = splits
        exact = self.plan.batch_exact
        tasks = [SplitTask(s, self.plan.lower, co.event_time, exact) for s in splits]
        owner: dict[tuple[int, int], int] = {}  # (partition, seq) -> split index
        results: dict[int, tuple[list[pa.RecordBatch], Any]] = {}
        sent = taken = 0
        while taken < len(tasks) and not self._done():
            for w in co.workers:
                while sent < len(tasks) and w.in_flight < min(co.max_in_flight, SPLITS_IN_FLIGHT):
                    owner[(w.partition, co.send(w, "split", tasks[sent]))] = sent
                    sent += 1
            for w, (seq, out, reply) in self._receive_any():
                results[owner.pop((w.partition, seq))] = (out, reply)
            while taken in results and not self._done():
                yield from self._take(taken, *results.pop(taken))
                taken += 1
        while any(w.in_flight for w in co.workers):  # stopped early (LIMIT): discard
            self._receive_any()
        yield from self._finish()

    def _done(self) -> bool:
        return self.upper is not None and self.upper.done

    def _receive_any(self) -> list[tuple[Any, tuple[int, list[pa.RecordBatch], Any]]]:
        busy = [w for w in self.co.workers if w.in_flight]
        waited: list[Any] = [
            *(w.conn for w in busy),
            *(w.process.sentinel for w in self.co.workers),
        ]
        ready = wait(waited, self.co.tick)
        if not ready:
            self.co.check_workers()  # a worker that stalled fails the run
            return []
        got = []
        for w in self.co.workers:
            if w.conn in ready or w.process.sentinel in ready:
                try:
                    reply = w.receive(timeout=0)
                except ExecutionError as exc:
                    self.co.fail(exc)
                if reply is not None:
                    got.append((w, reply))
        return got

    def _take(self, index: int, out: list[pa.RecordBatch], reply: Any) -> Iterator[pa.RecordBatch]:
        co, result = self.co, reply.value
        # Step 1
        co.metrics.records_in += result.records
        if reply.dead_letters:
            base = self._lines_before(index)
            letters = [shift_letter(x, base) for x in reply.dead_letters]
            co.metrics.dead_lettered += len(letters)
            co.dead_letters.write(letters)
        # Step 2
        before = co.metrics.max_event_time
        if reply.max_event_time is not None:
            high = reply.max_event_time
            co.metrics.max_event_time = high if before is None else max(before, high)
        self.worker_late += reply.late_records
        # Step 3
        if self.merge is not None:
            self.merge.add(out, before)
            out = as_batches(self.merge.emit(co.metrics.max_event_time))
        # Step 4
        yield from self._emit(out)

    def _lines_before(self, index: int) -> int:
        while len(self.line_counts) < index:
            self.line_counts.append(self.splits[len(self.line_counts)].lines())
        return sum(self.line_counts[:index])

    def _finish(self) -> Iterator[pa.RecordBatch]:
        if self.merge is not None and not self._done():
            yield from self._emit(as_batches(self.merge.emit(None)))
        if self.upper is not None:
            yield from self._emit([], flush=True)
        self._count_late()

    def _emit(
        self, batches: list[pa.RecordBatch], *, flush: bool = False
    ) -> Iterator[pa.RecordBatch]:
        out = batches
        if self.upper is not None:
            out = [o for b in batches for o in self.upper.process(b)]
            if flush:
                out += self.upper.flush()
            dead = self.upper.metrics.dead_lettered
            self.co.metrics.dead_lettered += dead - self.upper_dead
            self.upper_dead = dead
        self._count_late()
        for b in out:
            if b.num_rows:
                self.co.metrics.records_out += b.num_rows
                yield b

    @property
    def _base_dead(self) -> int:
        return self.co.metrics.dead_lettered - (
            self.upper.metrics.dead_lettered if self.upper else 0
        )

    def _count_late(self) -> None:
        late = self.worker_late + (self.merge.late_records if self.merge else 0)
        late += self.upper.metrics.late_records if self.upper is not None else 0
        self.co.metrics.late_records = late


def _upper_engine(plan: SplitPlan, co: PartitionedJobCoordinator) -> Engine:
    assert plan.upper is not None
    return Engine(plan.upper, dead_letters=co.dead_letters, job=co.job, stamped=True)
