"""Kafka jobs: consumer groups, per-partition state, checkpoints, exactly-once.

A Kafka job reads a topic as a member of a consumer group. State is kept per
Kafka partition: every assigned partition gets its own processor (a *task*),
checkpointed under that partition's key in a checkpoint store. When a
rebalance moves a partition to another process, the new owner restores the
partition's state from the (shared) store before it processes a record, so
several flowsql processes with one ``group.id`` split a job between them.

Per-partition state is only correct when every group lives in one partition.
That holds when the query is stateless, when it groups by ``_key``, or when
the source declares ``'<src>.key.columns'`` equal to the GROUP BY columns (the
producer keyed messages by them). Otherwise the job repartitions: input
partitions are decoded and their rows hash-routed by the GROUP BY columns to
an internal topic (``<group>.<job>.repartition``, Arrow IPC messages), whose
partitions carry the state. Queries that need one place for every row
(global aggregates, LIMIT, ORDER BY) route all rows to internal partition 0.

Delivery: ``'processing.guarantee'`` = ``at_least_once`` (default: offsets are
committed only after the sink has flushed; a restart replays from the last
checkpoint) or ``exactly_once`` (output, repartitioned rows, dead letters and
input offsets are written in one Kafka transaction per checkpoint; read the
output with ``isolation.level=read_committed``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from flowsql.connectors.base import Sink
from flowsql.connectors.kafka.client import (
    ClientErrors,
    DeliveryFailures,
    EndTracker,
    KafkaDeadLetters,
    KafkaSink,
    MessageBatch,
    ck,
    close_producer,
    consumer_config,
    end_of_partition,
    ensure_topic,
    messages_to_batch,
    new_client,
    output_key_columns,
    produce_all,
    producer_config,
    require_client,
    split_events,
    topic_partitions,
)
from flowsql.connectors.kafka.repartition import (
    from_ipc,
    message_chunks,
    split_by_partition,
    to_ipc,
)
from flowsql.errors import ConfigError, ExecutionError
from flowsql.plan import nodes as n
from flowsql.records import DeadLetterSink
from flowsql.runtime.commit import Checkpointer, Task
from flowsql.runtime.driver import Boundary, Outputs, pump
from flowsql.runtime.factory import V1_FACTORY, ProcessorFactory, planned_for
from flowsql.runtime.kafka_spec import (  # noqa: F401 - is_kafka_job re-exported
    CountingLetters,
    JobStats,
    KafkaJobSpec,
    is_kafka_job,
)
from flowsql.runtime.processor import JobProcessor
from flowsql.runtime.router import HashRouter
from flowsql.sql import parse_one
from flowsql.state.checkpoint import CheckpointStore, FileCheckpointStore, fingerprint

log = logging.getLogger(__name__)

#: Header marking "input partition N has ended" on the repartition topic (bounded jobs).
EOS_HEADER = "flowsql.eos"
#: Header marking "input partition N sent nothing for the idle timeout" (unbounded jobs).
IDLE_HEADER = "flowsql.idle"


# -- the job -------------------------------------------------------------------


class KafkaJob:
    """Runs one SQL statement over a Kafka source with checkpoints.

    Args:
        statement: the planned statement (its WITH pairs configure the job).
        sink: where results go; default: the statement's ``kafka_sink``.
        processor_factory: builds one processor per partition task
            (default: V1 :class:`SimpleJobProcessor`).
        store: checkpoint store; default: files under ``'checkpoint.dir'``.
        dead_letters: also receives undecodable records; they go to ``'dlq.topic'``
            through the job's producer (inside the transaction) too when it is
            set, and to the log when neither is.
        stats: counters to continue (a job restarted after a failure).
    """

    def __init__(
        self,
        statement: n.Statement,
        *,
        sink: Sink | None = None,
        processor_factory: ProcessorFactory = V1_FACTORY,
        store: CheckpointStore | None = None,
        dead_letters: DeadLetterSink | None = None,
        stats: JobStats | None = None,
    ) -> None:
        require_client()
        self.statement = statement
        self.spec = KafkaJobSpec.from_statement(statement)
        spec = self.spec
        self.stats = stats or JobStats()  # a restarted job carries its counters on
        self.query_id = fingerprint(repr(statement.plan))  # WITH settings may change
        self.factory = processor_factory
        self.store = store or FileCheckpointStore(
            spec.checkpoint_dir, f"{spec.group_id}.{spec.job}"
        )
        self.deserializer = spec.source.deserializer()
        self.failures = DeliveryFailures()
        self.errors = ClientErrors()
        self.producer: Any = None
        # The consumer first: it checks its settings, then asks for the source
        # topic's partitions with them (an unreachable cluster fails at once).
        self.consumer = new_client("consumer", self._consumer_conf(), spec.source.name)
        try:
            self.source_partitions = topic_partitions(
                spec.source.bootstrap, spec.source.topic, client=self.consumer, errors=self.errors
            )
            output = spec.output.name if spec.output else ""
            self.producer = new_client("producer", self._producer_conf(), output)
            letters = [sink for sink in (dead_letters, self._dlq()) if sink is not None]
            self.dead_letters = CountingLetters(letters, self.stats)
            self.sink: Sink = sink or self._kafka_sink()
            self.statement = planned_for(statement, self.sink)  # query_id: as declared
            parts = self._partitions(spec.source.topic)
        except BaseException:
            self._release()
            raise
        self._bound = EndTracker(self.consumer, spec.source.topic, parts)
        self.checkpointer = Checkpointer(
            job=spec.job,
            query=self.query_id,
            consumer=self.consumer,
            producer=self.producer,
            deliveries=self.failures,
            store=self.store,
            flush_sinks=self._flush_sinks,
            transactions=self.producer if spec.exactly_once else None,
            location=spec.checkpoint_dir,
        )
        if spec.exactly_once and not isinstance(self.sink, KafkaSink):
            log.warning(
                "job %s: exactly_once covers Kafka outputs only; %s gets at-least-once",
                spec.job,
                type(self.sink).__name__,
            )
        self.tasks: dict[tuple[str, int], Task] = {}
        self.boundary = Boundary()  # where control requests meet the job thread
        self.outputs = Outputs(self.sink, self.stats)
        self._ended = False  # no control request is served any more
        self._closed = False
        self.paused = False
        self.input_ended = False  # a bounded input was read to its end
        self.assigned: tuple[str, ...] = ()  # "topic:partition" of every task, for status
        self.label: tuple[str, str, int] | None = None  # the tasks' processor
        self._late_carried = 0  # late records of processors closed since
        self._failed = False
        self._last_commit = time.monotonic()
        self._last_data: dict[int, float] = {}  # source partition -> when it last sent
        self._idle: set[int] = set()  # source partitions announced idle

    # -- setup ---------------------------------------------------------------

    def _producer_conf(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.spec.exactly_once:
            extra = {
                "transactional.id": self.spec.transactional_id,
                "transaction.timeout.ms": 60000,
            }
        client = self.spec.output.client if self.spec.output else {}
        return producer_config(self.spec.source.bootstrap, client, self.failures, **extra)

    def _consumer_conf(self) -> dict[str, Any]:
        return consumer_config(self.spec.source, group_id=self.spec.group_id, error_cb=self.errors)

    def _dlq(self) -> DeadLetterSink | None:
        if not self.spec.dlq_topic:
            return None
        ensure_topic(self.spec.source.bootstrap, self.spec.dlq_topic)
        return KafkaDeadLetters(self.spec.source.bootstrap, self.spec.dlq_topic, self.producer)

    def _kafka_sink(self) -> Sink:
        if self.spec.output is None:
            raise ConfigError(
                f"{self.statement.name}.type", None, "'kafka_sink' (or pass a sink to KafkaJob)"
            )
        keys = output_key_columns(self.statement, self.spec.output.name)
        return KafkaSink(self.spec.output, keys, producer=self.producer)

    # -- running -------------------------------------------------------------

    def stop(self) -> None:
        """Ask the job to finish its current batch, checkpoint and leave the group."""
        self.boundary.request_stop()

    def run(self) -> JobStats:
        """Process until the bounded input ends or :meth:`stop` is called; return the counters."""
        try:
            self.checkpointer.start()
            self._subscribe()
            ticks = itertools.repeat(None)
            pump(ticks, self._poll, self.boundary, blocks_when_paused=False)
            with self.boundary.hold(None):  # requests from now on find the job ended
                self._ended = True
                self.commit()
        except BaseException:
            with self.boundary.hold(None):
                self._ended = self._failed = True
                self.checkpointer.abort()  # nothing of the failed interval is committed
            raise
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        """Leave the group and release the clients (also for a job that never ran)."""
        with self.boundary.hold(None):
            if self._closed:
                return
            self._closed = self._ended = True
        try:
            self._release()
        finally:
            for task in self.tasks.values():
                if task.processor is not None:
                    task.processor.close()

    def _release(self) -> None:
        """Leave the group, flush the producer, and destroy both clients (their
        librdkafka threads and sockets end with them)."""
        try:
            self.consumer.close()
        finally:
            if self.producer is not None:
                close_producer(self.producer, 30)

    # -- control (any thread): served at a batch boundary ----------------------------

    def pause(self, timeout: float | None = None) -> bool:
        """Checkpoint, then stop consuming while staying in the group (the assigned
        partitions are paused; the job thread goes on polling, so the group keeps
        it). True when a batch boundary was reached within ``timeout``."""
        return self._at_boundary(self._pause_now, timeout)

    def resume(self, timeout: float | None = None) -> bool:
        """Consume again from where the pause left off."""
        return self._at_boundary(self._resume_now, timeout)

    def switch_processor(self, factory: ProcessorFactory, timeout: float | None = None) -> None:
        """Rebuild every task's processor with ``factory``, carrying its state over.

        The steps, run at a batch boundary:

        1.-2. checkpoint (the commit protocol, which drains V2 processors first), so
           what ran on the old processors is written and durable;
        3. build one new processor per task and restore the old one's snapshot
           into it (V2 re-partitions keyed state by routing key);
        4. swap, carry the late counters over, close the old processors; partitions
           assigned later get ``factory`` too.

        If a step fails before the swap, the tasks keep their processors.

        Raises:
            ExecutionError: the job is not running, the switch failed, or the job
                thread did not reach a batch boundary within ``timeout`` s.
        """
        if not self._at_boundary(lambda: self._switch_now(factory), timeout):
            raise ExecutionError(
                f"job '{self.spec.job}': no batch boundary within {timeout}s; try again"
            )

    def _at_boundary(self, action: Callable[[], Any], timeout: float | None) -> bool:
        """Run ``action`` at the next batch boundary; False when none was reached
        within ``timeout`` s. An error of the action is the caller's; the job goes on.

        Raises:
            ExecutionError: the job has ended.
        """
        with self.boundary.hold(timeout) as reached:
            if self._ended:
                raise ExecutionError(f"job '{self.spec.job}' has ended")
            if reached:
                action()
        return reached

    def _pause_now(self) -> None:
        if not self.paused:
            self.commit()
            self.consumer.pause(self.consumer.assignment())
            self.paused = True

    def _resume_now(self) -> None:
        if self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    def _switch_now(self, factory: ProcessorFactory) -> None:
        tasks = [t for t in self.tasks.values() if t.processor is not None]
        self.commit()  # Steps 1-2
        built: list[JobProcessor] = []
        try:
            for task in tasks:  # Step 3
                new = factory(self.statement, self.dead_letters)
                built.append(new)
                assert task.processor is not None
                new.restore(task.processor.snapshot())
        except BaseException:
            for processor in built:
                processor.close()
            raise
        for task, new in zip(tasks, built, strict=True):  # Step 4
            old, task.processor = task.processor, new
            assert old is not None
            self._late_carried += old.metrics.late_records
            old.close()
        self.factory = factory
        if built:
            self.label = _label(built[0])
        self._refresh_stats()

    def _subscribe(self) -> None:
        """Join the consumer group (bounded jobs too: two jobs with one group.id
        share the partitions instead of both reading all of them), or take the
        partitions named in ``'<src>.partitions'``."""
        spec = self.spec
        topics = [spec.source.topic]
        if spec.repartition:
            ensure_topic(spec.source.bootstrap, spec.repartition_topic, len(self.source_partitions))
            topics.append(spec.repartition_topic)
        if spec.static_partitions:
            tps = [ck.TopicPartition(t, p) for t in topics for p in self._partitions(t)]
            self.consumer.assign(self._restore(tps))
        else:
            self.consumer.subscribe(
                topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )

    def _partitions(self, topic: str) -> list[int]:
        if topic == self.spec.source.topic:
            static = self.spec.static_partitions
            return [p for p in self.source_partitions if not static or p in static]
        return topic_partitions(self.spec.source.bootstrap, topic)

    def _poll(self, _: None) -> bool:
        """One step of the driver loop: poll the consumer, process what came, and
        checkpoint when due. False once a bounded input has ended."""
        spec = self.spec.source
        msgs = self.consumer.consume(spec.batch_size, spec.max_wait_ms / 1000)
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(msgs))
        started = time.monotonic()
        data, events = split_events(msgs)
        mb = MessageBatch.of(data, with_topics=self.spec.repartition)
        self._check_processors()
        if len(mb):
            self.stats.batches += 1
            self._handle(mb)
            self._refresh_stats()
            self.stats.active_s += time.monotonic() - started
        else:
            self._drain([t for t in self.tasks.values() if t.dirty])
        if self.spec.repartition and not spec.bounded:
            self._announce_idle(started)
        if spec.bounded:
            self._track_bounded(mb, events)
            if self.tasks and all(t.finished for t in self.tasks.values()):
                self.input_ended = True
                return False
        if (time.monotonic() - self._last_commit) * 1000 >= self.spec.checkpoint_interval_ms:
            self.commit()
        self._throttle(len(data), started)
        return True

    def _refresh_stats(self) -> None:
        """Late records and the event-time maximum, from every task's processor."""
        late = self._late_carried
        high = self.stats.max_event_time
        marks: dict[int, int | None] = {}
        lows: list[int] = []
        for task in self.tasks.values():
            if task.processor is None:
                continue
            metrics = task.processor.metrics
            late += metrics.late_records
            seen = metrics.max_event_time
            if seen is not None and (high is None or seen > high):
                high = seen
            for part, mark in metrics.partition_watermarks.items():
                marks[part] = _later(marks.get(part), mark)
            if metrics.watermark is not None:
                lows.append(metrics.watermark)
        self.stats.late_records = late
        self.stats.max_event_time = high
        self.stats.partition_watermarks = marks
        self.stats.watermark = min(lows, default=self.stats.watermark)

    def _check_processors(self) -> None:
        """Fail now if a V2 processor broke meanwhile (a worker died or stalled), on
        every poll: a task whose partition gets no records would not notice itself.
        Costs one ``waitpid`` per worker, without waiting."""
        for task in self.tasks.values():
            failure = task.processor.failure if task.processor is not None else None
            if failure is not None:
                raise failure

    def _drain(self, tasks: Iterable[Task]) -> None:
        """Emit the outputs of batches a (V2) processor still has in flight."""
        for task in tasks:
            if task.processor is not None:
                self.outputs.emit(task.processor.drain())

    def _throttle(self, count: int, started: float) -> None:
        if self.spec.max_rate > 0 and count:
            delay = count / self.spec.max_rate - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)

    # -- processing ----------------------------------------------------------

    def _handle(self, mb: MessageBatch) -> None:
        if not len(mb):
            return
        self.checkpointer.begin()
        source_topic = self.spec.source.topic
        from_source: list[tuple[Task, np.ndarray]] = []
        for (topic, part), idx in mb.groups(source_topic):
            task = self.tasks.get((topic, part))
            if task is None or task.finished:
                continue  # a partition revoked while its messages were queued
            if task.position is not None:
                idx = idx[mb.offsets[idx] >= task.position]
                if not len(idx):
                    continue
            task.position = int(mb.offsets[idx[-1]]) + 1
            task.dirty = True
            if topic == source_topic:
                from_source.append((task, idx))
            else:
                self._from_repartition(task, [mb.msgs[i] for i in idx.tolist()])
        if from_source:
            now = time.monotonic()
            for task, _ in from_source:
                self._last_data[task.partition] = now
                self._idle.discard(task.partition)
            self._from_source(mb, from_source)

    def _from_source(self, mb: MessageBatch, groups: list[tuple[Task, np.ndarray]]) -> None:
        """Decode the messages of every partition in one call, then hand each
        partition's rows to its task (or route them all, when repartitioning)."""
        idx = groups[0][1] if len(groups) == 1 else np.concatenate([g[1] for g in groups])
        batch, _ = messages_to_batch(
            mb.take(idx), self.deserializer, self.spec.source.name, self.dead_letters
        )
        if batch is None:
            return
        self.stats.records_in += batch.num_rows
        if self.spec.repartition:
            self._route(batch)
            return
        tasks = {t.partition: t for t, _ in groups}
        for part, piece in split_by_partition(batch):
            processor = tasks[part].processor
            assert processor is not None
            self.outputs.emit(processor.process_batch(piece))

    def _route(self, batch: pa.RecordBatch) -> None:
        """Repartition: rows to the internal topic, by their routing key."""
        parts = len(self.source_partitions)
        if self.spec.route_columns:
            slices = HashRouter(self.spec.route_columns, parts).split(batch)
        else:
            slices = [batch] + [batch.slice(0, 0)] * (parts - 1)
        for target, piece in enumerate(slices):
            for chunk in message_chunks(piece):
                produce_all(
                    self.producer, self.spec.repartition_topic, [to_ipc(chunk)], partition=target
                )

    def _from_repartition(self, task: Task, msgs: list[Any]) -> None:
        assert task.processor is not None
        for m in msgs:
            headers = dict(m.headers() or ())
            if EOS_HEADER in headers:
                ended = int(headers[EOS_HEADER])
                task.ended_inputs.add(ended)
                self.outputs.emit(task.processor.end_partition(ended))
                continue
            if IDLE_HEADER in headers:
                self.outputs.emit(task.processor.idle_partition(int(headers[IDLE_HEADER])))
                continue
            batch = from_ipc(m.value())
            self.stats.records_repartitioned += batch.num_rows  # counted in when read
            self.outputs.emit(task.processor.process_batch(batch))
        if self.spec.source.bounded and len(task.ended_inputs) >= len(self.source_partitions):
            self._finish(task)

    def _finish(self, task: Task) -> None:
        if task.finished:
            return
        if task.processor is not None:
            self.checkpointer.begin()
            self.outputs.emit(task.processor.flush())
        elif self.spec.repartition:
            self._broadcast(EOS_HEADER, task.partition)
        task.finished = task.dirty = True

    def _broadcast(self, header: str, source_partition: int) -> None:
        """A marker about a source partition to every repartition-topic partition,
        behind the rows already routed from it."""
        self.checkpointer.begin()
        marker = [(header, str(source_partition).encode())]
        for target in range(len(self.source_partitions)):
            produce_all(
                self.producer, self.spec.repartition_topic, [b""], partition=target, headers=marker
            )

    def _announce_idle(self, now: float) -> None:
        """Tell the repartition readers about source partitions this process reads
        that sent nothing for ``'<src>.idle.timeout'``, so they stop holding the
        watermark back; a partition rejoins with its next record."""
        limit = self.spec.idle_timeout_ms / 1000
        topic = self.spec.source.topic
        for (t, part), task in self.tasks.items():
            if t != topic or part in self._idle or task.finished:
                continue
            if now - self._last_data.setdefault(part, now) < limit:
                continue
            if not self._caught_up(topic, part, task):
                self._last_data[part] = now  # unread messages: slow, not idle
                continue
            log.info("job %s: source partition %d idle", self.spec.job, part)
            self._idle.add(part)
            self._broadcast(IDLE_HEADER, part)

    def _caught_up(self, topic: str, part: int, task: Task) -> bool:
        """True when this process has read everything the partition holds, as
        far as the last fetch told (no broker round trip)."""
        tp = ck.TopicPartition(topic, part)
        low, high = self.consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            return False  # not fetched yet
        return (task.position if task.position is not None else low) >= high

    def _track_bounded(self, mb: MessageBatch, events: list[Any]) -> None:
        """Finish source partitions that reached the end offset they had at start."""
        topic = self.spec.source.topic
        if mb.topics is not None:
            mb = mb.take(np.flatnonzero(np.array([t == topic for t in mb.topics], dtype=bool)))
        for part in self._bound.update(mb.reached(), end_of_partition(events, topic)):
            task = self.tasks.get((topic, part))
            if task is not None:
                self._finish(task)
                if self.spec.repartition:
                    self.commit()  # make the routed rows visible to the repartition readers

    # -- checkpoints ---------------------------------------------------------

    def commit(self) -> None:
        """Checkpoint every changed task with the commit protocol
        (:meth:`flowsql.runtime.commit.Checkpointer.commit`)."""
        self._last_commit = time.monotonic()
        if self.checkpointer.commit([t for t in self.tasks.values() if t.dirty]):
            self.stats.checkpoints += 1
            self._refresh_stats()

    def _flush_sinks(self, tasks: Sequence[Task]) -> None:
        """Step 1 of the commit protocol: what processors hold, then what sinks hold."""
        self._drain(tasks)
        if not isinstance(self.sink, KafkaSink):
            self.sink.flush()

    # -- restore and rebalance ----------------------------------------------------

    def _restore(self, tps: Sequence[Any]) -> list[Any]:
        """Create tasks for newly assigned partitions; return them with start offsets."""
        committed = self.consumer.committed(list(tps), timeout=30) if tps else []
        out = []
        for tp in committed:
            task = self._restore_task(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else None)
            self.tasks[(tp.topic, tp.partition)] = task
            start = task.position if task.position is not None else self._reset()
            out.append(ck.TopicPartition(tp.topic, tp.partition, start))
        self._note_assignment()
        return out

    def _note_assignment(self) -> None:
        self.assigned = tuple(f"{t}:{p}" for t, p in sorted(self.tasks))

    def _reset(self) -> int:
        return int(
            ck.OFFSET_BEGINNING if self.spec.source.offset_reset == "earliest" else ck.OFFSET_END
        )

    def _restore_task(self, topic: str, part: int, kafka_offset: int | None) -> Task:
        routing_only = self.spec.repartition and topic == self.spec.source.topic
        if routing_only:
            return Task(topic, part, None, position=kafka_offset)
        processor = self.factory(self.statement, self.dead_letters)
        self.label = _label(processor)
        task = Task(topic, part, processor, position=kafka_offset)
        if self.checkpointer.restore(task, kafka_offset):
            self.stats.restored_partitions += 1
        if self.spec.repartition:
            # rows of every source partition meet here: each one holds the
            # watermark back until it sends, ends or goes idle
            processor.expect_partitions(self.source_partitions)
        return task

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.stats.rebalances += 1
        log.info("job %s: assigned %s", self.spec.job, [(p.topic, p.partition) for p in partitions])
        consumer.assign(self._restore(partitions))
        if self.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        log.info("job %s: revoked %s", self.spec.job, [(p.topic, p.partition) for p in partitions])
        if not self._failed:
            self.commit()
        for p in partitions:
            self._drop(self.tasks.pop((p.topic, p.partition), None))
        if not self._closed:  # leaving the group at the end: status keeps the last ones
            self._note_assignment()

    def _drop(self, task: Task | None) -> None:
        if task is not None and task.processor is not None:
            self._late_carried += task.processor.metrics.late_records
            task.processor.close()

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        log.warning(
            "job %s: lost %s without a commit",
            self.spec.job,
            [(p.topic, p.partition) for p in partitions],
        )
        self.checkpointer.abort()
        for p in partitions:
            self._drop(self.tasks.pop((p.topic, p.partition), None))
        self._note_assignment()


# -- helpers -----------------------------------------------------------------


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _label(processor: JobProcessor) -> tuple[str, str, int]:
    return processor.processor_name, processor.processor_version, processor.num_partitions


def run_kafka_job(
    statement: n.Statement,
    *,
    sink: Sink | None = None,
    processor_factory: ProcessorFactory = V1_FACTORY,
    store: CheckpointStore | None = None,
) -> JobStats:
    """Run a Kafka job until its bounded input ends (or SIGTERM/SIGINT); return its counters."""
    job = KafkaJob(statement, sink=sink, processor_factory=processor_factory, store=store)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: job.stop())
    return job.run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowsql.runtime.kafka_job FILE.sql``: run the file's Kafka statement."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m flowsql.runtime.kafka_job FILE.sql", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("FLOWSQL_LOG", "WARNING"))
    with open(args[0]) as f:
        statement = parse_one(f.read())
    stats = run_kafka_job(statement)
    print(json.dumps(stats.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
