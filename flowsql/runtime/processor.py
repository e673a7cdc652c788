"""The ``JobProcessor`` protocol and the single-threaded V1 processor.

A job's processor runs its SQL over the batches a source delivers. V1 runs one
engine in the calling thread; V2 (``flowsql.runtime.coordinator``) routes rows by
key to partitions that run in parallel. Both give the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

from flowsql.engine import Engine, EngineMetrics
from flowsql.errors import ExecutionError, UnsupportedError
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink

if TYPE_CHECKING:
    from flowsql.runtime.splits import SourceSplit


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

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran, or the processor shut itself down after an error."""
        ...

    @property
    def failure(self) -> ExecutionError | None:
        """Why the processor can no longer run (a V2 worker died or stalled),
        checked without waiting; None while it is healthy."""
        ...

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Run one input batch; return the outputs finished so far."""
        ...

    def expect_partitions(self, partitions: Iterable[int]) -> None:
        """Declare the input partitions (``_partition`` values) known to exist:
        one not seen yet holds the watermark back until it sends a record, ends
        or goes idle. Partitions already known keep their state."""
        ...

    def end_partition(self, partition: int) -> list[pa.RecordBatch]:
        """A partition's bounded input is finished (an empty partition too): it
        no longer holds the watermark back. Returns the outputs finished so far
        (windows the risen watermark closed)."""
        ...

    def idle_partition(self, partition: int) -> list[pa.RecordBatch]:
        """The driver saw no data from a partition for the idle timeout: it no
        longer holds the watermark back, until a record of it arrives (it then
        rejoins as active; the watermark never goes back). Returns the outputs
        finished so far."""
        ...

    def drain(self) -> list[pa.RecordBatch]:
        """Wait for every batch in flight; return their outputs (a batch
        boundary: nothing is half-processed afterwards)."""
        ...

    def flush(self) -> list[pa.RecordBatch]:
        """End of input: emit everything still held (open windows, EMIT FINAL)."""
        ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...

    def can_split(self) -> bool:
        """True when :meth:`run_splits` can run the query from source splits."""
        ...

    def run_splits(self, splits: Iterable[SourceSplit]) -> Iterator[pa.RecordBatch]:
        """Run the whole bounded input given as splits, the flush included."""
        ...

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
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def metrics(self) -> EngineMetrics:
        return self.engine.metrics

    @property
    def done(self) -> bool:
        return self.engine.done

    @property
    def failure(self) -> ExecutionError | None:
        return None  # one engine in this thread: an error is raised, never pending

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        return self.engine.process(batch)

    def expect_partitions(self, partitions: Iterable[int]) -> None:
        self.engine.expect_partitions(partitions)

    def end_partition(self, partition: int) -> list[pa.RecordBatch]:
        return self.engine.end_partition(partition)

    def idle_partition(self, partition: int) -> list[pa.RecordBatch]:
        return self.engine.idle_partition(partition)

    def drain(self) -> list[pa.RecordBatch]:
        return []  # nothing is ever in flight

    def flush(self) -> list[pa.RecordBatch]:
        return self.engine.flush()

    def snapshot(self) -> dict[str, Any]:
        return self.engine.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.engine.restore(state)

    def can_split(self) -> bool:
        return False  # V1 reads its source itself, batch by batch

    def run_splits(self, splits: Iterable[SourceSplit]) -> Iterator[pa.RecordBatch]:
        raise UnsupportedError("V1 reads its source batch by batch; splits are for V2")

    def close(self) -> None:
        self._closed = True
