"""String kernels: UPPER, LOWER, LENGTH, SUBSTRING, CONCAT, ``||``, TRIM,
LTRIM, RTRIM, REPLACE, SPLIT_PART, REGEXP_REPLACE.

Positions are 1-based and count characters, not bytes. Functions whose Arrow
kernel needs constant options (positions, patterns) still accept columns:
they run once per distinct parameter value (see ``per_constant``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError
from flowsql.exec.functions.base import (
    Datum,
    Function,
    decode,
    fail,
    is_scalar,
    is_string_type,
    null_of,
    per_constant,
    scalar_kernel,
)
from flowsql.exec.functions.coerce import sql_cast

EMPTY = pa.scalar("")


def text(name: str, value: Datum) -> Datum:
    """A string operand; an untyped NULL becomes a string NULL."""
    value = decode(value)
    if is_string_type(value.type):
        return value
    if pa.types.is_null(value.type):
        return value.cast(pa.string())
    raise fail(name, [value], "argument must be a string")


def _as_text(value: Datum) -> Datum:
    """Any value as a string (CONCAT and ``||`` accept numbers, dates...)."""
    value = decode(value)
    return value if is_string_type(value.type) else sql_cast(value, pa.string())


def _with_constants(
    name: str,
    fn: Callable[[Datum, list[Any]], Datum],
    value: Datum,
    params: list[Datum],
) -> Datum:
    """``fn(value, constants)`` for a string ``value``; NULL constants give
    NULL; column parameters are handled once per distinct value."""
    if all(is_scalar(p) for p in params):
        values = [decode(p).as_py() for p in params]
        if any(v is None for v in values):
            return null_of(value.type) if is_scalar(value) else pa.nulls(len(value), value.type)
        return fn(value, values)
    n = next(len(p) for p in params if not is_scalar(p))
    subject = pa.repeat(value, n) if is_scalar(value) else value
    return per_constant(fn, subject, params, subject.type)


def _unary(name: str, fn: Callable[[Datum], Datum]) -> Callable[[list[Datum]], Datum]:
    return lambda args: fn(text(name, args[0]))


def _length(args: list[Datum]) -> Datum:
    return pc.utf8_length(text("length", args[0])).cast(pa.int64())


def _slice(value: Datum, params: list[Any]) -> Datum:
    start, length = params[0], params[1] if len(params) > 1 else None
    begin = start - 1
    if length is None:
        return pc.utf8_slice_codeunits(value, start=max(begin, 0))
    if length < 0:
        raise ExecutionError(f"SUBSTRING: negative length {length} is not allowed")
    stop = max(begin + length, 0)
    return pc.utf8_slice_codeunits(value, start=max(begin, 0), stop=stop)


def _substring(args: list[Datum]) -> Datum:
    return _with_constants("substring", _slice, text("substring", args[0]), args[1:])


def _concat(handling: str) -> Callable[[list[Datum]], Datum]:
    def join(parts: list[pa.Array]) -> pa.Array:
        return pc.binary_join_element_wise(*parts, "", null_handling=handling)

    run = scalar_kernel(join)
    return lambda args: run([_as_text(a) for a in args])


def _trim(name: str, fn: Callable[..., Datum]) -> Callable[[list[Datum]], Datum]:
    def trim(value: Datum, params: list[Any]) -> Datum:
        return fn(value, characters=params[0])

    def kernel(args: list[Datum]) -> Datum:
        chars = args[1] if len(args) > 1 else pa.scalar(" ")
        return _with_constants(name, trim, text(name, args[0]), [chars])

    return kernel


def _replace_const(value: Datum, params: list[Any]) -> Datum:
    old, new = params
    if old == "":
        return value
    return pc.replace_substring(value, pattern=old, replacement=new)


def _replace(args: list[Datum]) -> Datum:
    return _with_constants("replace", _replace_const, text("replace", args[0]), args[1:])


def _split_part_const(value: Datum, params: list[Any]) -> Datum:
    delimiter, n = params
    if n == 0:
        raise ExecutionError("SPLIT_PART: field position must not be zero")
    if is_scalar(value):
        return _split_part_const(pa.array([value.as_py()], value.type), params)[0]
    if delimiter == "":
        return value if n in (1, -1) else pc.if_else(pc.is_valid(value), EMPTY, value)
    parts = pc.split_pattern(value, delimiter)
    lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy()
    index = np.full(len(value), n - 1) if n > 0 else lengths + n
    valid = (index >= 0) & (index < lengths)
    flat = parts.flatten()
    if len(flat) == 0:
        return pc.if_else(pc.is_valid(value), EMPTY, value)
    starts = parts.offsets.to_numpy()[:-1] - parts.offsets[0].as_py()
    picked = flat.take(pa.array(np.where(valid, starts + index, 0)))
    result = pc.if_else(pa.array(valid), picked, EMPTY)
    return pc.if_else(pc.is_valid(value), result, null_of(value.type))


def _split_part(args: list[Datum]) -> Datum:
    return _with_constants("split_part", _split_part_const, text("split_part", args[0]), args[1:])


def _regexp_const(value: Datum, params: list[Any]) -> Datum:
    pattern, replacement = params[0], params[1]
    flags = params[2] if len(params) > 2 else ""
    unknown = set(flags) - set("gi")
    if unknown:
        raise ExecutionError(
            f"REGEXP_REPLACE: unknown flag(s) {''.join(sorted(unknown))!r} (allowed: 'g', 'i')"
        )
    if "i" in flags:
        pattern = f"(?i){pattern}"
    limit = None if "g" in flags else 1
    return pc.replace_substring_regex(
        value, pattern=pattern, replacement=replacement, max_replacements=limit
    )


def _regexp_replace(args: list[Datum]) -> Datum:
    value = text("regexp_replace", args[0])
    return _with_constants("regexp_replace", _regexp_const, value, args[1:])


FUNCTIONS = (
    Function("upper", _unary("upper", pc.utf8_upper), 1, 1, "unary"),
    Function("lower", _unary("lower", pc.utf8_lower), 1, 1, "unary"),
    Function("length", _length, 1, 1, "unary"),
    Function("substring", _substring, 2, 3, "unary"),
    Function("concat", _concat("skip"), 1, None),
    Function("concat_op", _concat("emit_null"), 2, None),
    Function("trim", _trim("trim", pc.utf8_trim), 1, 2, "unary"),
    Function("ltrim", _trim("ltrim", pc.utf8_ltrim), 1, 2, "unary"),
    Function("rtrim", _trim("rtrim", pc.utf8_rtrim), 1, 2, "unary"),
    Function("replace", _replace, 3, 3, "unary"),
    Function("split_part", _split_part, 3, 3, "unary"),
    Function("regexp_replace", _regexp_replace, 3, 4, "unary"),
)
