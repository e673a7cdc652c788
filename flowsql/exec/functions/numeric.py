"""Math kernels: EXP, LN, LOG, LOG10, LOG2, SQRT, CBRT, POWER, SIGN, the
trigonometric functions, DEGREES, RADIANS, PI and TRUNC.

Everything but SIGN and TRUNC computes in DOUBLE (integers and decimals are
converted first) and follows IEEE 754 like DuckDB: a domain error is NaN, not
an error or NULL (``LN(-1)``, ``SQRT(-1)``, ``ASIN(2)`` are NaN), a pole is an
infinity (``LN(0) = -inf``), overflow is an infinity (``EXP(1000) = inf``).
NULL in, NULL out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.exec.functions.base import (
    Datum,
    Function,
    constant,
    decode,
    fail,
    is_numeric_type,
    is_scalar,
)

_DOUBLE = pa.float64()


def double(name: str, value: Datum) -> Datum:
    """A numeric operand as DOUBLE; an untyped NULL becomes a DOUBLE NULL."""
    value = decode(value)
    t = value.type
    if pa.types.is_float64(t):
        return value
    if pa.types.is_null(t) or is_numeric_type(t):
        return value.cast(_DOUBLE)
    raise fail(name, [value], "argument must be numeric")


def _unary(name: str, op: Callable[[Datum], Datum]) -> Callable[[list[Datum]], Datum]:
    return lambda args: op(double(name, args[0]))


def _binary(name: str, op: Callable[[Datum, Datum], Datum]) -> Callable[[list[Datum]], Datum]:
    return lambda args: op(double(name, args[0]), double(name, args[1]))


def _numpy_unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Datum], Datum]:
    """An element-wise numpy ufunc over a DOUBLE datum, NULLs kept."""

    def run(value: Datum) -> Datum:
        if is_scalar(value):
            py = value.as_py()
            return (
                value
                if py is None
                else pa.scalar(float(fn(np.array([py], np.float64))[0]), _DOUBLE)
            )
        data = value.to_numpy(zero_copy_only=False)
        mask = value.is_null().to_numpy(zero_copy_only=False) if value.null_count else None
        return pa.array(fn(data), _DOUBLE, mask=mask)

    return run


def _log(args: list[Datum]) -> Datum:
    """LOG(x) is the base-10 logarithm (DuckDB, PostgreSQL); LOG(b, x) is
    ``ln(x) / ln(b)``."""
    if len(args) == 1:
        return pc.log10(double("log", args[0]))
    base, value = double("log", args[0]), double("log", args[1])
    return pc.divide(pc.ln(value), pc.ln(base))


def _degrees(value: Datum) -> Datum:
    return pc.multiply(value, pa.scalar(180.0 / math.pi))


def _radians(value: Datum) -> Datum:
    return pc.multiply(value, pa.scalar(math.pi / 180.0))


def _pi(args: list[Datum]) -> Datum:
    return pa.scalar(math.pi, _DOUBLE)


_ONE = pa.scalar(1, pa.int64())
_MINUS_ONE = pa.scalar(-1, pa.int64())
_ZERO = pa.scalar(0, pa.int64())


def _sign(args: list[Datum]) -> Datum:
    """-1, 0 or 1 as BIGINT; NaN and -0.0 give 0 (as in DuckDB)."""
    value = double("sign", args[0])
    positive = pc.greater(value, pa.scalar(0.0))
    negative = pc.less(value, pa.scalar(0.0))
    return pc.if_else(positive, _ONE, pc.if_else(negative, _MINUS_ONE, _ZERO))


def _trunc(args: list[Datum]) -> Datum:
    """TRUNC(x [, n]): toward zero at ``n`` decimal digits (default 0, may be
    negative). Integers stay integers, decimals stay exact (DECIMAL(p, 0)
    without ``n``), doubles stay doubles."""
    value = decode(args[0])
    digits = constant(args[1], "trunc", "the number of digits") if len(args) > 1 else 0
    t = value.type
    if pa.types.is_null(t) or digits is None:
        return value
    if not isinstance(digits, int) or isinstance(digits, bool):
        raise fail("trunc", args, "the number of digits must be an integer")
    if pa.types.is_integer(t):
        return value if digits >= 0 else pc.round(value, digits, round_mode="towards_zero")
    if pa.types.is_decimal(t):
        truncated = pc.round(value, digits, round_mode="towards_zero")
        if len(args) > 1:
            return truncated
        return truncated.cast(pa.decimal128(max(t.precision - t.scale, 1), 0))
    if not pa.types.is_floating(t):
        raise fail("trunc", args, "argument must be numeric")
    value = double("trunc", value)
    if digits == 0:
        return pc.trunc(value)
    return _numpy_unary(lambda x: _trunc_double(x, digits))(value)


def _trunc_double(x: np.ndarray, digits: int) -> np.ndarray:
    """DuckDB's rule: scale by 10^n, truncate, scale back; a result that
    overflows to an infinity or NaN gives the input back."""
    with np.errstate(all="ignore"):
        if digits > 0:
            modifier = 10.0**digits
            out = np.trunc(x * modifier) / modifier
        else:
            modifier = 10.0 ** (-digits)
            out = np.trunc(x / modifier) * modifier
    return np.where(np.isfinite(out), out, x)


FUNCTIONS = (
    Function("exp", _unary("exp", pc.exp), 1, 1, "unary"),
    Function("ln", _unary("ln", pc.ln), 1, 1, "unary"),
    Function("log", _log, 1, 2),
    Function("log10", _unary("log10", pc.log10), 1, 1, "unary"),
    Function("log2", _unary("log2", pc.log2), 1, 1, "unary"),
    Function("sqrt", _unary("sqrt", pc.sqrt), 1, 1, "unary"),
    Function("cbrt", _unary("cbrt", _numpy_unary(np.cbrt)), 1, 1, "unary"),
    Function("power", _binary("power", pc.power), 2, 2),
    Function("sign", _sign, 1, 1, "unary"),
    Function("sin", _unary("sin", pc.sin), 1, 1, "unary"),
    Function("cos", _unary("cos", pc.cos), 1, 1, "unary"),
    Function("tan", _unary("tan", pc.tan), 1, 1, "unary"),
    Function("asin", _unary("asin", pc.asin), 1, 1, "unary"),
    Function("acos", _unary("acos", pc.acos), 1, 1, "unary"),
    Function("atan", _unary("atan", pc.atan), 1, 1, "unary"),
    Function("atan2", _binary("atan2", pc.atan2), 2, 2),
    Function("degrees", _unary("degrees", _degrees), 1, 1, "unary"),
    Function("radians", _unary("radians", _radians), 1, 1, "unary"),
    Function("pi", _pi, 0, 0, "raw"),
    Function("trunc", _trunc, 1, 2, "unary"),
)
