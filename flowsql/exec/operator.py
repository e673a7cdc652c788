"""The operator protocol every plan node compiles to.

Operators form a chain. The engine pushes each input batch through the chain
and tells every operator how far event time has advanced, so windowed
operators can close windows. All methods return the batches the operator
emits (possibly none). Operators never loop over records in Python.

Every operator owns its state's format (``snapshot``/``restore``) and how that
state divides by key (``split``/``merge``, see :class:`Stateful`): the V2
runtime moves state between partition counts only through these four calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
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


class KeyRouter(Protocol):
    """Which partition owns each routing key: V2's ``HashRouter`` as the
    operators see it.

    Attributes:
        key_columns: the routing key, as names of the query's input columns.
        num_partitions: how many partitions.
    """

    @property
    def key_columns(self) -> tuple[str, ...]: ...

    @property
    def num_partitions(self) -> int: ...

    def partitions_of(self, columns: Sequence[pa.Array | pa.ChunkedArray | None]) -> np.ndarray:
        """Partition of each row given the values of ``key_columns`` in order
        (None: a key the state does not hold, hashed as NULL)."""
        ...

    def partitions(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Partition of each row of ``batch`` (rows holding input columns)."""
        ...


class Stateful(Protocol):
    """State an operator owns, in a format only it reads.

    ``split`` and ``merge`` re-shard that state by routing key, so a job moves
    between V1 and V2 with any partition count: ``merge(split(s, r))`` holds
    the same keys and values as ``s``.
    """

    def snapshot(self) -> dict[str, Any]:
        """State as plain values / Arrow tables, restorable by ``restore``."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's (from this operator, a split or a merge)."""
        ...

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        """One state per partition of ``router``: each holds the keys it owns.

        Args:
            state: a snapshot of this operator (or a merge of several).
            router: maps the operator's key columns to partitions.
            arrival: the partitions number input rows in ``__arrival``
                (V2's arrival order); rows the operator holds back get numbers
                below any new row's, in the order they arrived.
        """
        ...

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One state from several holding disjoint keys (a split's parts, or
        partitions' snapshots cut to the keys each owns)."""
        ...


class Operator(Stateful, Protocol):
    """A compiled plan node."""

    name: str

    def process(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Consume one batch; return what is emitted because of it."""
        ...

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        """Event time of the whole input has reached ``event_time_ms`` (the
        watermark base: the minimum over the input partitions of their max
        event time, see ``flowsql.exec.watermarks``). Windowed operators
        compute their watermark from it (minus allowed lateness) and emit
        closed windows."""
        ...

    def flush(self) -> list[pa.RecordBatch]:
        """End of a bounded input: watermark to +infinity, emit everything."""
        ...


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

    def split(
        self, state: dict[str, Any], router: KeyRouter, *, arrival: bool = False
    ) -> list[dict[str, Any]]:
        return [dict(state) for _ in range(router.num_partitions)]

    def merge(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return dict(states[0]) if states else {}
