"""JSON lines <-> Arrow, in bulk.

Decoding: a chunk of lines (~8 MB, ~100K lines) is parsed in one
``polars.read_ndjson`` call against a fixed schema (measured fastest here:
~2M rec/s, vs. msgspec + building Arrow columns ~1.2M and pyarrow.json ~1.0M).
Only when that call fails does the chunk take the slow path: each line is
checked on its own, bad lines become dead letters carrying the original text,
the error and ``file:line``, and the good lines are parsed in bulk again.

The schema is given, or inferred from a sample of the first lines: a column is
numeric when most of its values are numbers, boolean when most are booleans,
else a string (any JSON value fits a string column: objects and arrays keep
their JSON text). Later values of the wrong type are dead letters. A sample
without one good line gives a schema without columns: every line is then a
dead letter, or a row of no columns.

Hostile lines are dead letters, never a crash nor a changed value: a line
nested deeper than :data:`MAX_JSON_DEPTH` levels (the bulk parser's limit;
msgspec, limited by Python's stack, gives up earlier and then lets polars
decide), and an integer outside int64 in an integer column (a column is float
only when its sample holds a fraction or an exponent, never because an integer
is large).

Encoding: one JSON object per row keyed by column name; timestamps as epoch ms
integers, decimals as strings (exact), NaN/inf as null.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.records import OFFSET, DeadLetter

log = logging.getLogger(__name__)

#: Lines of the first chunk used to infer a schema.
INFER_LINES = 20_000

#: Deepest nesting of arrays and objects a line may have (the outer object is
#: level 1): polars' parser refuses more, and such a line is a dead letter.
MAX_JSON_DEPTH = 1024

#: Stands for "no columns" when polars parses lines only to count them.
_ROW_COUNTER = "_flowsql_rows"  # any JSON value fits: a key of that name is harmless

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """One decoded chunk: the rows (None when none were good) and the dead letters."""

    batch: pa.RecordBatch | None
    letters: list[DeadLetter] = field(default_factory=list)


class JsonlDecoder:
    """Decodes chunks of JSON lines into record batches of one schema.

    Args:
        schema: the columns and their types; None = infer from the first chunk.
        source: input name put on dead letters.
        path: file name used in dead-letter positions (``path:line``).
        offsets: add the 1-based line number as the ``_offset`` system column.
    """

    def __init__(
        self,
        schema: pa.Schema | None = None,
        *,
        source: str = "",
        path: str = "",
        offsets: bool = True,
    ) -> None:
        self.source = source
        self.path = path
        self.offsets = offsets
        self.schema: pa.Schema | None = None
        self._polars: dict[str, Any] = {}
        self._checks: dict[str, Callable[[Any], bool]] = {}
        self._validator: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
        if schema is not None:
            self._set_schema(schema)

    def infer(self, chunk: bytes) -> pa.Schema:
        """Fix the schema from the first lines of ``chunk`` unless it is known."""
        if self.schema is None:
            self._set_schema(infer_schema(chunk))
        assert self.schema is not None
        return self.schema

    def decode(self, chunk: bytes, first_line: int = 1, lines: int | None = None) -> Decoded:
        """Decode complete lines; ``first_line`` is the number of the first one and
        ``lines`` how many there are (counted when not given)."""
        self.infer(chunk)
        try:
            table = self._bulk(chunk)
        except (pl.exceptions.PolarsError, OverflowError, ValueError) as exc:
            log.debug("chunk at line %d takes the slow path: %s", first_line, exc)
            return self._decode_dirty(chunk, first_line)
        if lines is None:
            lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") or not chunk else 1)
        numbers = _line_numbers(chunk, first_line, table.num_rows, lines)
        return Decoded(self._finish(table, numbers))

    def _set_schema(self, schema: pa.Schema) -> None:
        schema = pa.schema([f for f in schema if f.name != OFFSET])
        self.schema = schema
        self._polars = {f.name: _polars_type(f.type) for f in schema}
        self._checks = {f.name: _check_for(f.type) for f in schema}
        self._validator = _validator(schema)

    def _bulk(self, chunk: bytes) -> pa.Table:
        if not chunk or chunk.isspace():
            return pa.table({name: pa.array([], pa.null()) for name in self._polars})
        if not self._polars:  # no columns: polars would return no rows, so count them
            table = pl.read_ndjson(chunk, schema={_ROW_COUNTER: pl.String}).to_arrow()
            return table.drop_columns([_ROW_COUNTER])
        frame = pl.read_ndjson(chunk, schema=self._polars)
        return frame.to_arrow()

    def _finish(self, table: pa.Table, lines: np.ndarray) -> pa.RecordBatch:
        assert self.schema is not None
        table = _cast(table, self.schema)
        if self.offsets:
            table = table.append_column(OFFSET, pa.array(lines, pa.int64()))
        return table.combine_chunks().to_batches()[0] if table.num_rows else _empty(table)

    def _decode_dirty(self, chunk: bytes, first_line: int) -> Decoded:
        """A chunk the bulk parser refused: find the bad lines with msgspec (in C,
        restarting after each bad line), parse the rest in bulk. Falls back to
        checking line by line when the two parsers disagree."""
        lines = _Lines(chunk)
        bad = self._find_bad(chunk, lines)
        if bad is not None:
            keep = ~lines.blank
            keep[[i for i, _ in bad]] = False
            numbers = np.flatnonzero(keep).astype(np.int64) + first_line
            try:
                table = self._bulk(lines.without(chunk, [i for i, _ in bad]))
            except (pl.exceptions.PolarsError, OverflowError, ValueError):
                table = None
            if table is not None and table.num_rows == len(numbers):
                letters = [self._letter(err, lines.raw(chunk, i), first_line + i) for i, err in bad]
                batch = self._finish(table, numbers) if len(numbers) else None
                return Decoded(batch, letters)
        return self._decode_line_by_line(chunk, first_line)

    def _find_bad(self, chunk: bytes, lines: _Lines) -> list[tuple[int, str]] | None:
        """(line index, error) of every line msgspec rejects, or None if unsure."""
        view = memoryview(chunk)
        bad: list[tuple[int, str]] = []
        line = 0
        while line < len(lines.starts):
            start = int(lines.starts[line])
            try:
                self._validator.decode_lines(view[start:])
                return bad
            except RecursionError:
                return None  # a line too deep for msgspec: _check lets polars decide
            except msgspec.ValidationError as exc:
                found = _ROW.search(str(exc))
                line = lines.nth_nonblank(line, int(found.group(1))) if found else -1
            except msgspec.DecodeError as exc:
                found = _BYTE.search(str(exc))
                line = lines.line_at(start + int(found.group(1))) if found else -1
            error = self._check(lines.raw(chunk, line)) if line >= 0 else ""
            if not error:
                return None  # the validator and the checks disagree
            bad.append((line, error))
            line += 1
        return bad

    def _decode_line_by_line(self, chunk: bytes, first_line: int) -> Decoded:
        good: list[bytes] = []
        numbers: list[int] = []
        letters: dict[int, DeadLetter] = {}  # by line number
        for i, line in enumerate(chunk.split(b"\n")):
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            error = self._check(line)
            if error:
                letters[first_line + i] = self._letter(error, line, first_line + i)
            else:
                good.append(line)
                numbers.append(first_line + i)
        tables = self._bulk_or_split(good, numbers, letters)
        in_order = [letters[n] for n in sorted(letters)]
        if not tables:
            return Decoded(None, in_order)
        table = pa.concat_tables([t for t, _ in tables])
        lines = np.concatenate([n for _, n in tables])
        return Decoded(self._finish(table, lines), in_order)

    def _bulk_or_split(
        self, lines: list[bytes], numbers: list[int], letters: dict[int, DeadLetter]
    ) -> list[tuple[pa.Table, np.ndarray]]:
        """Parse validated lines in bulk; if the parser still objects, halve until
        the lines it rejects are found (rare: the checks mirror the parser)."""
        if not lines:
            return []
        try:
            return [(self._bulk(b"\n".join(lines)), np.asarray(numbers, np.int64))]
        except (pl.exceptions.PolarsError, OverflowError, ValueError) as exc:
            if len(lines) == 1:
                letters[numbers[0]] = self._letter(_bulk_error(exc), lines[0], numbers[0])
                return []
        mid = len(lines) // 2
        return self._bulk_or_split(lines[:mid], numbers[:mid], letters) + self._bulk_or_split(
            lines[mid:], numbers[mid:], letters
        )

    def _check(self, line: bytes) -> str:
        """Why this line cannot be decoded into the schema, or "" when it can."""
        try:
            obj = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            return f"invalid JSON: {exc}"
        except RecursionError:
            return self._check_deep(line)
        if not isinstance(obj, dict):
            return f"expected a JSON object, got {_json_type(obj)}"
        for name, ok in self._checks.items():
            value = obj.get(name)
            if value is not None and not ok(value):
                return _type_error(name, self._polars[name], value)
        return ""

    def _check_deep(self, line: bytes) -> str:
        """A line nested deeper than msgspec can follow from here: the bulk parser
        decides, so the line's fate does not depend on the Python stack."""
        try:
            self._bulk(line)
        except (pl.exceptions.PolarsError, OverflowError, ValueError) as exc:
            return _bulk_error(exc)
        return ""

    def _letter(self, error: str, line: bytes, number: int) -> DeadLetter:
        return DeadLetter(
            error=error,
            original=line.decode("utf-8", errors="replace"),
            source=self.source,
            position=f"{self.path}:{number}" if self.path else f"line {number}",
            operator="decode",
        )


