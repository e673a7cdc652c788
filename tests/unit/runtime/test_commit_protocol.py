"""The Kafka commit protocol with fake clients: its order, and a crash between any two steps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import ANY, MagicMock, call

import pytest

from flowsql.errors import ConnectorError, ExecutionError
from flowsql.runtime.commit import (
    Checkpointer,
    DeliveryReport,
    OffsetConsumer,
    Task,
    TransactionalProducer,
)
from flowsql.runtime.processor import JobProcessor
from flowsql.state.checkpoint import Checkpoint, CheckpointStore, MemoryCheckpointStore

# -- the order of the steps, with MagicMock(spec_set=...) ----------------------------


def _mocks(exactly_once: bool) -> tuple[MagicMock, Checkpointer]:
    calls = MagicMock()
    consumer = MagicMock(spec_set=OffsetConsumer)
    producer = MagicMock(spec_set=TransactionalProducer)
    producer.flush.return_value = 0
    consumer.consumer_group_metadata.return_value = "group-meta"
    store = MagicMock(spec_set=CheckpointStore)
    deliveries = MagicMock(spec_set=DeliveryReport)
    flush_sinks = MagicMock()
    for name, mock in [
        ("consumer", consumer),
        ("producer", producer),
        ("store", store),
        ("deliveries", deliveries),
        ("flush_sinks", flush_sinks),
    ]:
        calls.attach_mock(mock, name)
    checkpointer = Checkpointer(
        job="j",
        query="q",
        consumer=consumer,
        producer=producer,
        deliveries=deliveries,
        store=store,
        flush_sinks=flush_sinks,
        transactions=producer if exactly_once else None,
    )
    return calls, checkpointer


def _task(partition: int, position: int | None, routing_only: bool = False) -> Task:
    processor = None
    if not routing_only:
        processor = MagicMock(spec_set=JobProcessor)
        processor.snapshot.return_value = {"p": partition}
    return Task("in", partition, processor, position=position, dirty=True)


def _offsets(tps: list[Any]) -> list[tuple[str, int, int]]:
    return [(tp.topic, tp.partition, tp.offset) for tp in tps]


def test_at_least_once_flushes_sinks_and_producer_before_staging_and_committing():
    calls, checkpointer = _mocks(exactly_once=False)
    tasks = [_task(0, 10), _task(1, 20)]
    assert checkpointer.commit(tasks)
    assert calls.mock_calls == [
        call.flush_sinks(tasks),  # Step 1
        call.producer.flush(60),  # Step 2
        call.deliveries.check("job 'j' outputs"),
        call.store.stage("in:0", ANY),  # Step 3
        call.store.stage("in:1", ANY),
        call.consumer.commit(offsets=ANY, asynchronous=False),  # Step 4
        call.store.promote("in:0"),  # Step 5
        call.store.promote("in:1"),
    ]
    committed = calls.consumer.commit.call_args.kwargs["offsets"]
    assert _offsets(committed) == [("in", 0, 10), ("in", 1, 20)]
    staged = calls.store.stage.call_args_list[1].args[1]
    assert (staged.id, staged.offsets, staged.state, staged.query) == (
        1,
        {"in:1": 20},
        {"p": 1},
        "q",
    )
    assert not any(t.dirty for t in tasks)


def test_exactly_once_sends_the_offsets_in_the_transaction_then_commits_it():
    calls, checkpointer = _mocks(exactly_once=True)
    checkpointer.start()
    checkpointer.begin()
    checkpointer.begin()  # one transaction per interval
    tasks = [_task(0, 10)]
    assert checkpointer.commit(tasks)
    assert calls.mock_calls == [
        call.producer.init_transactions(30),
        call.producer.begin_transaction(),
        call.flush_sinks(tasks),  # Step 1
        call.producer.flush(60),  # Step 2
        call.deliveries.check("job 'j' outputs"),
        call.store.stage("in:0", ANY),  # Step 3
        call.consumer.consumer_group_metadata(),  # Step 4
        call.producer.send_offsets_to_transaction(ANY, "group-meta", 30),
        call.producer.commit_transaction(60),
        call.store.promote("in:0"),  # Step 5
    ]
    sent = calls.producer.send_offsets_to_transaction.call_args.args[0]
    assert _offsets(sent) == [("in", 0, 10)]
    assert not checkpointer.in_transaction


def test_exactly_once_opens_a_transaction_for_offsets_alone():
    calls, checkpointer = _mocks(exactly_once=True)
    assert checkpointer.commit([_task(0, 5)])
    assert call.producer.begin_transaction() in calls.mock_calls
    assert calls.mock_calls.index(call.producer.begin_transaction()) < calls.mock_calls.index(
        call.producer.commit_transaction(60)
    )


def test_nothing_changed_means_no_checkpoint_unless_a_transaction_is_open():
    calls, checkpointer = _mocks(exactly_once=True)
    assert not checkpointer.commit([])
    assert calls.mock_calls == []
    checkpointer.begin()  # e.g. dead letters produced, no task changed
    assert checkpointer.commit([])
    assert calls.producer.commit_transaction.called
    assert not calls.producer.send_offsets_to_transaction.called
    assert not calls.store.stage.called


def test_a_routing_only_partition_commits_offsets_but_stages_no_state():
    calls, checkpointer = _mocks(exactly_once=False)
    assert checkpointer.commit([_task(0, 7, routing_only=True)])
    assert not calls.store.stage.called and not calls.store.promote.called
    assert _offsets(calls.consumer.commit.call_args.kwargs["offsets"]) == [("in", 0, 7)]


def test_unacknowledged_messages_stop_the_checkpoint_before_state_and_offsets():
    calls, checkpointer = _mocks(exactly_once=False)
    calls.producer.flush.return_value = 3
    with pytest.raises(ExecutionError, match="3 messages not acknowledged"):
        checkpointer.commit([_task(0, 10)])
    assert not calls.store.stage.called and not calls.consumer.commit.called


def test_a_delivery_failure_stops_the_checkpoint_before_state_and_offsets():
    calls, checkpointer = _mocks(exactly_once=False)
    calls.deliveries.check.side_effect = ConnectorError("out: 1 message not delivered")
    with pytest.raises(ExecutionError, match="not delivered"):
        checkpointer.commit([_task(0, 10)])
    assert not calls.store.stage.called and not calls.consumer.commit.called


def test_abort_aborts_only_an_open_transaction_and_survives_a_fenced_producer():
    calls, checkpointer = _mocks(exactly_once=True)
    checkpointer.abort()
    assert not calls.producer.abort_transaction.called
    checkpointer.begin()
    calls.producer.abort_transaction.side_effect = RuntimeError("fenced")
    checkpointer.abort()
    assert calls.producer.abort_transaction.call_args == call(30)
    assert not checkpointer.in_transaction


def test_restore_refuses_the_state_of_another_query():
    store = MemoryCheckpointStore()
    store.stage("in:0", Checkpoint(id=1, offsets={"in:0": 4}, state={}, query="other"))
    store.promote("in:0")
    _, checkpointer = _mocks(exactly_once=False)
    checkpointer.store = store
    with pytest.raises(ExecutionError, match="different query"):
        checkpointer.restore(_task(0, 4), 4)


# -- a crash between any two steps, with a fake broker that outlives the process ------


class Crash(Exception):
    """The process died here (kill -9): nothing after this point ran."""


INPUT = {0: list(range(0, 23)), 1: list(range(1000, 1017))}
BATCH = 4


@dataclass
class Broker:
    """What survives a crash on Kafka's side: committed offsets and visible output."""

    offsets: dict[str, int] = field(default_factory=dict)
    visible: list[int] = field(default_factory=list)


