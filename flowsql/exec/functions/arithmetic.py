"""Arithmetic and math kernels: + - * / %, unary minus, ABS, ROUND, FLOOR, CEIL.

SQL semantics on top of Arrow's kernels:

- integer / integer truncates toward zero; division or modulo by zero is NULL;
- integer overflow raises instead of wrapping;
- DECIMAL arithmetic is exact. Arrow derives the result precision/scale
  (``p1+p2+1, s1+s2`` for ``*``); when that exceeds DECIMAL(38) the operation
  runs in decimal256 and the result is brought back to decimal128(38, s)
  with the exact scale, raising when the integer part does not fit;
- ROUND is half away from zero for floats and decimals.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from flowsql.exec.functions.base import Datum, Function, constant, fail, is_scalar, null_of
from flowsql.exec.functions.coerce import (
    HALF_AWAY,
    MAX_PRECISION,
    align,
    cast_constant,
    round_half_away,
)

Binary = Callable[[Datum, Datum], Datum]
_ZERO = pa.scalar(0)


def _null_result(a: Datum, b: Datum) -> Datum | None:
    """NULL of the known type when one side is an untyped NULL."""
    if pa.types.is_null(a.type) or pa.types.is_null(b.type):
        known = b.type if pa.types.is_null(a.type) else a.type
        return null_of(known) if is_scalar(a) and is_scalar(b) else _nulls_like(a, b, known)
    return None


def _nulls_like(a: Datum, b: Datum, t: pa.DataType) -> pa.Array:
    n = len(a) if not is_scalar(a) else len(b)
    return pa.nulls(n, t)


def decimal_safe(op: Binary, a: Datum, b: Datum) -> Datum:
    """``op(a, b)``, falling back to decimal256 when the exact decimal result
    needs more than 38 digits of precision."""
    try:
        return op(a, b)
    except pa.ArrowInvalid as exc:
        if "precision out of range" not in str(exc):
            raise
    wide = op(_to256(a), _to256(b))
    return fit_decimal128(wide)


def _to256(value: Datum) -> Datum:
    t = value.type
    return value.cast(pa.decimal256(t.precision, t.scale)) if pa.types.is_decimal(t) else value


def fit_decimal128(value: Datum) -> Datum:
    """A decimal256 result as decimal128. Exactness wins over range: the scale
    is kept (up to 38) and a value whose integer part then does not fit
    raises, instead of being rounded silently."""
    t = value.type
    if t.precision <= MAX_PRECISION:
        return value.cast(pa.decimal128(t.precision, t.scale))
    scale = min(t.scale, MAX_PRECISION)
    if scale < t.scale:
        value = pc.round(value, scale, round_mode=HALF_AWAY)
    try:
        return value.cast(pa.decimal128(MAX_PRECISION, scale))
    except pa.ArrowInvalid as exc:
        raise pa.ArrowInvalid(
            f"decimal overflow: the exact result does not fit DECIMAL(38, {scale}) ({exc})"
        ) from exc


def _binary(
    name: str, op: Binary, float_op: Binary | None = None
) -> Callable[[list[Datum]], Datum]:
    """A binary operator kernel; ``op`` checks integer overflow, ``float_op``
    (cheaper, unchecked) is used when the operands are floating point."""

    def kernel(args: list[Datum]) -> Datum:
        a, b = align(args[0], args[1], name)
        nulls = _null_result(a, b)
        if nulls is not None:
            return nulls
        if float_op is not None and pa.types.is_floating(a.type):
            return float_op(a, b)
        return decimal_safe(op, a, b)

    return kernel


def _null_if_zero(value: Datum) -> Datum:
    """Divisor with zeros replaced by NULL (x / 0 is NULL in flowsql)."""
    if is_scalar(value):
        return null_of(value.type) if value.is_valid and value.as_py() == 0 else value
    t = value.type
    zero = pc.equal(value, _ZERO if pa.types.is_decimal(t) else cast_constant(_ZERO, t))
    if not pc.any(zero).as_py():
        return value
    return pc.if_else(zero, null_of(value.type), value)


def _divide(a: Datum, b: Datum) -> Datum:
    return pc.divide_checked(a, _null_if_zero(b))


def _remainder(a: Datum, b: Datum) -> Datum:
    return pc.remainder_checked(a, _null_if_zero(b))


def _negate(args: list[Datum]) -> Datum:
    return pc.negate_checked(args[0])


def _abs(args: list[Datum]) -> Datum:
    return pc.abs_checked(args[0])


def _numeric(name: str, value: Datum) -> None:
    t = value.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        raise fail(name, [value], "argument must be numeric")


def _round(args: list[Datum]) -> Datum:
    value = args[0]
    digits = constant(args[1], "round", "the number of digits") if len(args) > 1 else 0
    if pa.types.is_null(value.type) or digits is None:
        return value
    _numeric("round", value)
    return round_half_away(value, int(digits))


def _floor_ceil(name: str, op: Callable[[Datum], Datum]) -> Callable[[list[Datum]], Datum]:
    def kernel(args: list[Datum]) -> Datum:
        value = args[0]
        if pa.types.is_null(value.type) or pa.types.is_integer(value.type):
            return value
        _numeric(name, value)
        if not pa.types.is_decimal(value.type):
            return op(value)
        t = value.type
        widened = value.cast(pa.decimal128(min(MAX_PRECISION, t.precision + 1), t.scale))
        precision = min(MAX_PRECISION, t.precision - t.scale + 1)
        return op(widened).cast(pa.decimal128(precision, 0))

    return kernel


FUNCTIONS = (
    Function("add", _binary("add", pc.add_checked, pc.add), 2, 2),
    Function("sub", _binary("sub", pc.subtract_checked, pc.subtract), 2, 2),
    Function("mul", _binary("mul", pc.multiply_checked, pc.multiply), 2, 2),
    Function("div", _binary("div", _divide), 2, 2),
    Function("mod", _binary("mod", _remainder), 2, 2),
    Function("neg", _negate, 1, 1, "unary"),
    Function("abs", _abs, 1, 1, "unary"),
    Function("round", _round, 1, 2, "unary"),
    Function("floor", _floor_ceil("floor", pc.floor), 1, 1, "unary"),
    Function("ceil", _floor_ceil("ceil", pc.ceil), 1, 1, "unary"),
)
