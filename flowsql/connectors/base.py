"""Source and sink protocols."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa


class Source(Protocol):
    """A stream of record batches. Bounded sources end; unbounded ones block.

    Batches carry the source's columns and, where the source knows them, the
    system columns ``_timestamp``, ``_key``, ``_partition``, ``_offset``.
    Records that cannot be decoded are sent to the dead-letter sink given at
    construction and counted in ``dead_lettered``.
    """

    name: str
    dead_lettered: int

    def batches(self) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where result batches go.

    ``close`` makes what was written final (a file sink renames its temporary
    file into place); ``abort`` ends a failed job: it drops what it can of the
    unfinished output (a file sink deletes its temporary file) and releases
    everything, and it never raises for a sink that was already closed.
    """

    def write(self, batch: pa.RecordBatch) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...
