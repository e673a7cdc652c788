"""File sources and sinks: JSON lines, CSV and Parquet.

Sources read in large chunks (~8 MB) and decode each in bulk, then cut the
rows into micro-batches. Records that cannot be decoded or typed go to the
dead-letter sink with the original text and ``file:line``; the rest proceed.

Sinks write to a temporary file beside the target and rename it into place on
``close()``, so a job that fails (or never starts) leaves no output file
behind; ``abort()`` removes the temporary file.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flowsql.connectors.jsonl import JsonlDecoder, encode_lines, jsonable
from flowsql.errors import ConfigError, ConnectorError
from flowsql.records import OFFSET, DeadLetter, DeadLetterSink, ListDeadLetters

log = logging.getLogger(__name__)

#: Bytes read and decoded at a time (~100K lines of a typical JSON record).
CHUNK_BYTES = 8 << 20

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def format_of(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """The file format: ``explicit`` (jsonl|json|ndjson|csv|parquet) or by extension."""
    if explicit:
        fmt = explicit.lower()
        fmt = "jsonl" if fmt in ("json", "ndjson") else fmt
        if fmt not in FORMATS:
            raise ConfigError("format", explicit, "jsonl, json, csv, parquet")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ConfigError(
            "format", f"{path}", "a path ending in .jsonl, .ndjson, .json, .csv or .parquet"
        )
    return _EXTENSIONS[suffix]


def open_source(
    path: str | os.PathLike[str],
    *,
    name: str = "",
    format: str | None = None,
    dead_letters: DeadLetterSink | None = None,
    batch_size: int = 10_000,
    **options: Any,
) -> FileSource:
    """Open a file source; raise :class:`ConnectorError` naming the path if it is missing."""
    fmt = format_of(path, format)
    p = Path(path)
    if not p.is_file():
        raise ConnectorError(f"input file not found: {p}" + (f" (for '{name}')" if name else ""))
    cls: type[FileSource] = {"jsonl": JsonlSource, "csv": CsvSource, "parquet": ParquetSource}[fmt]
    return cls(p, name=name or p.stem, dead_letters=dead_letters, batch_size=batch_size, **options)


def open_sink(
    path: str | os.PathLike[str], *, format: str | None = None, **options: Any
) -> FileSink:
    """Open a file sink for ``path`` (options: ``atomic``, ``delimiter`` for CSV)."""
    fmt = format_of(path, format)
    cls: type[FileSink] = {"jsonl": JsonlSink, "csv": CsvSink, "parquet": ParquetSink}[fmt]
    return cls(Path(path), **options)


# ---------------------------------------------------------------------------- sources


class FileSource:
    """Base of the file sources.

    Args:
        path: the file.
        name: input name (FROM name) used on dead letters.
        dead_letters: where undecodable records go (default: kept in a list).
        batch_size: rows per emitted batch.
    """

    format = ""

    def __init__(
        self,
        path: Path,
        *,
        name: str = "",
        dead_letters: DeadLetterSink | None = None,
        batch_size: int = 10_000,
    ) -> None:
        self.path = path
        self.name = name or path.stem
        self.dead_letters: DeadLetterSink = dead_letters or ListDeadLetters()
        self.batch_size = batch_size
        self.dead_lettered = 0
        self.records_read = 0

    @property
    def schema(self) -> pa.Schema:
        """The columns this source delivers (read from the start of the file)."""
        raise NotImplementedError

    def batches(self) -> Iterator[pa.RecordBatch]:
        for batch in self._decoded():
            for start in range(0, batch.num_rows, self.batch_size):
                piece = batch.slice(start, self.batch_size)
                self.records_read += piece.num_rows
                yield piece

    def close(self) -> None:
        return None

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def _dead(self, letters: list[DeadLetter]) -> None:
        if letters:
            self.dead_lettered += len(letters)
            self.dead_letters.write(letters)


def read_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(complete lines, number of the first line, count of lines)`` in
    chunks of about ``chunk_bytes``; a final line without a newline is included."""
    line = 1
    with path.open("rb") as f:
        if f.read(3) != b"\xef\xbb\xbf":  # skip a UTF-8 byte order mark
            f.seek(0)
        while True:
            data = f.read(chunk_bytes)
            if not data:
                break
            if not data.endswith(b"\n"):
                data += f.readline()  # finish the last line
            count = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            yield data, line, count
            line += count


