"""File sources and sinks: JSON lines, CSV and Parquet.

Sources read in large chunks (~8 MB) and decode each in bulk, then cut the
rows into micro-batches. Records that cannot be decoded or typed go to the
dead-letter sink with the original text and ``file:line``; the rest proceed.

Sinks write to a temporary file beside the target and rename it into place on
``close()``, so a job that fails (or never starts) leaves no output file
behind; ``abort()`` removes the temporary file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
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
from flowsql.connectors.paths import (
    Directory,
    Roots,
    arrow_readable,
    check_sink_path,
    confined,
    open_readable,
)
from flowsql.errors import ConfigError, ConnectorError
from flowsql.records import OFFSET, DeadLetter, DeadLetterSink, ListDeadLetters

log = logging.getLogger(__name__)

#: Bytes read and decoded at a time (~100K lines of a typical JSON record).
CHUNK_BYTES = 8 << 20

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

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
    roots: Roots = None,
    **options: Any,
) -> FileSource:
    """Open a file source; raise :class:`ConnectorError` naming the path if it is missing.
    With ``roots`` the file is checked against them again each time it is opened."""
    fmt = format_of(path, format)
    p = Path(path)
    if not p.is_file():
        raise ConnectorError(f"input file not found: {p}" + (f" (for '{name}')" if name else ""))
    cls: type[FileSource] = {"jsonl": JsonlSource, "csv": CsvSource, "parquet": ParquetSource}[fmt]
    return cls(
        p,
        name=name or p.stem,
        dead_letters=dead_letters,
        batch_size=batch_size,
        roots=roots,
        **options,
    )


def open_sink(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    key: str = "path",
    roots: Roots = None,
    **options: Any,
) -> FileSink:
    """Open a file sink for ``path`` (options: ``atomic``, ``delimiter`` for CSV).

    Raises:
        ConfigError: a name Python or a shell could run, or a path in the Python
            environment (see :mod:`flowsql.connectors.paths`), whatever ``format``
            says; ``key`` names the setting in the message.
    """
    check_sink_path(path, key=key)
    fmt = format_of(path, format)
    cls: type[FileSink] = {"jsonl": JsonlSink, "csv": CsvSink, "parquet": ParquetSink}[fmt]
    return cls(Path(path), roots=roots, **options)


# ---------------------------------------------------------------------------- sources


class FileSource:
    """Base of the file sources.

    Args:
        path: the file.
        name: input name (FROM name) used on dead letters.
        dead_letters: where undecodable records go (default: kept in a list).
        batch_size: rows per emitted batch.
        roots: directories the file must be in when opened (None: anywhere).
    """

    format = ""

    def __init__(
        self,
        path: Path,
        *,
        name: str = "",
        dead_letters: DeadLetterSink | None = None,
        batch_size: int = 10_000,
        roots: Roots = None,
    ) -> None:
        self.path = path
        self.roots = roots
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


def read_chunks(
    path: Path, chunk_bytes: int = CHUNK_BYTES, roots: Roots = None
) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(complete lines, number of the first line, count of lines)`` in
    chunks of about ``chunk_bytes``; a final line without a newline is included."""
    line = 1
    with open_readable(path, roots) as f:
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
        if _starts_with(self.path, b"[", self.roots):
            lines = _array_as_lines(self.path, self.roots)
            yield lines, 1, lines.count(b"\n")
            return
        yield from read_chunks(self.path, self.chunk_bytes, self.roots)

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        for chunk, first_line, count in self._chunks():
            decoded = self.decoder.decode(chunk, first_line, count)
            self._dead(decoded.letters)
            if decoded.batch is not None and decoded.batch.num_rows:
                yield decoded.batch


def _starts_with(path: Path, prefix: bytes, roots: Roots = None) -> bool:
    with open_readable(path, roots) as f:
        head = f.read(4096).lstrip()
    return head.startswith(prefix)


def _array_as_lines(path: Path, roots: Roots = None) -> bytes:
    """A JSON array of objects re-encoded as JSON lines (element i -> line i+1)."""
    with open_readable(path, roots) as f:
        data = f.read()
    try:
        items = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ConnectorError(f"{path}: not a JSON array or JSON lines: {exc}") from None
    except RecursionError:
        raise ConnectorError(f"{path}: JSON array nested too deep to decode") from None
    return msgspec.json.Encoder().encode_lines(items) if isinstance(items, list) else b""


