"""String kernels: UPPER, LOWER, INITCAP, LENGTH, SUBSTRING, CONCAT,
CONCAT_WS, ``||``, TRIM, LTRIM, RTRIM, REPLACE, SPLIT_PART, REGEXP_REPLACE.

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
    Kernel,
    as_array,
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


def _join(parts: list[pa.Array], sep: Datum, handling: str) -> pa.Array:
    """``binary_join_element_wise``. With ``"skip"``, Arrow drops the rows
    whose parts are all NULL from its output; such rows get one ``''`` part,
    so they join to ``''`` and the output keeps one value per row."""
    if handling == "skip":
        all_null = parts[0].is_null()
        for part in parts[1:]:
            all_null = pc.and_(all_null, part.is_null())
        if pc.any(all_null).as_py():
            parts = [pc.if_else(all_null, EMPTY.cast(parts[0].type), parts[0]), *parts[1:]]
    return pc.binary_join_element_wise(*parts, sep, null_handling=handling)


def _concat(handling: str) -> Callable[[list[Datum]], Datum]:
    def join(parts: list[pa.Array]) -> pa.Array:
        return _join(parts, "", handling)

    run = scalar_kernel(join)
    return lambda args: run([_as_text(a) for a in args])


def _concat_ws(args: list[Datum]) -> Datum:
    """CONCAT_WS(sep, a, ...): the non-NULL arguments joined by ``sep``
    (NULLs skipped, all NULL gives ''); a NULL separator gives NULL."""
    sep = _as_text(args[0])
    parts = [_as_text(a) for a in args[1:]]
    if all(is_scalar(a) for a in [sep, *parts]):
        return _concat_ws_arrays([as_array(a) for a in [sep, *parts]])[0]
    n = next(len(a) for a in [sep, *parts] if not is_scalar(a))
    return _concat_ws_arrays([pa.repeat(a, n) if is_scalar(a) else a for a in [sep, *parts]])


def _concat_ws_arrays(arrays: list[pa.Array]) -> pa.Array:
    sep, parts = arrays[0], arrays[1:]
    joined = _join(parts, sep, "skip")
    return pc.if_else(pc.is_valid(sep), joined, null_of(joined.type))


#: A word of INITCAP: a run of letters and digits (Flink, PostgreSQL).
_WORD = r"[\p{L}\p{N}]+"
_NON_WORD = r"[^\p{L}\p{N}]+"


def _initcap(value: Datum) -> Datum:
    """The first character of each word upper case, the rest lower case.

    Each string is split into its separators (between the words) and its
    words; the words are capitalized, and the pieces re-joined in order:
    ``sep0 word0 sep1 word1 ... sep_k``. All vectorized over the batch."""
    if is_scalar(value):
        return _initcap(as_array(value))[0]
    if len(value) == 0:
        return value
    seps = pc.split_pattern_regex(value, _WORD)
    pieces = pc.split_pattern_regex(value, _NON_WORD).flatten()
    words = pc.utf8_capitalize(pieces.filter(pc.not_equal(pc.utf8_length(pieces), 0)))
    sep_offsets = seps.offsets.to_numpy()
    sep_offsets = sep_offsets - sep_offsets[0]
    sep_counts = np.diff(sep_offsets)  # k + 1 per valid row, 0 for NULL
    word_counts = np.maximum(sep_counts - 1, 0)
    word_offsets = np.concatenate([[0], np.cumsum(word_counts)])
    out_counts = sep_counts + word_counts
    out_offsets = np.concatenate([[0], np.cumsum(out_counts)])
    total = int(out_offsets[-1])
    row = np.repeat(np.arange(len(value)), out_counts)
    within = np.arange(total) - out_offsets[:-1][row]
    is_word = within % 2 == 1
    flat_seps = seps.flatten()
    index = np.where(
        is_word,
        len(flat_seps) + word_offsets[:-1][row] + within // 2,
        sep_offsets[:-1][row] + within // 2,
    )
    flat = pa.concat_arrays([flat_seps.cast(pa.string()), words.cast(pa.string())])
    nested = pa.ListArray.from_arrays(
        pa.array(out_offsets, pa.int32()), flat.take(pa.array(index, pa.int64()))
    )
    joined = pc.binary_join(nested, "")
    return pc.if_else(pc.is_valid(value), joined, null_of(pa.string())).cast(value.type)


def _trim(name: str, fn: Callable[..., Datum], ws: Callable[[Datum], Datum]) -> Kernel:
    """TRIM(s) strips whitespace (spaces, tabs, newlines and the other Unicode
    white space); with a second argument, the characters given."""

    def trim(value: Datum, params: list[Any]) -> Datum:
        return fn(value, characters=params[0])

    def kernel(args: list[Datum]) -> Datum:
        if len(args) == 1:
            return ws(text(name, args[0]))
        return _with_constants(name, trim, text(name, args[0]), [args[1]])

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
    Function("initcap", _unary("initcap", _initcap), 1, 1, "unary"),
    Function("length", _length, 1, 1, "unary"),
    Function("substring", _substring, 2, 3, "unary"),
    Function("concat", _concat("skip"), 1, None),
    Function("concat_op", _concat("emit_null"), 2, None),
    Function("concat_ws", _concat_ws, 2, None),
    Function("trim", _trim("trim", pc.utf8_trim, pc.utf8_trim_whitespace), 1, 2, "unary"),
    Function("ltrim", _trim("ltrim", pc.utf8_ltrim, pc.utf8_ltrim_whitespace), 1, 2, "unary"),
    Function("rtrim", _trim("rtrim", pc.utf8_rtrim, pc.utf8_rtrim_whitespace), 1, 2, "unary"),
    Function("replace", _replace, 3, 3, "unary"),
    Function("split_part", _split_part, 3, 3, "unary"),
    Function("regexp_replace", _regexp_replace, 3, 4, "unary"),
)
