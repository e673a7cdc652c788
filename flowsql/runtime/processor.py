"""The ``JobProcessor`` protocol and the single-threaded V1 processor.

A job's processor runs its SQL over the batches a source delivers. V1 runs one
engine in the calling thread; V2 (``flowsql.runtime.coordinator``) routes rows by
key to partitions that run in parallel. Both give the same rows.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from flowsql.engine import Engine, EngineMetrics
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink


@runtime_checkable
class JobProcessor(Protocol):
    """What the job server and ``run_job`` drive."""

    @property
    def num_partitions(self) -> int: ...

    @property
    def processor_name(self) -> str: ...

    @property
    def processor_version(self) -> str: ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def done(self) -> bool:
        """True when the query wants no more input (LIMIT reached)."""
        ...

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]: ...

    def flush(self) -> list[pa.RecordBatch]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class SimpleJobProcessor:
    """V1: one engine, in the calling thread."""

    processor_name = "SimpleJobProcessor"
    processor_version = "V1"
    num_partitions = 1

    def __init__(
        self,
        statement: Statement,
        *,
        event_time: str | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        self.engine = Engine(statement, event_time=event_time, dead_letters=dead_letters)

    @property
    def metrics(self) -> EngineMetrics:
        return self.engine.metrics

    @property
    def done(self) -> bool:
        return self.engine.done

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        return self.engine.process(batch)

    def flush(self) -> list[pa.RecordBatch]:
        return self.engine.flush()

    def snapshot(self) -> dict[str, Any]:
        return self.engine.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.engine.restore(state)

    def close(self) -> None:
        return None
