"""Comparison, boolean and conditional kernels with SQL three-valued logic:
= <> < <= > >=, AND/OR (Kleene), NOT, IS [NOT] NULL, IN, BETWEEN, LIKE,
COALESCE, NULLIF.

A comparison with NULL is NULL; ``x IN (1, NULL)`` is TRUE when x = 1 and
NULL otherwise; NOT NULL is NULL. A dictionary-encoded column compared with a
constant is compared over its dictionary only.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from flowsql.exec.functions.base import (
    Datum,
    Function,
    by_dictionary,
    decode,
    fail,
    is_numeric_type,
    is_scalar,
    is_string_type,
    map_dictionary,
    null_of,
    per_constant,
)
from flowsql.exec.functions.coerce import align, numeric_common, sql_cast, unify

Compare = Callable[[Datum, Datum], Datum]
NULL_BOOL = pa.scalar(None, pa.bool_())


def _nulls(template: Datum, t: pa.DataType) -> Datum:
    return null_of(t) if is_scalar(template) else pa.nulls(len(template), t)


def _compare_plain(name: str, op: Compare, a: Datum, b: Datum) -> Datum:
    a, b = align(a, b, name)
    if pa.types.is_null(a.type) or pa.types.is_null(b.type):
        return _nulls(b if is_scalar(a) else a, pa.bool_())
    return op(a, b)


def compare(name: str, op: Compare, a: Datum, b: Datum) -> Datum:
    """``op(a, b)`` after SQL coercion; a dictionary column against a constant
    is evaluated over the dictionary."""
    if by_dictionary(a) and is_scalar(b):
        return map_dictionary(a, lambda values: _compare_plain(name, op, values, b))
    if is_scalar(a) and by_dictionary(b):
        return map_dictionary(b, lambda values: _compare_plain(name, op, a, values))
    return _compare_plain(name, op, decode(a), decode(b))


def _comparison(name: str, op: Compare) -> Callable[[list[Datum]], Datum]:
    return lambda args: compare(name, op, args[0], args[1])


def boolean(name: str, value: Datum) -> Datum:
    """``value`` as a boolean operand (an untyped NULL becomes a boolean NULL)."""
    value = decode(value)
    if pa.types.is_boolean(value.type):
        return value
    if pa.types.is_null(value.type):
        return value.cast(pa.bool_())
    raise fail(name, [value], "argument must be boolean")


def _and(args: list[Datum]) -> Datum:
    return pc.and_kleene(boolean("and", args[0]), boolean("and", args[1]))


def _or(args: list[Datum]) -> Datum:
    return pc.or_kleene(boolean("or", args[0]), boolean("or", args[1]))


def _not(args: list[Datum]) -> Datum:
    return pc.invert(boolean("not", args[0]))


def _has_null_values(value: Datum) -> bool:
    return isinstance(value, pa.DictionaryArray) and value.dictionary.null_count > 0


def _is_null(args: list[Datum]) -> Datum:
    value = decode(args[0]) if _has_null_values(args[0]) else args[0]
    if is_scalar(value):
        return pa.scalar(not value.is_valid)
    return pc.is_null(value)


def _is_not_null(args: list[Datum]) -> Datum:
    return pc.invert(_is_null(args))


def _in(args: list[Datum]) -> Datum:
    subject, options = args[0], args[1:]
    if not all(is_scalar(o) for o in options):
        return _in_by_equality(subject, options)
    present = [o for o in options if o.is_valid]
    if pa.types.is_null(subject.type):
        return _nulls(subject, pa.bool_())
    subject, value_set = _value_set(subject, present)
    result = pc.is_in(subject, value_set=value_set)
    if not is_scalar(subject) and subject.null_count:
        result = pc.if_else(pc.is_valid(subject), result, NULL_BOOL)
    elif is_scalar(subject) and not subject.is_valid:
        return NULL_BOOL
    if len(present) < len(options):  # a NULL in the list: no match means unknown
        result = pc.or_kleene(result, NULL_BOOL)
    return result


def _value_set(subject: Datum, options: list[pa.Scalar]) -> tuple[Datum, pa.Array]:
    target = subject.type
    types = [o.type for o in options]
    if is_numeric_type(target) and all(is_numeric_type(t) for t in types):
        subject = sql_cast(subject, numeric_common([target, *types]))
    elif options:  # e.g. a timestamp column against epoch-ms integers
        subject = align(subject, options[0], "in")[0]
    values = [align(subject, o, "in")[1] for o in options]
    return subject, pa.array([v.as_py() for v in values], subject.type)


def _in_by_equality(subject: Datum, options: list[Datum]) -> Datum:
    result: Datum = pa.scalar(False)
    for option in options:
        result = pc.or_kleene(result, compare("in", pc.equal, subject, option))
    return result


def _not_in(args: list[Datum]) -> Datum:
    return pc.invert(_in(args))


def _between(args: list[Datum]) -> Datum:
    value, low, high = args
    return pc.and_kleene(
        compare("between", pc.greater_equal, value, low),
        compare("between", pc.less_equal, value, high),
    )


def _like(args: list[Datum]) -> Datum:
    value, pattern = args
    if pa.types.is_null(value.type) or pa.types.is_null(pattern.type):
        return _nulls(value if not is_scalar(value) else pattern, pa.bool_())
    if not is_string_type(value.type):
        value = sql_cast(value, pa.string())
    if is_scalar(pattern):
        return (
            pc.match_like(value, pattern.as_py()) if pattern.is_valid else _nulls(value, pa.bool_())
        )
    if is_scalar(value):
        value = pa.repeat(value, len(pattern))
    return per_constant(lambda v, p: pc.match_like(v, p[0]), value, [pattern], pa.bool_())


def _not_like(args: list[Datum]) -> Datum:
    return pc.invert(_like(args))


def _coalesce(args: list[Datum]) -> Datum:
    values = unify(args, "coalesce")
    if pa.types.is_null(values[0].type):
        return values[0]
    return pc.coalesce(*values)


def _nullif(args: list[Datum]) -> Datum:
    value, other = align(args[0], args[1], "nullif")
    if pa.types.is_null(value.type) or pa.types.is_null(other.type):
        return value
    equal = pc.fill_null(pc.equal(value, other), False)
    return pc.if_else(equal, null_of(value.type), value)


FUNCTIONS = (
    Function("eq", _comparison("eq", pc.equal), 2, 2, "raw"),
    Function("ne", _comparison("ne", pc.not_equal), 2, 2, "raw"),
    Function("lt", _comparison("lt", pc.less), 2, 2, "raw"),
    Function("le", _comparison("le", pc.less_equal), 2, 2, "raw"),
    Function("gt", _comparison("gt", pc.greater), 2, 2, "raw"),
    Function("ge", _comparison("ge", pc.greater_equal), 2, 2, "raw"),
    Function("and", _and, 2, 2),
    Function("or", _or, 2, 2),
    Function("not", _not, 1, 1),
    Function("is_null", _is_null, 1, 1, "raw"),
    Function("is_not_null", _is_not_null, 1, 1, "raw"),
    Function("in", _in, 2, None, "unary"),
    Function("not_in", _not_in, 2, None, "unary"),
    Function("between", _between, 3, 3, "unary"),
    Function("like", _like, 2, 2, "unary"),
    Function("not_like", _not_like, 2, 2, "unary"),
    Function("coalesce", _coalesce, 1, None),
    Function("nullif", _nullif, 2, 2),
)
