"""In-memory sources and sinks (tests, the Python API, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa


class MemorySource:
    """Delivers a table (or batches, or a list of dicts) in micro-batches.

    Args:
        data: a ``pyarrow.Table``, ``RecordBatch``, batches or rows.
        name: the input name (FROM name).
        batch_size: rows per emitted batch.
    """

    def __init__(
        self,
        data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch] | Iterable[Mapping[str, Any]],
        *,
        name: str = "memory",
        batch_size: int = 10_000,
    ) -> None:
        self.table = as_table(data)
        self.name = name
        self.batch_size = batch_size
        self.dead_lettered = 0

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def batches(self) -> Iterator[pa.RecordBatch]:
        yield from self.table.to_batches(max_chunksize=self.batch_size)

    def close(self) -> None:
        return None


def as_table(
    data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch] | Iterable[Mapping[str, Any]],
) -> pa.Table:
    """Any of the accepted in-memory inputs as one table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    items = list(data)
    if items and isinstance(items[0], pa.RecordBatch):
        return pa.Table.from_batches(items)
    return pa.Table.from_pylist(items)


class MemorySink:
    """Keeps every batch written, in order."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.closed = False

    @property
    def rows_written(self) -> int:
        return sum(b.num_rows for b in self.batches)

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        """Keep the rows written so far (tests read them after a failure)."""
        self.closed = True

    def table(self) -> pa.Table:
        """Everything written as one table (columns unified to the first batch's types)."""
        if not self.batches:
            return pa.table({})
        schema = self.batches[0].schema
        return pa.Table.from_batches(
            [b if b.schema.equals(schema) else b.cast(schema) for b in self.batches]
        )

    def rows(self) -> list[dict[str, Any]]:
        return self.table().to_pylist()