@dataclass
class Faults:
    """Raises Crash at the ``nth`` call of ``step`` during checkpoint ``at``."""

    step: str = ""
    nth: int = 1
    at: int = 2
    checkpoint: int = 0
    calls: Counter[str] = field(default_factory=Counter)

    def next_checkpoint(self) -> None:
        self.checkpoint += 1
        self.calls.clear()

    def hit(self, step: str) -> None:
        self.calls[step] += 1
        if (step, self.calls[step], self.checkpoint) == (self.step, self.nth, self.at):
            self.step = ""  # a process dies once
            raise Crash(step)


class FakeProducer:
    """Delivers on flush; with transactions, output becomes visible on commit only."""

    def __init__(self, broker: Broker, faults: Faults) -> None:
        self.broker, self.faults = broker, faults
        self.unsent: list[int] = []
        self.txn: list[int] | None = None
        self.txn_offsets: dict[str, int] = {}

    def produce(self, values: list[int]) -> None:
        self.unsent.extend(values)

    def flush(self, timeout: float) -> int:
        self.faults.hit("producer.flush")
        if self.txn is not None:
            self.txn.extend(self.unsent)
        else:
            self.broker.visible.extend(self.unsent)
        self.unsent = []
        return 0

    def init_transactions(self, timeout: float) -> None:
        pass  # a new producer instance: the dead one's transaction is gone with it

    def begin_transaction(self) -> None:
        assert self.txn is None
        self.txn, self.txn_offsets = [], {}

    def send_offsets_to_transaction(self, positions: list[Any], meta: Any, timeout: float) -> None:
        self.faults.hit("producer.send_offsets_to_transaction")
        assert self.txn is not None and meta == "meta"
        self.txn_offsets = {f"{tp.topic}:{tp.partition}": tp.offset for tp in positions}

    def commit_transaction(self, timeout: float) -> None:
        self.faults.hit("producer.commit_transaction")
        assert self.txn is not None and not self.unsent
        self.broker.visible.extend(self.txn)
        self.broker.offsets.update(self.txn_offsets)
        self.txn = None

    def abort_transaction(self, timeout: float) -> None:
        self.txn, self.unsent = None, []


