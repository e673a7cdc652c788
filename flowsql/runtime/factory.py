"""The one place that turns a processor choice into a processor: V1 or V2.

Every run path (``flowsql run``, ``run_job``, the job server, Kafka jobs and
their tasks) builds its processors here, so a processor option is added once.
Where the choice comes from (the CLI, annotations, the server default) is
decided by the caller; what it means is decided here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flowsql.connectors.base import Sink
from flowsql.connectors.kafka.client import KafkaSink
from flowsql.plan.message_time import with_message_time
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink
from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.processor import JobProcessor, SimpleJobProcessor

#: Builds the processor of a statement, given its dead-letter sink.
ProcessorFactory = Callable[[Statement, DeadLetterSink | None], JobProcessor]


@dataclass(frozen=True)
class ProcessorChoice:
    """Which processor runs a job: ``version`` "v1"/"v2" and V2's partition count."""

    version: str
    num_partitions: int

    @property
    def label(self) -> str:
        return "v1" if self.version == "v1" else f"v2({self.num_partitions})"


#: V1, the default of every run path that is told nothing.
V1 = ProcessorChoice("v1", 1)


def make_processor(
    statement: Statement,
    choice: ProcessorChoice,
    dead_letters: DeadLetterSink | None,
    *,
    event_time: str | None = None,
) -> JobProcessor:
    """V1 ``SimpleJobProcessor`` or V2 ``PartitionedJobCoordinator`` for ``choice``.

    Args:
        statement: the planned statement.
        choice: V1, or V2 with its partition count.
        dead_letters: where the processor's dead letters go.
        event_time: event-time column when the query does not name one.
    """
    if choice.version == "v1":
        return SimpleJobProcessor(statement, event_time=event_time, dead_letters=dead_letters)
    return PartitionedJobCoordinator(
        statement,
        num_partitions=choice.num_partitions,
        event_time=event_time,
        dead_letters=dead_letters,
        job=statement.name,
    )


def factory(choice: ProcessorChoice, *, event_time: str | None = None) -> ProcessorFactory:
    """A :data:`ProcessorFactory` that builds ``choice`` for any statement."""

    def build(statement: Statement, dead_letters: DeadLetterSink | None) -> JobProcessor:
        return make_processor(statement, choice, dead_letters, event_time=event_time)

    return build


#: V1 for every statement: what a Kafka job's partition tasks run unless told.
V1_FACTORY = factory(V1)


def planned_for(statement: Statement, sink: Sink) -> Statement:
    """The statement as it runs into ``sink``: a Kafka sink stamps each message
    with its row's event time, so the plan keeps that time for it
    (:func:`flowsql.plan.message_time.with_message_time`)."""
    return with_message_time(statement) if isinstance(sink, KafkaSink) else statement
