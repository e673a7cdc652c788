"""Source-parallel execution: each worker reads, decodes and pre-aggregates its
own split of a bounded input; only partial results cross processes.

Funnelling raw rows through one router process caps V2 below V1 (DESIGN §5),
so for splittable sources (JSON lines files, cut into newline-aligned byte
ranges) the coordinator hands out *splits* instead of rows:

1. the query is cut by :func:`flowsql.plan.partial.split_plan` into a lower
   plan (run per split by a worker, on a fresh engine) and an upper plan (run
   once by the coordinator);
2. workers take splits as they become free (at most ``max_in_flight`` each);
3. the coordinator consumes the split results strictly in input order, so the
   outcome equals one engine reading the whole input:

   - a row's lateness depends on the max event time of every row before it.
     Inside a split the worker's engine decides it from the rows of the split
     before the row; across splits, the rows of split ``c`` also follow every
     row of splits ``< c``, whose max event time ``M_c`` the coordinator knows
     when it takes split ``c``. A tumbling window whose end + allowed lateness
     is at most ``M_c`` was closed before split ``c`` began, so its partials
     from split ``c`` are late rows (dropped and counted, as V1 does);
   - partials of one (key, window) are merged (sum of sums and counts, min of
     mins, ...); a window is emitted once the max event time of all splits
     taken passes its end + allowed lateness, exactly once, in the order
     window end, then key.

This module holds the splits, the worker's side (:func:`run_split`) and the
partial merge; the run that hands out splits and takes their results in order
is the coordinator's (``flowsql.runtime.coordinator.SplitRun``).
"""

from __future__ import annotations

import dataclasses
import decimal
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.connectors.files import JsonlSource
from flowsql.connectors.jsonl import JsonlDecoder
from flowsql.connectors.paths import Roots, open_readable
from flowsql.engine import Engine
from flowsql.plan import nodes as n
from flowsql.plan.partial import ROWS, Merge, SplitPlan
from flowsql.records import (
    OFFSET,
    TIMESTAMP,
    WINDOW_END,
    WINDOW_START,
    DeadLetter,
    ListDeadLetters,
)

#: Bytes per split of a JSON lines file (one bulk decode each).
SPLIT_BYTES = 4 << 20
#: Splits a worker holds at once: one it reads, one queued so it never waits
#: for the coordinator. More would pre-assign the last splits unevenly (a split
#: takes ~0.1 s, and one worker can be left with several while the other idles).
SPLITS_IN_FLIGHT = 2


class SourceSplit(Protocol):
    """A piece of a bounded input that a worker can read on its own (picklable)."""

    def read(self) -> SplitData:
        """Decode the split (dead letters numbered from 1 within the split)."""
        ...

    def lines(self) -> int:
        """Lines (records) in the split: only counted when a later split has
        dead letters to number."""
        ...

    @property
    def batches(self) -> tuple[int, int] | None:
        """``(first batch size, batch size)`` of the batch-by-batch run this
        split stands for, when its rows must be cut the same way; else None."""
        ...


@dataclass
class SplitData:
    """What a worker read from a split: rows and decode dead letters."""

    batches: list[pa.RecordBatch]
    letters: list[DeadLetter]


@dataclass(frozen=True)
class SplitResult:
    """What a worker reports for one split besides its output batches."""

    records: int  # rows decoded (what V1's engine would have been given)


# ----------------------------------------------------------------- JSON lines


@dataclass(frozen=True)
class JsonlSplit:
    """Lines ``[start, end)`` (byte offsets on line boundaries) of a JSONL file.

    ``batches``: the micro-batch sizes the file's ``JsonlSource`` would hand a
    V1 job, ``(source batch size, run batch size)``; a split cut on the
    source's chunk boundaries then yields exactly the source's batches.

    ``roots``: the file roots the worker checks the file against when it opens
    it, as the source would (:func:`flowsql.connectors.paths.open_readable`);
    None = unconfined (the CLI).
    """

    path: str
    start: int
    end: int
    schema: pa.Schema
    source: str
    batches: tuple[int, int] | None = None
    roots: Roots = None

    def read(self) -> SplitData:
        data = self._bytes()
        decoder = JsonlDecoder(self.schema, source=self.source, path=self.path)
        decoded = decoder.decode(data, 1)
        batches = [decoded.batch] if decoded.batch is not None and decoded.batch.num_rows else []
        return SplitData(batches, list(decoded.letters))

    def lines(self) -> int:
        data = self._bytes()
        return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)

    def _bytes(self) -> bytes:
        with open_readable(Path(self.path), self.roots) as f:
            f.seek(self.start)
            return f.read(self.end - self.start)


