"""The Kafka commit protocol: how a job's output, state and input offsets agree.

:class:`Checkpointer` is written down once and takes everything it talks to
as arguments (consumer, producer, checkpoint store, the job's sinks), so a
crash between any two of its steps is a unit test with fakes. The Kafka job
(:mod:`flowsql.runtime.kafka_job`) builds the real clients and hands them in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowsql.connectors.kafka.client import ck
from flowsql.errors import ConnectorError, ExecutionError
from flowsql.runtime.processor import JobProcessor
from flowsql.state.checkpoint import Checkpoint, CheckpointStore, choose

log = logging.getLogger(__name__)

#: Step 1: emits what the tasks' processors still hold and writes out what
#: buffering sinks hold (the job's outputs, not the commit protocol's).
FlushSinks = Callable[[Sequence["Task"]], None]


@dataclass
class Task:
    """One assigned partition: its processor (None for a routing-only input
    partition), the next offset to read and what it saw of end-of-input."""

    topic: str
    partition: int
    processor: JobProcessor | None
    position: int | None = None
    checkpoint_id: int = 0
    dirty: bool = False
    finished: bool = False
    ended_inputs: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"


# -- what the protocol calls ------------------------------------------------------


class OffsetConsumer(Protocol):
    """The consumer, as the commit protocol uses it."""

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> Any:
        """Commit ``offsets`` (``TopicPartition`` with the next offset to read)."""
        ...

    def consumer_group_metadata(self) -> Any:
        """The group's metadata, for offsets sent in a transaction."""
        ...


class Producer(Protocol):
    """The producer every output of the job goes through."""

    def flush(self, timeout: float) -> int:
        """Wait until every message is acknowledged; return how many are not."""
        ...


class TransactionalProducer(Producer, Protocol):
    """The producer with ``transactional.id`` set (exactly-once)."""

    def init_transactions(self, timeout: float) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, positions: list[Any], group_metadata: Any, timeout: float
    ) -> None: ...

    def commit_transaction(self, timeout: float) -> None: ...

    def abort_transaction(self, timeout: float) -> None: ...


class DeliveryReport(Protocol):
    """Collects the producer's delivery failures (its ``on_delivery`` callback)."""

    def check(self, what: str) -> None:
        """Raise ConnectorError naming ``what`` if a message was not delivered."""
        ...


