"""Type coercion with SQL semantics: CAST, common types of CASE/COALESCE
branches, and aligning the two sides of a comparison or arithmetic operator.

Rules, in order:

- dictionary-encoded values are compared and computed on as their values;
- a typed or untyped NULL takes the other side's type;
- numbers mix freely: any float makes the result float64; a decimal with an
  integer stays an exact decimal (the integer becomes ``DECIMAL(digits, 0)``);
- an Arrow timestamp meeting an integer is compared as epoch milliseconds
  (event times are epoch-ms integers);
- otherwise a constant (literal) is cast to the other side's type, so
  ``price = '10'`` and ``symbol = 10`` both work; between two columns the
  string side is cast to the other side's type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flowsql.exec.functions.base import (
    Datum,
    by_dictionary,
    decode,
    fail,
    is_numeric_type,
    is_scalar,
    is_string_type,
    map_dictionary,
    null_of,
)

HALF_AWAY = "half_towards_infinity"  # Arrow's name for half away from zero
MAX_PRECISION = 38
TS_MS = pa.timestamp("ms")

_INT_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}


def sql_cast(value: Datum, to: pa.DataType) -> Datum:
    """``CAST(value AS to)`` with SQL semantics.

    Decimals round half away from zero when cast to integers or to fewer
    digits, floats cast to integers round half to even (as in PostgreSQL and
    DuckDB); integers cast to timestamps are epoch ms;
    strings are parsed as ISO-8601 for timestamps. A value that does not fit
    or parse raises ``pyarrow.ArrowInvalid`` (turned into an ExecutionError by
    the caller).
    """
    if isinstance(value, pa.Scalar):
        return cast_constant(decode(value), to)
    if by_dictionary(value) and not pa.types.is_dictionary(to):
        return map_dictionary(value, lambda values: sql_cast(values, to), keep_encoding=False)
    if pa.types.is_dictionary(to) and pa.types.is_dictionary(value.type):
        return value.cast(to)
    return _cast(decode(value), to)


def cast_constant(value: pa.Scalar, to: pa.DataType) -> pa.Scalar:
    """``sql_cast`` of a constant, memoized: casting an Arrow scalar costs tens
    of microseconds, and the same literal is coerced again for every batch."""
    try:
        return _cast_constant(value.type, value.as_py(), to)
    except TypeError:  # an unhashable (nested) value
        return _cast(value, to)


@lru_cache(maxsize=4096)
def _cast_constant(src: pa.DataType, value: Any, to: pa.DataType) -> pa.Scalar:
    return _cast(pa.scalar(value, src), to)


def _cast(value: Datum, to: pa.DataType) -> Datum:
    src = value.type
    if src == to:
        return value
    if pa.types.is_null(src):
        return null_of(to) if is_scalar(value) else pa.nulls(len(value), to)
    if pa.types.is_timestamp(to):
        return _to_timestamp(value).cast(to)
    if pa.types.is_integer(to) and pa.types.is_timestamp(src):
        return value.cast(pa.timestamp("ms", src.tz)).cast(pa.int64()).cast(to)
    if pa.types.is_integer(to) and pa.types.is_decimal(src):
        return round_half_away(value, 0).cast(to)
    if pa.types.is_integer(to) and pa.types.is_floating(src):
        return pc.round(value, 0, round_mode="half_to_even").cast(to)
    if pa.types.is_decimal(to):
        return _to_decimal(value, to)
    return value.cast(to)


def _to_timestamp(value: Datum) -> Datum:
    src = value.type
    if pa.types.is_integer(src):
        return value.cast(pa.int64()).cast(TS_MS)
    if pa.types.is_floating(src):
        return pc.floor(value).cast(pa.int64()).cast(TS_MS)
    if is_string_type(src):
        parsed = parse_timestamps(value)
        if null_count(parsed) > null_count(value):
            raise pa.ArrowInvalid("string is not an ISO-8601 timestamp or epoch-ms integer")
        return parsed
    return value


def _to_decimal(value: Datum, to: pa.DataType) -> Datum:
    src = value.type
    if pa.types.is_floating(src):
        return pc.round(value, to.scale, round_mode=HALF_AWAY).cast(to)
    if pa.types.is_decimal(src) and src.scale > to.scale:
        return round_half_away(value, to.scale).cast(to)
    if is_string_type(src):
        try:
            return value.cast(to)
        except pa.ArrowInvalid:
            wide = pa.decimal128(MAX_PRECISION, MAX_PRECISION - (to.precision - to.scale))
            return round_half_away(value.cast(wide), to.scale).cast(to)
    return value.cast(to)


def round_half_away(value: Datum, digits: int) -> Datum:
    """ROUND(value, digits), half away from zero, for any numeric type.

    Decimals get a result scale of ``max(digits, 0)`` and one more integer digit
    (rounding can carry: 9.99 -> 10.0).
    """
    t = value.type
    if pa.types.is_integer(t):
        return value if digits >= 0 else pc.round(value, digits, round_mode=HALF_AWAY)
    if not pa.types.is_decimal(t):
        return pc.round(value, digits, round_mode=HALF_AWAY)
    if digits >= t.scale:
        return value
    scale = max(digits, 0)
    widened = _widen(value, 1)
    rounded = pc.round(widened, digits, round_mode=HALF_AWAY)
    precision = min(MAX_PRECISION, t.precision - t.scale + scale + 1)
    return rounded.cast(pa.decimal128(precision, scale))


def _widen(value: Datum, extra: int) -> Datum:
    """More precision for headroom (decimal256 when decimal128 is full)."""
    t = value.type
    if t.precision + extra <= MAX_PRECISION:
        return value.cast(pa.decimal128(t.precision + extra, t.scale))
    return value.cast(pa.decimal256(min(76, t.precision + extra), t.scale))


def parse_timestamps(value: Datum) -> Datum:
    """ISO-8601 strings (with or without zone; ``T`` or space) or epoch-ms digit
    strings to naive UTC ``timestamp[ms]``; unparseable values become NULL.

    The fast path is one Arrow cast. Only when the batch mixes formats or holds
    bad values does it fall back to parsing each *distinct* string in Python.
    """
    for target in (TS_MS, pa.timestamp("ms", "UTC")):
        try:
            return value.cast(target).cast(TS_MS)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    if is_scalar(value):
        return pa.scalar(_parse_one(value.as_py()), TS_MS)
    encoded = pc.dictionary_encode(value)
    parsed = [_parse_one(s) for s in encoded.dictionary.to_pylist()]
    return pa.array(parsed, TS_MS).take(encoded.indices)


def _parse_one(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    text = text.strip()
    if text.lstrip("-").isdigit():
        return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(text))
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def null_count(value: Datum) -> int:
    """Number of NULLs in an array, or 1/0 for a NULL/valid scalar."""
    if is_scalar(value):
        return 0 if value.is_valid else 1
    return value.null_count


def int_as_decimal(value: Datum) -> Datum:
    """An integer value as an exact ``DECIMAL(digits, 0)``; a constant uses
    only as many digits as it has, which keeps result precisions small."""
    full = pa.decimal128(_INT_DIGITS.get(value.type.bit_width, 20), 0)
    if is_scalar(value) and value.is_valid:
        digits = max(1, len(str(abs(value.as_py()))))
        return cast_constant(cast_constant(value, full), pa.decimal128(digits, 0))
    return sql_cast(value, full)


def numeric_common(types: Sequence[pa.DataType]) -> pa.DataType:
    """The type all of ``types`` (numeric) are converted to for CASE/COALESCE."""
    if any(pa.types.is_floating(t) for t in types):
        return pa.float64()
    decimals = [t for t in types if pa.types.is_decimal(t)]
    if not decimals:
        if all(t == types[0] for t in types):
            return types[0]
        return pa.int64()
    scale = max(t.scale for t in decimals)
    ints = [_INT_DIGITS.get(t.bit_width, 20) for t in types if pa.types.is_integer(t)]
    whole = max([t.precision - t.scale for t in decimals] + ints)
    return pa.decimal128(min(MAX_PRECISION, whole + scale), scale)


def common_type(types: Sequence[pa.DataType]) -> pa.DataType:
    """The result type of values that must share one type (CASE branches,
    COALESCE arguments, IN lists)."""
    real = [_value_type(t) for t in types if not pa.types.is_null(t)]
    if not real:
        return pa.null()
    if all(t == real[0] for t in real):
        return real[0]
    if all(is_numeric_type(t) for t in real):
        return numeric_common(real)
    if any(is_string_type(t) for t in real):
        return pa.string()
    if all(pa.types.is_integer(t) or pa.types.is_timestamp(t) for t in real):
        return pa.int64()
    return real[0]


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def unify(values: Sequence[Datum], fn: str) -> list[Datum]:
    """Cast every value to the common type of all of them."""
    target = common_type([v.type for v in values])
    return [_cast_checked(v, target, fn, values) for v in values]


def align(a: Datum, b: Datum, fn: str) -> tuple[Datum, Datum]:
    """Make two operands of a comparison or arithmetic operator compatible."""
    a, b = decode(a), decode(b)
    ta, tb = a.type, b.type
    if ta == tb:
        return a, b
    if pa.types.is_null(ta) or pa.types.is_null(tb):
        return (
            (_cast_checked(a, tb, fn, (a, b)), b)
            if pa.types.is_null(ta)
            else (a, _cast_checked(b, ta, fn, (a, b)))
        )
    if is_numeric_type(ta) and is_numeric_type(tb):
        return _align_numbers(a, b)
    if _is_time_vs_int(ta, tb) or _is_time_vs_int(tb, ta):
        return _epoch_ms(a), _epoch_ms(b)
    if is_scalar(b) and not is_scalar(a):
        return a, _cast_checked(b, ta, fn, (a, b))
    if is_scalar(a) and not is_scalar(b):
        return _cast_checked(a, tb, fn, (a, b)), b
    if is_string_type(ta):
        return _cast_checked(a, tb, fn, (a, b)), b
    if is_string_type(tb):
        return a, _cast_checked(b, ta, fn, (a, b))
    return a, b


def _align_numbers(a: Datum, b: Datum) -> tuple[Datum, Datum]:
    ta, tb = a.type, b.type
    if pa.types.is_floating(ta) or pa.types.is_floating(tb):
        if is_scalar(b) and pa.types.is_floating(ta):  # cast the constant, not the column
            return a, cast_constant(b, pa.float64())
        if is_scalar(a) and pa.types.is_floating(tb):
            return cast_constant(a, pa.float64()), b
        return _float(a), _float(b)
    if pa.types.is_decimal(ta) and pa.types.is_integer(tb):
        return a, int_as_decimal(b)
    if pa.types.is_integer(ta) and pa.types.is_decimal(tb):
        return int_as_decimal(a), b
    return a, b


def _float(value: Datum) -> Datum:
    return sql_cast(value, pa.float64()) if pa.types.is_decimal(value.type) else value


def _is_time_vs_int(t1: pa.DataType, t2: pa.DataType) -> bool:
    return (pa.types.is_timestamp(t1) or pa.types.is_date(t1)) and pa.types.is_integer(t2)


def _epoch_ms(value: Datum) -> Datum:
    t = value.type
    if pa.types.is_date(t):
        value = value.cast(TS_MS)
        t = value.type
    if pa.types.is_timestamp(t):
        return value.cast(pa.timestamp("ms", t.tz)).cast(pa.int64())
    return value


def _cast_checked(value: Datum, to: pa.DataType, fn: str, args: Sequence[Datum] = ()) -> Datum:
    if value.type == to or pa.types.is_null(to):
        return value
    try:
        return sql_cast(value, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        shown = f"'{value.as_py()}' " if is_scalar(value) else ""
        raise fail(
            fn, args or [value], f"cannot convert {shown}{value.type} to {to} ({exc})"
        ) from exc