def _bulk_error(exc: Exception) -> str:
    """The dead-letter reason for a line the bulk parser refused."""
    if "DepthLimitExceeded" in str(exc):
        return f"JSON nested too deep (more than {MAX_JSON_DEPTH} levels)"
    return f"invalid line: {exc}"


_ROW = re.compile(r"at `\$\[(\d+)\]")
_BYTE = re.compile(r"\(byte (\d+)\)")


class _Lines:
    """Where each line of a chunk starts and ends (newline excluded)."""

    def __init__(self, chunk: bytes) -> None:
        raw = np.frombuffer(chunk, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
        if chunk and not chunk.endswith(b"\n"):
            ends = np.append(ends, len(chunk))
        self.starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        self.ends = ends.astype(np.int64)
        length = self.ends - self.starts
        self.blank = length == 0
        for i in np.flatnonzero((length > 0) & (length <= 16)):  # short lines are rare
            self.blank[i] = chunk[int(self.starts[i]) : int(self.ends[i])].isspace()
        self._seen = np.cumsum(~self.blank)  # non-blank lines up to and including i

    def line_at(self, offset: int) -> int:
        """The line holding byte ``offset``."""
        return min(int(np.searchsorted(self.ends, offset)), len(self.ends) - 1)

    def nth_nonblank(self, line: int, n: int) -> int:
        """The ``n``-th (0-based) non-blank line from ``line`` on (-1: none)."""
        before = int(self._seen[line - 1]) if line else 0
        found = int(np.searchsorted(self._seen, before + n + 1))
        return found if found < len(self._seen) else -1

    def raw(self, chunk: bytes, line: int) -> bytes:
        """The text of ``line`` without its line end."""
        return chunk[int(self.starts[line]) : int(self.ends[line])].rstrip(b"\r")

    def without(self, chunk: bytes, lines: list[int]) -> bytes:
        """The chunk with the given lines cut out (each with its newline)."""
        parts, at = [], 0
        for line in sorted(lines):
            parts.append(chunk[at : int(self.starts[line])])
            at = int(self.ends[line]) + 1
        parts.append(chunk[at:])
        return b"".join(parts)


def _line_numbers(chunk: bytes, first_line: int, rows: int, lines: int) -> np.ndarray:
    """Line number of each decoded row: consecutive unless the chunk has blank lines."""
    if lines == rows:
        return np.arange(first_line, first_line + rows, dtype=np.int64)
    raw = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    if not chunk.endswith(b"\n"):
        ends = np.append(ends, len(chunk))
    starts = np.concatenate(([0], ends[:-1] + 1))
    blank = np.array([not chunk[s:e].strip() for s, e in zip(starts, ends, strict=True)])
    return (np.flatnonzero(~blank) + first_line).astype(np.int64)


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    if not len(schema):
        return table  # no columns, but its rows
    columns = []
    for f in schema:
        col = table.column(f.name)
        columns.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _empty(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], f.type) for f in table.schema], schema=table.schema
    )