class FakeConsumer:
    def __init__(self, broker: Broker, faults: Faults) -> None:
        self.broker, self.faults = broker, faults

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self.faults.hit("consumer.commit")
        assert not asynchronous
        self.broker.offsets.update({f"{tp.topic}:{tp.partition}": tp.offset for tp in offsets})

    def consumer_group_metadata(self) -> str:
        return "meta"


class FaultyStore:
    """A MemoryCheckpointStore that can die before a write."""

    def __init__(self, store: MemoryCheckpointStore, faults: Faults) -> None:
        self.store, self.faults = store, faults

    def stage(self, key: str, checkpoint: Checkpoint) -> None:
        self.faults.hit("store.stage")
        self.store.stage(key, checkpoint)

    def promote(self, key: str) -> None:
        self.faults.hit("store.promote")
        self.store.promote(key)

    def load(self, key: str) -> tuple[Checkpoint | None, Checkpoint | None]:
        return self.store.load(key)


class BufferingSink:
    """A sink that holds rows until flushed (Step 1), then hands them to the producer."""

    def __init__(self, producer: FakeProducer, faults: Faults) -> None:
        self.producer, self.faults = producer, faults
        self.held: list[int] = []

    def flush(self, tasks: Sequence[Task]) -> None:
        self.faults.hit("flush_sinks")
        self.producer.produce(self.held)
        self.held = []


class Summing:
    """A stateful processor: passes values through and keeps their count and sum."""

    def __init__(self) -> None:
        self.count = self.total = 0

    def process(self, values: list[int]) -> list[int]:
        self.count += len(values)
        self.total += sum(values)
        return values

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total}

    def restore(self, state: dict[str, Any]) -> None:
        self.count, self.total = state["count"], state["total"]


def _process(broker: Broker, store: MemoryCheckpointStore, faults: Faults, eos: bool) -> list[Task]:
    """One process lifetime: restore every partition, then read, emit and checkpoint
    every BATCH records per partition until the input ends or Crash."""
    producer = FakeProducer(broker, faults)
    sink = BufferingSink(producer, faults)
    checkpointer = Checkpointer(
        job="j",
        query="q",
        consumer=FakeConsumer(broker, faults),
        producer=producer,
        deliveries=MagicMock(spec_set=DeliveryReport),
        store=FaultyStore(store, faults),
        flush_sinks=sink.flush,
        transactions=producer if eos else None,
    )
    checkpointer.start()
    tasks = []
    for part in INPUT:
        task = Task("in", part, Summing())  # type: ignore[arg-type]
        checkpointer.restore(task, broker.offsets.get(task.key))
        _assert_state_matches_offset(task, broker)
        tasks.append(task)
    while True:
        for task in tasks:
            start = task.position or 0
            chunk = INPUT[task.partition][start : start + BATCH]
            if chunk:
                checkpointer.begin()
                sink.held.extend(task.processor.process(chunk))  # type: ignore[union-attr]
                task.position, task.dirty = start + len(chunk), True
        dirty = [t for t in tasks if t.dirty]
        if not dirty:
            return tasks
        faults.next_checkpoint()
        checkpointer.commit(dirty)


