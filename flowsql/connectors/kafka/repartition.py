"""Rows on the internal repartition topic of a Kafka job: Arrow IPC messages of
at most :data:`MAX_MESSAGE_BYTES`, one per run of rows bound for one partition."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowsql.records import PARTITION

#: Largest repartition message payload (bytes); bigger slices are split.
MAX_MESSAGE_BYTES = 512 * 1024


def split_by_partition(batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch]]:
    """Contiguous runs of one ``_partition`` value -> (partition, slice)."""
    parts = batch.column(PARTITION).to_numpy()
    if not len(parts):
        return []
    starts = np.concatenate(([0], np.flatnonzero(np.diff(parts)) + 1))
    ends = np.append(starts[1:], len(parts))
    return [(int(parts[a]), batch.slice(a, b - a)) for a, b in zip(starts, ends, strict=True)]


def message_chunks(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """Slices of ``batch`` of at most about :data:`MAX_MESSAGE_BYTES` each."""
    if batch.num_rows == 0:
        return []
    size = max(1, batch.nbytes)
    rows = max(1, batch.num_rows * MAX_MESSAGE_BYTES // size)
    return [batch.slice(i, rows) for i in range(0, batch.num_rows, rows)]


def to_ipc(batch: pa.RecordBatch) -> bytes:
    """One repartition message: the batch as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.RecordBatch:
    """The batch of a repartition message."""
    with pa.ipc.open_stream(data) as reader:
        return reader.read_next_batch()