# ------------------------------------------------------------------- types and inference


def _polars_type(t: pa.DataType) -> Any:
    """The polars type a column is parsed as (then cast to ``t`` in Arrow)."""
    if pa.types.is_boolean(t):
        return pl.Boolean
    if pa.types.is_integer(t):
        return pl.Int64
    if pa.types.is_floating(t):
        return pl.Float64
    return pl.String  # strings, decimals (exact text), timestamps (ISO text)...


def _validator(schema: pa.Schema) -> msgspec.json.Decoder[Any]:
    """A msgspec decoder that accepts exactly the lines the bulk parser accepts
    (but for columns msgspec cannot name: lines it passes and polars refuses are
    then found line by line)."""
    int64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]
    kinds = {pl.Boolean: bool, pl.Int64: int64, pl.Float64: float}
    named = [f for f in schema if not _UNNAMEABLE.search(f.name)]
    fields = [
        (f"f{i}", kinds[t] | None if (t := _polars_type(f.type)) in kinds else Any, None)
        for i, f in enumerate(named)
    ]
    rename = {f"f{i}": f.name for i, f in enumerate(named)}
    row = msgspec.defstruct("Row", fields, rename=rename, gc=False)
    return msgspec.json.Decoder(row)


#: Characters msgspec refuses in a field name.
_UNNAMEABLE = re.compile(r'[\\"\x00-\x1f]')


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _INT64_MIN <= v <= _INT64_MAX