# -- the protocol ---------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class Checkpointer:
    """Checkpoints a job's tasks: sinks, producer, state and offsets, in one order.

    Args:
        job: the job's name, for errors.
        query: fingerprint of the query; state of another query is refused.
        consumer: commits the input offsets (at-least-once) or gives the group
            metadata for the transaction (exactly-once).
        producer: carries every Kafka output of the job.
        deliveries: the producer's delivery failures.
        store: where each task's staged and committed checkpoints live.
        flush_sinks: Step 1 (see :data:`FlushSinks`).
        transactions: the producer again when ``processing.guarantee`` is
            ``exactly_once``: each checkpoint interval is one transaction.
        location: where the store is, for errors.
    """

    job: str
    query: str
    consumer: OffsetConsumer
    producer: Producer
    deliveries: DeliveryReport
    store: CheckpointStore
    flush_sinks: FlushSinks
    transactions: TransactionalProducer | None = None
    location: str = ""
    in_transaction: bool = field(default=False, init=False)

    # -- transactions ------------------------------------------------------------

    def start(self) -> None:
        """Before the first record: fence older producers with the same
        ``transactional.id`` (their open transaction is aborted)."""
        if self.transactions is not None:
            self.transactions.init_transactions(30)

    def begin(self) -> None:
        """Open the interval's transaction before its first output (exactly-once)."""
        if self.transactions is not None and not self.in_transaction:
            self.transactions.begin_transaction()
            self.in_transaction = True

    def abort(self) -> None:
        """Abort the open transaction: none of its output becomes visible."""
        if self.transactions is None or not self.in_transaction:
            return
        self.in_transaction = False
        try:
            self.transactions.abort_transaction(30)
        except Exception as exc:  # fenced or broker gone: the broker aborts it on timeout
            log.warning("job %s: could not abort the open transaction: %s", self.job, exc)

    # -- commit ------------------------------------------------------------------

    def commit(self, tasks: Sequence[Task]) -> bool:
        """Checkpoint the changed ``tasks``. The commit protocol, in this order:

        1. Flush sinks: a V2 processor emits the outputs of batches it still
           holds (``drain``); a sink that buffers (file, memory) writes what it holds.
        2. Flush producer: every Kafka message of this interval (results,
           repartitioned rows, dead letters) is acknowledged by the broker.
        3. Stage state: each task's snapshot and next offset are written
           atomically to the checkpoint store as its *staged* checkpoint.
        4. Commit offsets: the input offsets go to Kafka; with exactly-once
           they are sent in the transaction, which is then committed, so
           output and offsets become visible together.
        5. Flush state: the staged checkpoints are promoted to *committed*.

        A crash before 4 leaves Kafka at the previous offsets: :meth:`restore`
        discards the staged checkpoint and the interval is read again. A crash
        between 4 and 5 leaves Kafka at the staged offsets: :meth:`restore`
        applies the staged checkpoint (:func:`flowsql.state.checkpoint.choose`).

        Returns:
            True when a checkpoint was taken (something changed, or a
            transaction was open).
        """
        if not tasks and not self.in_transaction:
            return False
        # Step 1
        self.flush_sinks(tasks)
        # Step 2
        self._flush_producer()
        # Step 3
        staged = self._stage(tasks)
        # Step 4
        self._commit_offsets(tasks)
        # Step 5
        for task in staged:
            self.store.promote(task.key)
        for task in tasks:
            task.dirty = False
        return True

    def _flush_producer(self) -> None:
        remaining = self.producer.flush(60)
        if remaining:
            raise ExecutionError(f"job '{self.job}': {remaining} messages not acknowledged in 60s")
        try:
            self.deliveries.check(f"job '{self.job}' outputs")
        except ConnectorError as exc:
            raise ExecutionError(str(exc)) from exc

    def _stage(self, tasks: Sequence[Task]) -> list[Task]:
        staged = []
        for task in tasks:
            if task.processor is None or task.position is None:
                continue
            task.checkpoint_id += 1
            checkpoint = Checkpoint(
                id=task.checkpoint_id,
                offsets={task.key: task.position},
                state=task.processor.snapshot(),
                query=self.query,
                extra={"finished": task.finished, "ended_inputs": sorted(task.ended_inputs)},
            )
            self.store.stage(task.key, checkpoint)
            staged.append(task)
        return staged

    def _commit_offsets(self, tasks: Sequence[Task]) -> None:
        offsets = [
            ck.TopicPartition(t.topic, t.partition, t.position)
            for t in tasks
            if t.position is not None
        ]
        if self.transactions is not None:
            self.begin()
            if offsets:
                meta = self.consumer.consumer_group_metadata()
                self.transactions.send_offsets_to_transaction(offsets, meta, 30)
            self.transactions.commit_transaction(60)
            self.in_transaction = False
        elif offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)

    # -- restore -----------------------------------------------------------------

    def restore(self, task: Task, kafka_offset: int | None) -> bool:
        """Restore ``task`` from its checkpoint, given the offset Kafka committed.

        The staged checkpoint is applied (and promoted) when Kafka committed
        exactly its offsets, i.e. the process died between Steps 4 and 5;
        otherwise the committed one is. True when state was restored.

        Raises:
            ExecutionError: the checkpoint was written by a different query.
        """
        committed, staged = self.store.load(task.key)
        known = {task.key: kafka_offset} if kafka_offset is not None else {}
        chosen = choose(committed, staged, known)
        if chosen is None:
            if kafka_offset is not None:
                log.warning(
                    "%s: offsets committed but no checkpoint; starting with empty state", task.key
                )
            return False
        if chosen.query != self.query:
            raise ExecutionError(
                f"job '{self.job}': checkpoint for {task.key} in {self.location}"
                " was written by a different query; use a new group.id or delete the checkpoint"
            )
        if chosen is staged:
            self.store.promote(task.key)
        assert task.processor is not None
        task.processor.restore(chosen.state)
        task.position = chosen.offsets.get(task.key)
        task.checkpoint_id = chosen.id
        task.finished = bool(chosen.extra.get("finished"))
        task.ended_inputs = set(chosen.extra.get("ended_inputs", ()))
        return True