def jsonl_splits(
    path: str | Path,
    *,
    source: str = "",
    split_bytes: int = SPLIT_BYTES,
    batches: tuple[int, int] | None = None,
    roots: Roots = None,
) -> list[JsonlSplit] | None:
    """Cut a JSON lines file into newline-aligned splits, with the schema its
    ``JsonlSource`` would infer; None when the file cannot be split (a JSON
    array rather than lines). The cuts are those of
    :func:`flowsql.connectors.files.read_chunks` with ``split_bytes``.

    With ``roots`` every open, here and in the workers reading the splits, is
    checked against them (:mod:`flowsql.connectors.paths`)."""
    path = Path(path)
    with open_readable(path, roots) as f:
        if f.read(4096).lstrip().startswith(b"["):
            return None
    reader = JsonlSource(path, name=source or path.stem, roots=roots)
    schema = reader.schema
    schema = schema.remove(schema.get_field_index(OFFSET)) if OFFSET in schema.names else schema
    bounds = _line_bounds(path, split_bytes, roots)
    return [
        JsonlSplit(str(path), a, b, schema, reader.name, batches, roots)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]


def _line_bounds(path: Path, split_bytes: int, roots: Roots = None) -> list[int]:
    """Chunk boundaries exactly as ``read_chunks`` reads the file: after a byte
    order mark, ``split_bytes`` at a time, each finished to the end of its line."""
    with open_readable(path, roots) as f:
        size = os.fstat(f.fileno()).st_size
        pos = 3 if f.read(3) == b"\xef\xbb\xbf" else 0
        bounds = [pos]
        while pos < size:
            end = pos + split_bytes
            if end < size:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    end += len(f.readline())  # finish the last line
            pos = min(end, size)
            bounds.append(pos)
    return bounds


def batch_slices(rows: int, sizes: tuple[int, int]) -> list[tuple[int, int]]:
    """``(offset, length)`` of the micro-batches a V1 job gets from ``rows``
    decoded rows: slices of the source's batch size, each cut to the run's."""
    source, run = sizes
    out = []
    for start in range(0, rows, source):
        end = min(start + source, rows)
        out += [(a, min(run, end - a)) for a in range(start, end, run)]
    return out


# -------------------------------------------------------------- worker side


@dataclass(frozen=True)
class SplitTask:
    """Run the lower plan over one split (sent to a worker)."""

    split: Any  # SourceSplit
    lower: n.Statement
    event_time: str | None
    batch_exact: bool = False  # run the split's own micro-batches, not one batch


def run_split(task: SplitTask, job: str) -> tuple[list[pa.RecordBatch], Any]:
    """In a worker: read, decode and run the lower plan over one split on a
    fresh engine. Returns the outputs and ``(Reply fields, SplitResult)``."""
    data = task.split.read()
    engine = Engine(task.lower, event_time=task.event_time, job=job)
    out: list[pa.RecordBatch] = []
    sizes = task.split.batches
    for b in data.batches:
        if not task.batch_exact or sizes is None:
            out += engine.process(b)
            continue
        for offset, length in batch_slices(b.num_rows, sizes):
            out += engine.process(b.slice(offset, length))
    out += engine.flush()
    letters = data.letters + _engine_letters(engine)
    records = sum(b.num_rows for b in data.batches)
    return out, (engine.metrics, letters, SplitResult(records))


def _engine_letters(engine: Engine) -> list[DeadLetter]:
    """Take the dead letters the split's engine collected (it was built
    without a sink, so it keeps them in a :class:`ListDeadLetters`)."""
    sink = engine.dead_letters
    if not isinstance(sink, ListDeadLetters) or not sink.letters:
        return []
    letters, sink.letters = list(sink.letters), []
    return letters


def shift_letter(letter: DeadLetter, lines_before: int) -> DeadLetter:
    """Renumber a split's dead letter by the lines of the splits before it."""
    if not lines_before:
        return letter
    position = _LINE.sub(lambda m: str(int(m.group(0)) + lines_before), letter.position)
    return dataclasses.replace(letter, position=position)


_LINE = re.compile(r"(?<=:)\d+$|(?<=^line )\d+$|(?<=_offset=)\d+")


# -------------------------------------------------------- coordinator: merge