def _check_for(t: pa.DataType) -> Callable[[Any], bool]:
    """A per-value check that mirrors what the bulk parser accepts for ``t``."""
    kind = _polars_type(t)
    if kind == pl.Boolean:
        return lambda v: isinstance(v, bool)
    if kind == pl.Int64:
        return _is_int64
    if kind == pl.Float64:
        return _is_number
    return lambda v: True


def _type_error(name: str, kind: Any, value: Any) -> str:
    if kind == pl.Int64 and type(value) is int:
        return f"column '{name}': integer {value} does not fit in int64"
    return f"column '{name}': expected {_describe(kind)}, got {_json_type(value)} {_short(value)}"


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else "null"


def _describe(kind: Any) -> str:
    return {pl.Boolean: "a boolean", pl.Int64: "an integer", pl.Float64: "a number"}.get(
        kind, "a string"
    )


def _short(v: Any) -> str:
    text = msgspec.json.encode(v).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def infer_schema(chunk: bytes, max_lines: int = INFER_LINES) -> pa.Schema:
    """Infer column types from the first ``max_lines`` lines of ``chunk``.

    Columns appear in first-seen order. Majority rules, so a few bad values do
    not change a column's type: numeric when more than half of the non-null
    values are numbers (float64 if any has a fraction or an exponent, else int64:
    integers beyond int64 are then dead letters, never rounded to floats),
    boolean when more than half are booleans, else string. Lines that are not
    JSON objects (or too deep to decode here) take no part, nor do keys holding
    a NUL character (polars cannot name a column so).
    """
    rows = _sample(chunk, max_lines)
    names = dict.fromkeys(name for row in rows for name in row if "\x00" not in name)
    fields = []
    for name in names:
        kinds = Counter(map(type, (row.get(name) for row in rows)))
        fields.append((name, _majority(kinds)))
    return pa.schema(fields)


def _sample(chunk: bytes, max_lines: int) -> list[dict[str, Any]]:
    end = 0
    for _ in range(max_lines):
        nxt = chunk.find(b"\n", end)
        if nxt < 0:
            end = len(chunk)
            break
        end = nxt + 1
    head = chunk[:end]
    try:
        rows = msgspec.json.Decoder().decode_lines(head)
    except (msgspec.DecodeError, RecursionError):
        rows = [_try_decode(line) for line in head.split(b"\n")]
    return [r for r in rows if isinstance(r, dict)]


def _try_decode(line: bytes) -> Any:
    try:
        return msgspec.json.decode(line) if line.strip() else None
    except (msgspec.DecodeError, RecursionError):
        return None


def _majority(kinds: Counter[type]) -> pa.DataType:
    total = sum(n for kind, n in kinds.items() if kind is not type(None))
    numbers = kinds[int] + kinds[float]
    if total and numbers * 2 > total:
        return pa.float64() if kinds[float] else pa.int64()
    if total and kinds[bool] * 2 > total:
        return pa.bool_()
    return pa.string()


# --------------------------------------------------------------------------- encoding


_ENCODER = msgspec.json.Encoder()


def jsonable(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns converted for JSON output: timestamps -> epoch ms, decimals and
    dates/times -> strings, dictionaries decoded, NaN/inf -> null."""
    columns = [_jsonable_column(col) for col in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _jsonable_column(col: pa.Array) -> pa.Array:
    t = col.type
    if pa.types.is_dictionary(t):
        return _jsonable_column(col.dictionary_decode())
    if pa.types.is_timestamp(t):
        return col.cast(pa.timestamp("ms", t.tz)).cast(pa.int64())
    if pa.types.is_decimal(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return col.cast(pa.string())
    if pa.types.is_duration(t):
        return col.cast(pa.duration("ms")).cast(pa.int64())
    if pa.types.is_floating(t) and col.null_count < len(col):
        finite = pc.is_finite(col)
        return col if pc.all(finite).as_py() else pc.if_else(finite, col, None)
    return col


def encode_lines(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON lines, each ending in a newline.

    Written by polars (~4x faster here than ``to_pylist`` + msgspec, which stays
    as the fallback for what polars refuses, e.g. duplicate column names).
    """
    if batch.num_rows == 0:
        return b""
    if batch.num_columns == 0:  # rows of an input whose sample had no good line
        return b"{}\n" * batch.num_rows
    batch = jsonable(batch)
    try:
        buffer = io.BytesIO()
        pl.from_arrow(batch).write_ndjson(buffer)  # type: ignore[union-attr]
        return buffer.getvalue()
    except (pl.exceptions.PolarsError, ValueError, TypeError):
        names = batch.schema.names
        rows = [
            dict(zip(names, values, strict=True))
            for values in zip(*(c.to_pylist() for c in batch.columns), strict=True)
        ]
        return _ENCODER.encode_lines(rows)