class CsvSource(FileSource):
    """CSV with a header row. Column types are inferred from the first block
    (majority of non-empty values); values that do not fit are dead letters,
    and so are lines that are not UTF-8 and integers beyond int64 (a column of
    integers stays int64 however large some are). Assumes no newlines inside
    quoted fields (for line numbers).

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
            return
        reader, _, checked = self._open()
        with checked:
            yield from reader

    def _open(self) -> tuple[pacsv.CSVStreamingReader, list[tuple[int, str]], _Utf8Lines]:
        names = self._header()
        invalid: list[tuple[int, str]] = []

        def on_invalid(row: Any) -> str:
            invalid.append((row.number or 0, row.text))
            return "skip"

        checked = _Utf8Lines(open_readable(self.path, self.roots))
        reader = pacsv.open_csv(
            checked,
            read_options=pacsv.ReadOptions(block_size=self.chunk_bytes, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=self.delimiter, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
        return reader, invalid, checked

    def _header(self) -> list[str]:
        raw = open_readable(self.path, self.roots)
        with io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as f:
            return next(csv.reader(f, delimiter=self.delimiter), [])

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        if self.path.stat().st_size == 0:
            return
        reader, invalid, checked = self._open()
        with checked:
            yield from self._checked_batches(reader, invalid, checked)

    def _checked_batches(
        self, reader: pacsv.CSVStreamingReader, invalid: list[tuple[int, str]], checked: _Utf8Lines
    ) -> Iterator[pa.RecordBatch]:
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
            raw, lines = self._without_bad_text(raw, lines, checked.take_bad(next_line))
            batch = self._typed(raw, lines)
            if batch.num_rows:
                yield batch
        self._dead(
            [self._letter("wrong number of fields", t, n) for n, t in invalid[seen_invalid:]]
        )

    def _without_bad_text(
        self, raw: pa.RecordBatch, lines: np.ndarray, bad: set[int]
    ) -> tuple[pa.RecordBatch, np.ndarray]:
        """Dead-letter the rows of the ``bad`` lines, which were not UTF-8 (the
        parser read them with U+FFFD; lines it skipped already have a letter)."""
        if not bad:
            return raw, lines
        hit = np.isin(lines, list(bad))
        self._dead(
            [
                self._letter(_utf8_error(raw, int(i)), self._row_text(raw, int(i)), int(lines[i]))
                for i in np.flatnonzero(hit)
            ]
        )
        return raw.filter(pa.array(~hit)), lines[~hit]

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
    if typ == pa.int64() and re.fullmatch(_INT_RE, value):
        return f"column '{name}': integer {value.strip()} does not fit in int64"
    if typ == pa.float64() and re.fullmatch(_FLOAT_RE, value):
        return f"column '{name}': number {value.strip()} is out of the float64 range"
    expected = {pa.int64(): "an integer", pa.float64(): "a number", pa.bool_(): "true or false"}
    return f"column '{name}': expected {expected.get(typ, str(typ))}, got {value!r}"


def _utf8_error(raw: pa.RecordBatch, i: int) -> str:
    """The reason for row ``i``, which was not UTF-8, naming the first column
    where a byte was replaced."""
    row = raw.slice(i, 1).to_pylist()[0]
    column = next((name for name, v in row.items() if "\ufffd" in str(v)), None)
    return f"column '{column}': invalid UTF-8" if column is not None else "invalid UTF-8"


class _Utf8Lines:
    """A CSV file as pyarrow's reader reads it, checked for UTF-8 on the way.

    A line holding bytes that are not UTF-8 reaches the reader with them replaced
    by U+FFFD, and is remembered by its number, so that its row becomes a dead
    letter instead of stopping the reader (pyarrow fails the whole file on one
    such byte). ASCII blocks pass untouched (one ``isascii()`` and one newline
    count); other blocks are finished to the end of a line and decoded.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._pending = b""  # checked bytes the reader has not asked for yet
        self._lines = 0  # newlines handed over so far
        self._bad: set[int] = set()

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (all when negative); fewer only at the end of the file."""
        out, self._pending = self._pending, b""
        while size < 0 or len(out) < size:
            block = self._checked(self._raw.read(-1 if size < 0 else size - len(out)))
            if not block:
                break
            out += block
        if 0 <= size < len(out):
            out, self._pending = out[:size], out[size:]
        return out

    def take_bad(self, before: int) -> set[int]:
        """The numbers of the bad lines before line ``before`` (forgotten here)."""
        taken = {n for n in self._bad if n < before}
        self._bad -= taken
        return taken

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> _Utf8Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def close(self) -> None:
        self._raw.close()

    def _checked(self, block: bytes) -> bytes:
        first = self._lines + 1  # the line this block starts in
        if block.isascii():
            self._lines += block.count(b"\n")
            return block
        if not block.endswith(b"\n"):
            block += self._raw.readline()  # no character cut in two at the end
        self._lines += block.count(b"\n")
        try:
            block.decode("utf-8")
            return block
        except UnicodeDecodeError:
            return self._replaced(block, first)

    def _replaced(self, block: bytes, first: int) -> bytes:
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                self._bad.add(first + i)
                lines[i] = line.decode("utf-8", "replace").encode("utf-8")
        return b"\n".join(lines)


def _skip_lines(first: int, count: int, skipped: set[int]) -> np.ndarray:
    """``count`` consecutive line numbers from ``first``, leaving out ``skipped``."""
    candidates = np.arange(first, first + count + len(skipped), dtype=np.int64)
    if skipped:
        candidates = candidates[~np.isin(candidates, list(skipped))]
    return candidates[:count]


_INT_RE = r"^\s*[+-]?\d+\s*$"  # an integer, of any size
_INT64_RE = r"^\s*[+-]?\d{1,18}\s*$"  # an integer surely within int64
_INF_RE = r"(?i)^\s*[+-]?(inf|infinity)\s*$"
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
    """Cast a string column to ``typ``: empty -> null; returns the rows that do not
    fit (integers beyond int64 and numbers beyond float64 included: never rounded)."""
    if pa.types.is_string(typ):
        return col, None
    regex = {pa.int64(): _INT64_RE, pa.float64(): _FLOAT_RE, pa.bool_(): _BOOL_RE}[typ]
    trimmed = pc.utf8_trim_whitespace(col)
    if typ == pa.int64() and pc.any(pc.starts_with(trimmed, "+")).as_py():
        trimmed = pc.replace_substring_regex(trimmed, r"^\+", "")  # the cast refuses "+5"
    empty = pc.equal(pc.utf8_length(trimmed), 0)
    fits = pc.match_substring_regex(trimmed, regex)
    if typ == pa.int64() and not pc.all(pc.or_(empty, fits)).as_py():
        fits = _long_ints_that_fit(trimmed, fits)
    keep = pc.if_else(pc.and_(fits, pc.invert(empty)), pc.utf8_lower(trimmed), None)
    values = keep.cast(typ)
    if typ == pa.float64() and pc.any(pc.is_inf(values)).as_py():
        # 1e400 parses as inf: out of range, unless written as inf
        overflow = pc.and_(pc.is_inf(values), pc.invert(pc.match_substring_regex(trimmed, _INF_RE)))
        fits = pc.and_(fits, pc.invert(pc.fill_null(overflow, False)))
        values = pc.if_else(fits, values, None)
    bad = pc.invert(pc.or_(empty, fits)).to_numpy(zero_copy_only=False)
    return values, (bad if bad.any() else None)


def _long_ints_that_fit(trimmed: pa.Array, short: pa.Array) -> pa.Array:
    """``short`` (integers of up to 18 digits) plus the longer integers within int64
    (checked one by one: they are rare)."""
    long = pc.and_(pc.match_substring_regex(trimmed, _INT_RE), pc.invert(short))
    if not pc.any(long).as_py():
        return short
    fits = short.to_numpy(zero_copy_only=False).copy()
    where = np.flatnonzero(long.to_numpy(zero_copy_only=False))
    for i, text in zip(where, trimmed.take(pa.array(where)).to_pylist(), strict=True):
        digits = text.lstrip("-").lstrip("0")
        fits[i] = len(digits) <= 19 and _INT64_MIN <= int(text) <= _INT64_MAX
    return pa.array(fits)


class ParquetSource(FileSource):
    """Parquet: typed, so nothing is dead-lettered. A file that cannot be read
    (empty, truncated, not Parquet, corrupt) is a :class:`ConnectorError` naming
    it: before the run when its footer is bad, while reading when a page is
    (caught where the file carries page checksums, or fails to decompress)."""

    format = "parquet"

    @property
    def schema(self) -> pa.Schema:
        with _parquet_errors(self.path):
            return pq.ParquetFile(arrow_readable(self.path, self.roots)).schema_arrow

    def _decoded(self) -> Iterator[pa.RecordBatch]:
        with (
            _parquet_errors(self.path),
            pq.ParquetFile(
                arrow_readable(self.path, self.roots), page_checksum_verification=True
            ) as f,
        ):
            yield from f.iter_batches(batch_size=max(self.batch_size, 65_536))


@contextlib.contextmanager
def _parquet_errors(path: Path) -> Iterator[None]:
    """pyarrow's errors on a bad file as one :class:`ConnectorError` of one line."""
    try:
        yield
    except ConnectorError:
        raise
    except (pa.ArrowException, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise ConnectorError(f"cannot read Parquet file {path}: {reason}") from None


# ------------------------------------------------------------------------------ sinks


class FileSink:
    """Writes batches to a file, opened on the first write.

    With ``atomic`` (the default) the rows go to a temporary file beside
    ``path`` that ``close()`` renames into place and ``abort()`` deletes, so a
    failed job leaves no output. Without it the file is written in place and
    grows as results arrive (for long-running jobs that others tail).

    With ``roots`` the path is checked against them when the file is opened, and
    the temporary file is created, renamed and deleted relative to the checked
    directory (see :mod:`flowsql.connectors.paths`).
    """

    def __init__(self, path: Path, *, atomic: bool = True, roots: Roots = None) -> None:
        self.path = path
        self.atomic = atomic
        self.roots = roots
        self.rows_written = 0
        self._dir: Directory | None = None
        self._name = path.name  # in self._dir
        self._tmp: str | None = None  # in self._dir
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
        assert self._dir is not None
        try:
            if self._tmp is not None:
                self._dir.check_still_confined()
                self._dir.replace(self._tmp, self._name)
                self._tmp = None
        finally:
            self._discard()
        log.debug("wrote %d rows to %s", self.rows_written, self.path)

    def abort(self) -> None:
        """Discard the output when atomic (the target path is left untouched)."""
        self._closed = True
        if self._file is not None:
            self._file.close()
        self._discard()

    def _discard(self) -> None:
        """Delete the temporary file if it is still there; let go of the directory."""
        if self._dir is None:
            return
        if self._tmp is not None:
            self._dir.unlink(self._tmp)
            self._tmp = None
        self._dir.close()

    def _open(self) -> IO[bytes]:
        target = self.path
        if self.roots is not None:
            target = confined(self.path, self.roots, what="output file")
        self._dir = Directory(target.parent, self.roots, what="output directory")
        self._name = target.name
        if not self.atomic:
            fd = self._dir.open(self._name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            self._dir.check_still_confined()
            return os.fdopen(fd, "wb")
        for _ in range(100):
            # named before it exists, so that abort() (on SIGTERM too) finds it
            self._tmp = f".{self._name}.{os.urandom(4).hex()}.tmp"
            try:  # 0o666 less the umask: outputs get the usual mode
                fd = self._dir.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._tmp = None
                continue
            return os.fdopen(fd, "wb")
        raise ConnectorError(f"cannot create a temporary file beside {self.path}")

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

    def __init__(
        self, path: Path, *, delimiter: str = ",", atomic: bool = True, roots: Roots = None
    ) -> None:
        super().__init__(path, atomic=atomic, roots=roots)
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

    def __init__(self, path: Path, *, atomic: bool = True, roots: Roots = None) -> None:
        super().__init__(path, atomic=atomic, roots=roots)
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


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise ConnectorError(
            f"output batch columns {batch.schema} do not match the file's {schema}: {exc}"
        ) from None