class PartialMerge:
    """Merges partial aggregates in split order into the original aggregate's rows.

    Output columns are those of the aggregate node: keys, ``_window_start`` and
    ``_window_end`` when windowed, the aggregates, and ``_timestamp``.
    """

    def __init__(self, plan: SplitPlan) -> None:
        assert plan.aggregate is not None
        self.agg = plan.aggregate
        self.merges = plan.merges
        self.keys = [name for name, _ in self.agg.keys]
        self.windowed = self.agg.window is not None
        self.lateness = self.agg.allowed_lateness_ms
        self.group = self.keys + ([WINDOW_START, WINDOW_END] if self.windowed else [])
        self.open: pa.Table | None = None
        self.late_records = 0

    def add(self, partials: Sequence[pa.RecordBatch], max_before: int | None) -> None:
        """Take one split's partials; ``max_before`` = max event time before the split."""
        batches = [b for b in partials if b.num_rows]
        if not batches:
            return
        table = _concat([pa.Table.from_batches([b]) for b in batches])
        if self.windowed and max_before is not None:
            ends = table.column(WINDOW_END).to_numpy()
            late = ends + self.lateness <= max_before
            if late.any():
                self.late_records += int(pc.sum(table.column(ROWS).filter(pa.array(late))).as_py())
                table = table.filter(pa.array(~late))
        self.open = table if self.open is None else _concat([self.open, table])
        self.open = self._combine(self.open)

    def emit(self, max_event_time: int | None) -> pa.Table | None:
        """The rows of every window that closed by ``max_event_time`` (None: all)."""
        if self.open is None or self.open.num_rows == 0:
            return None
        if max_event_time is not None:
            if not self.windowed:
                return None
            ends = self.open.column(WINDOW_END).to_numpy()
            done = ends + self.lateness <= max_event_time
            if not done.any():
                return None
            closed, self.open = self.open.filter(done), self.open.filter(~done)
        else:
            closed, self.open = self.open, None
        return self._finish(closed)

    def _combine(self, table: pa.Table) -> pa.Table:
        """One row per group: merge the partial columns of equal groups."""
        specs: list[tuple[str, str]] = []
        for m in self.merges:
            how = "sum" if m.kind == "avg" else m.kind
            specs += [(c, how) for c in m.columns]
        specs += [(ROWS, "sum"), (TIMESTAMP, "max")]
        keys = self.group or ["__all"]
        if not self.group:
            table = table.append_column("__all", pa.array(np.zeros(table.num_rows, np.int8)))
        grouped = table.group_by(keys, use_threads=False).aggregate(specs)
        renamed = {f"{c}_{how}": c for c, how in specs}
        cols = [*self.group, *(c for c, _ in specs)]
        return grouped.rename_columns([renamed.get(x, x) for x in grouped.column_names]).select(
            cols
        )

    def _finish(self, table: pa.Table) -> pa.Table:
        order = [(WINDOW_END, "ascending")] if self.windowed else []
        order += [(k, "ascending") for k in self.keys]
        if order:
            table = table.take(pc.sort_indices(table, sort_keys=order))
        cols: dict[str, pa.ChunkedArray | pa.Array] = {c: table.column(c) for c in self.group}
        for m in self.merges:
            cols[m.name] = _finish_merge(m, table)
        if self.windowed:
            cols[TIMESTAMP] = pc.subtract(table.column(WINDOW_END), 1)
        else:
            cols[TIMESTAMP] = table.column(TIMESTAMP)
        return pa.table(cols)


def _finish_merge(m: Merge, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    if m.kind != "avg":
        return table.column(m.columns[0])
    total, count = table.column(m.columns[0]), table.column(m.columns[1])
    if pa.types.is_decimal(total.type):
        return _decimal_avg(total, count)
    has = pc.greater(count, 0)
    quotient = pc.divide(pc.cast(total, pa.float64()), pc.cast(count, pa.float64()))
    return pc.if_else(has, quotient, pa.scalar(None, pa.float64()))


def _decimal_avg(total: pa.ChunkedArray, count: pa.ChunkedArray) -> pa.Array:
    """AVG of DECIMAL(p, s) as V1 computes it: DECIMAL(38, max(s, 6)), rounded
    half away from zero. One Python division per group, not per record."""
    scale = max(total.type.scale, 6)
    quantum = decimal.Decimal(1).scaleb(-scale)
    ctx = decimal.Context(prec=80)
    values = [
        None
        if s is None or not c
        else ctx.divide(s, decimal.Decimal(c)).quantize(quantum, decimal.ROUND_HALF_UP, ctx)
        for s, c in zip(total.to_pylist(), count.to_pylist(), strict=True)
    ]
    return pa.array(values, pa.decimal128(38, scale))


def _concat(tables: Iterable[pa.Table]) -> pa.Table:
    return pa.concat_tables(list(tables), promote_options="permissive")


def as_batches(table: pa.Table | None) -> list[pa.RecordBatch]:
    """A table's rows as record batches (none for an empty table)."""
    if table is None or table.num_rows == 0:
        return []
    return table.combine_chunks().to_batches()


def source_splits(source: Any, *, batch_size: int | None = None) -> list[JsonlSplit] | None:
    """Splits of a source that workers can read on their own, or None.

    Today: a JSON lines ``FileSource`` (``flowsql.connectors.files.JsonlSource``)
    cut where the source cuts its chunks so a split's
    micro-batches are the source's (``batch_size``: the run's largest batch).
    ``run_job`` uses this to choose ``run_splits``.
    """
    if not isinstance(source, JsonlSource):
        return None
    sizes = (source.batch_size, batch_size or source.batch_size)
    splits = jsonl_splits(
        source.path,
        source=source.name,
        split_bytes=source.chunk_bytes,
        batches=sizes,
        roots=source.roots,
    )
    return splits if splits else None
