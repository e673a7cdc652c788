"""Benchmark inputs: generated once per data kind, kept in memory as the
micro-batches every runner is fed, and written to JSON lines for
``--source jsonl``."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from flowsql.connectors.generator import make_generator
from flowsql.records import TIMESTAMP


def generate(kind: str, records: int, batch_size: int, *, seed: int = 42) -> list[pa.RecordBatch]:
    """``records`` rows of generated ``kind`` data in batches of ``batch_size``
    (the generator's own columns, ``_timestamp`` included)."""
    source = make_generator(kind, records=records, batch_size=batch_size, seed=seed)
    return list(source.batches())


def as_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """The batches as one table (no copy)."""
    return pa.Table.from_batches(batches)


def write_jsonl(batches: list[pa.RecordBatch], path: Path) -> Path:
    """Write the user columns (not ``_timestamp``: event time then comes from
    the ``timestamp`` column, as for any file) as JSON lines; return ``path``."""
    table = as_table(batches)
    if TIMESTAMP in table.column_names:
        table = table.drop_columns([TIMESTAMP])
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame.write_ndjson(path)
    return path


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6