def _assert_state_matches_offset(task: Task, broker: Broker) -> None:
    """A restored task's state covers exactly the records before the offset Kafka holds."""
    assert task.position == broker.offsets.get(task.key)
    done = INPUT[task.partition][: task.position or 0]
    assert task.processor.snapshot() == {"count": len(done), "total": sum(done)}  # type: ignore[union-attr]


def _assert_nothing_lost_before_the_offsets(broker: Broker) -> None:
    """Offsets are committed only after the output of their records is delivered."""
    for part, values in INPUT.items():
        assert set(values[: broker.offsets.get(f"in:{part}", 0)]) <= set(broker.visible)


STEPS = [
    ("flush_sinks", 1),  # crash before Step 1
    ("producer.flush", 1),  # between Steps 1 and 2
    ("store.stage", 1),  # between Steps 2 and 3
    ("store.stage", 2),  # in Step 3: one partition staged
    ("consumer.commit", 1),  # between Steps 3 and 4
    ("store.promote", 1),  # between Steps 4 and 5
    ("store.promote", 2),  # in Step 5: one partition promoted
]
TXN_STEPS = [
    *STEPS[:4],
    ("producer.send_offsets_to_transaction", 1),  # between Steps 3 and 4
    ("producer.commit_transaction", 1),  # in Step 4: offsets sent, not committed
    *STEPS[5:],
]


@pytest.mark.parametrize("at", [1, 3])
@pytest.mark.parametrize(
    "eos, step, nth",
    [(False, s, n) for s, n in STEPS] + [(True, s, n) for s, n in TXN_STEPS],
)
def test_a_crash_at_any_step_then_restore_loses_nothing(eos, step, nth, at):
    broker, store = Broker(), MemoryCheckpointStore()
    faults = Faults(step, nth, at)
    with pytest.raises(Crash):
        _process(broker, store, faults, eos)
    _assert_nothing_lost_before_the_offsets(broker)
    _check_what_restore_chose(store, broker, step)
    tasks = _process(broker, store, Faults(), eos)  # a fresh process on the same store
    for task in tasks:
        _assert_state_matches_offset(task, broker)
        assert task.position == len(INPUT[task.partition])
        committed, staged = store.load(task.key)
        assert staged is None and committed is not None
        assert committed.offsets == {task.key: task.position}
    want = Counter(v for values in INPUT.values() for v in values)
    got = Counter(broker.visible)
    assert set(got) == set(want)  # nothing lost, nothing foreign
    if eos:
        assert got == want  # exactly once: nothing twice
    elif step in ("store.promote",):
        assert got == want  # offsets were committed: nothing is read twice


def _check_what_restore_chose(store: MemoryCheckpointStore, broker: Broker, step: str) -> None:
    """Before Step 4 the staged checkpoint does not match Kafka and is discarded; after
    it, Kafka holds the staged offsets and the staged checkpoint is applied. (On a
    copy of the store: the restarted process restores from the original.)"""
    store, original = MemoryCheckpointStore(), store
    store.files = dict(original.files)
    for part in INPUT:
        key = f"in:{part}"
        committed, staged = store.load(key)
        if staged is None:
            continue
        applied = broker.offsets.get(key) == staged.offsets[key]
        assert applied == (step == "store.promote")
        fresh = Checkpointer(
            job="j",
            query="q",
            consumer=FakeConsumer(broker, Faults()),
            producer=FakeProducer(broker, Faults()),
            deliveries=MagicMock(spec_set=DeliveryReport),
            store=store,
            flush_sinks=MagicMock(),
        )
        task = Task("in", part, Summing())  # type: ignore[arg-type]
        fresh.restore(task, broker.offsets.get(key))
        expected = staged if applied else committed
        assert task.checkpoint_id == (expected.id if expected else 0)
        after_committed, after_staged = store.load(key)
        if applied:
            assert after_staged is None and after_committed is not None
            assert after_committed.id == staged.id
        else:  # the staged checkpoint is left to be overwritten by the next Step 3
            assert after_staged is not None and after_staged.id == staged.id
