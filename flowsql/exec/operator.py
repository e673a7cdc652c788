"""The operator protocol every plan node compiles to.

Operators form a chain. The engine pushes each input batch through the chain
and tells every operator how far event time has advanced, so windowed
operators can close windows. All methods return the batches the operator
emits (possibly none). Operators never loop over records in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from flowsql.records import DeadLetter


@dataclass
class OperatorContext:
    """What an operator may report besides its output: late records and dead
    letters (drained by the engine after each call), and counters."""

    job: str = "query"
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late_records: int = 0
    done: bool = False  # set by LIMIT when no more input is wanted


class Operator(Protocol):
    """A compiled plan node."""

    name: str

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Consume one batch; return what is emitted because of it."""
        ...

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        """Event time of the whole input has reached ``event_time_ms`` (the max
        seen so far, over all partitions). Windowed operators compute their
        watermark from it (minus allowed lateness) and emit closed windows."""
        ...

    def flush(self) -> list[pa.RecordBatch]:
        """End of a bounded input: watermark to +infinity, emit everything."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """State as plain values / Arrow tables, restorable by ``restore``."""
        ...

    def restore(self, state: dict[str, Any]) -> None: ...


class StatelessOperator:
    """Base for operators with no state: advance/flush emit nothing."""

    name = "stateless"

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        return []

    def flush(self) -> list[pa.RecordBatch]:
        return []

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None