class JsonlSource(FileSource):
    """JSON lines (also a file holding one JSON array of objects).

    Args:
        schema: column types; None = inferred from the first lines.
        chunk_bytes: bytes decoded per bulk call.
    """

    format = "jsonl"

    def __init__(
        self,
        path: Path,
        *,
        schema: pa.Schema | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        self.chunk_bytes = chunk_bytes
        self.decoder = JsonlDecoder(schema, source=self.name, path=str(path))

    @property
    def schema(self) -> pa.Schema:
        if self.decoder.schema is None:
            self.decoder.infer(next(self._chunks(), (b"", 1, 0))[0])
        assert self.decoder.schema is not None
        return self.decoder.schema.append(pa.field(OFFSET, pa.int64()))

    def _chunks(self) -> Iterator[tuple[bytes, int, int]]:
        if _starts_with(self.path, b"["):
            lines = _array_as_lines(self.path)
            yield lines, 1, lines.count(b"\n")
            return
        yield from read_chunks(self.path, self.chunk_bytes)

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        for chunk, first_line, count in self._chunks():
            decoded = self.decoder.decode(chunk, first_line, count)
            self._dead(decoded.letters)
            if decoded.batch is not None and decoded.batch.num_rows:
                yield decoded.batch


def _starts_with(path: Path, prefix: bytes) -> bool:
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(prefix)


def _array_as_lines(path: Path) -> bytes:
    """A JSON array of objects re-encoded as JSON lines (element i -> line i+1)."""
    try:
        items = msgspec.json.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise ConnectorError(f"{path}: not a JSON array or JSON lines: {exc}") from None
    return msgspec.json.Encoder().encode_lines(items) if isinstance(items, list) else b""


class CsvSource(FileSource):
    """CSV with a header row. Column types are inferred from the first block
    (majority of non-empty values); values that do not fit are dead letters.
    Assumes no newlines inside quoted fields (for line numbers).

    Args:
        delimiter: field separator.
        chunk_bytes: bytes parsed per block.
    """

    format = "csv"

    def __init__(
        self,
        path: Path,
        *,
        delimiter: str = ",",
        chunk_bytes: int = CHUNK_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        self.delimiter = delimiter
        self.chunk_bytes = chunk_bytes
        self._types: dict[str, pa.DataType] | None = None

    @property
    def schema(self) -> pa.Schema:
        if self._types is None:
            first = next(self._raw_blocks(), None)
            names = self._header()
            self._types = _infer_csv_types(first) if first else dict.fromkeys(names, pa.string())
        return pa.schema(list(self._types.items()) + [(OFFSET, pa.int64())])

    def _raw_blocks(self) -> Iterator[pa.RecordBatch]:
        if self.path.stat().st_size == 0:
            return iter(())
        reader, _ = self._open()
        return iter(reader)

    def _open(self) -> tuple[pacsv.CSVStreamingReader, list[tuple[int, str]]]:
        names = self._header()
        invalid: list[tuple[int, str]] = []

        def on_invalid(row: Any) -> str:
            invalid.append((row.number or 0, row.text))
            return "skip"

        reader = pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=self.chunk_bytes, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=self.delimiter, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
        return reader, invalid

    def _header(self) -> list[str]:
        with self.path.open(newline="", encoding="utf-8", errors="replace") as f:
            return next(csv.reader(f, delimiter=self.delimiter), [])

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        if self.path.stat().st_size == 0:
            return
        reader, invalid = self._open()
        next_line = 2  # line 1 is the header
        seen_invalid = 0
        for raw in reader:
            if self._types is None:
                self._types = _infer_csv_types(raw)
            bad_rows = invalid[seen_invalid:]
            seen_invalid = len(invalid)
            self._dead([self._letter("wrong number of fields", text, n) for n, text in bad_rows])
            lines = _skip_lines(next_line, raw.num_rows, {n for n, _ in bad_rows})
            next_line = int(lines[-1]) + 1 if len(lines) else next_line + len(bad_rows)
            batch = self._typed(raw, lines)
            if batch.num_rows:
                yield batch
        self._dead(
            [self._letter("wrong number of fields", t, n) for n, t in invalid[seen_invalid:]]
        )

    def _typed(self, raw: pa.RecordBatch, lines: np.ndarray) -> pa.RecordBatch:
        assert self._types is not None
        columns, bad = [], np.zeros(raw.num_rows, dtype=bool)
        errors: dict[int, str] = {}
        for name, typ in self._types.items():
            col, col_bad = _convert_csv(raw.column(name), typ)
            columns.append(col)
            if col_bad is not None:
                for i in np.flatnonzero(col_bad & ~bad):
                    errors[int(i)] = _type_error(name, typ, raw.column(name)[int(i)].as_py())
                bad |= col_bad
        columns.append(pa.array(lines, pa.int64()))
        batch = pa.RecordBatch.from_arrays(columns, names=[*self._types, OFFSET])
        if not bad.any():
            return batch
        self._dead(
            [self._letter(errors[i], self._row_text(raw, i), int(lines[i])) for i in sorted(errors)]
        )
        return batch.filter(pa.array(~bad))

    def _row_text(self, raw: pa.RecordBatch, i: int) -> str:
        out = io.StringIO()
        csv.writer(out, delimiter=self.delimiter, lineterminator="").writerow(
            raw.slice(i, 1).to_pylist()[0].values()
        )
        return out.getvalue()

    def _letter(self, error: str, text: str, line: int) -> DeadLetter:
        return DeadLetter(error, text, self.name, f"{self.path}:{line}", "decode")


def _type_error(name: str, typ: pa.DataType, value: str) -> str:
    expected = {pa.int64(): "an integer", pa.float64(): "a number", pa.bool_(): "true or false"}
    return f"column '{name}': expected {expected.get(typ, str(typ))}, got {value!r}"


def _skip_lines(first: int, count: int, skipped: set[int]) -> np.ndarray:
    """``count`` consecutive line numbers from ``first``, leaving out ``skipped``."""
    candidates = np.arange(first, first + count + len(skipped), dtype=np.int64)
    if skipped:
        candidates = candidates[~np.isin(candidates, list(skipped))]
    return candidates[:count]


_INT_RE = r"^\s*[+-]?\d{1,18}\s*$"
_FLOAT_RE = r"(?i)^\s*[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|infinity|nan)\s*$"
_BOOL_RE = r"(?i)^\s*(true|false)\s*$"


def _infer_csv_types(raw: pa.RecordBatch) -> dict[str, pa.DataType]:
    """Per column: int64, float64 or bool when most non-empty values fit, else string."""
    types = {}
    for name, col in zip(raw.schema.names, raw.columns, strict=True):
        filled = pc.sum(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)).as_py() or 0
        types[name] = pa.string()
        for typ, regex in (
            (pa.int64(), _INT_RE),
            (pa.float64(), _FLOAT_RE),
            (pa.bool_(), _BOOL_RE),
        ):
            fits = pc.sum(pc.match_substring_regex(col, regex)).as_py() or 0
            if filled and fits * 2 > filled:
                types[name] = typ
                break
    return types


def _convert_csv(col: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Cast a string column to ``typ``: empty -> null; returns the rows that do not fit."""
    if pa.types.is_string(typ):
        return col, None
    regex = {pa.int64(): _INT_RE, pa.float64(): _FLOAT_RE, pa.bool_(): _BOOL_RE}[typ]
    trimmed = pc.utf8_trim_whitespace(col)
    empty = pc.equal(pc.utf8_length(trimmed), 0)
    fits = pc.match_substring_regex(trimmed, regex)
    bad = pc.invert(pc.or_(empty, fits)).to_numpy(zero_copy_only=False)
    keep = pc.if_else(pc.and_(fits, pc.invert(empty)), pc.utf8_lower(trimmed), None)
    return keep.cast(typ), (bad if bad.any() else None)


class ParquetSource(FileSource):
    """Parquet: typed, so nothing is dead-lettered."""

    format = "parquet"

    @property
    def schema(self) -> pa.Schema:
        return pq.ParquetFile(self.path).schema_arrow

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(self.path) as f:
            yield from f.iter_batches(batch_size=max(self.batch_size, 65_536))


# ------------------------------------------------------------------------------ sinks


class FileSink:
    """Writes batches to a file, opened on the first write.

    With ``atomic`` (the default) the rows go to a temporary file beside
    ``path`` that ``close()`` renames into place and ``abort()`` deletes, so a
    failed job leaves no output. Without it the file is written in place and
    grows as results arrive (for long-running jobs that others tail).
    """

    def __init__(self, path: Path, *, atomic: bool = True) -> None:
        self.path = path
        self.atomic = atomic
        self.rows_written = 0
        self._tmp: Path | None = None
        self._file: IO[bytes] | None = None
        self._closed = False

    def write(self, batch: pa.RecordBatch) -> None:
        if self._file is None:
            self._file = self._open()
            self._start(batch)
        self._write(batch)
        self.rows_written += batch.num_rows

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Finish the file and move it into place (an empty output if nothing came)."""
        if self._closed:
            return
        if self._file is None:
            self._file = self._open()
            self._start(None)
        self._end()
        self._file.close()
        self._closed = True
        if self._tmp is not None:
            os.replace(self._tmp, self.path)
        log.debug("wrote %d rows to %s", self.rows_written, self.path)

    def abort(self) -> None:
        """Discard the output when atomic (the target path is left untouched)."""
        self._closed = True
        if self._file is not None:
            self._file.close()
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()

    def _open(self) -> IO[bytes]:
        directory = self.path.parent
        if not directory.is_dir():
            raise ConnectorError(f"output directory does not exist: {directory}")
        if not self.atomic:
            return self.path.open("wb")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        self._tmp = Path(tmp)
        return os.fdopen(fd, "wb")

    def _start(self, batch: pa.RecordBatch | None) -> None:
        return None

    def _write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        return None


class JsonlSink(FileSink):
    """One JSON object per row keyed by column name, in emitted order; timestamps
    and ``_window_*`` as epoch ms integers, decimals as strings."""

    def _write(self, batch: pa.RecordBatch) -> None:
        assert self._file is not None
        self._file.write(encode_lines(batch))


class CsvSink(FileSink):
    """CSV with a header, quoting only where needed (written by polars);
    timestamps as epoch ms, decimals exact."""

    def __init__(self, path: Path, *, delimiter: str = ",", atomic: bool = True) -> None:
        super().__init__(path, atomic=atomic)
        self.delimiter = delimiter
        self._schema: pa.Schema | None = None

    def _write(self, batch: pa.RecordBatch) -> None:
        assert self._file is not None
        batch = jsonable(batch)
        header = self._schema is None
        if self._schema is None:
            self._schema = batch.schema
        frame = pl.from_arrow(_conform(batch, self._schema))
        frame.write_csv(self._file, include_header=header, separator=self.delimiter)  # type: ignore[union-attr]


class ParquetSink(FileSink):
    """Parquet with the types of the first batch (later batches are cast to them)."""

    def __init__(self, path: Path, *, atomic: bool = True) -> None:
        super().__init__(path, atomic=atomic)
        self._writer: pq.ParquetWriter | None = None

    def _start(self, batch: pa.RecordBatch | None) -> None:
        schema = batch.schema if batch is not None else pa.schema([])
        self._writer = pq.ParquetWriter(self._file, schema)

    def _write(self, batch: pa.RecordBatch) -> None:
        assert self._writer is not None
        self._writer.write_batch(_conform(batch, self._writer.schema))

    def _end(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise ConnectorError(
            f"output batch columns {batch.schema} do not match the file's {schema}: {exc}"
        ) from None
