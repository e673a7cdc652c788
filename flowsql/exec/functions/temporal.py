"""Time kernels: EXTRACT, DATE_TRUNC, TO_TIMESTAMP, FROM_UNIXTIME.

Event times in flowsql are int64 epoch milliseconds (``_timestamp``,
``_window_start``...), so every time function accepts an integer column as
epoch ms as well as an Arrow timestamp, a date or an ISO-8601 string.
EXTRACT returns int64 for every unit (SECOND is the whole second of the
minute, MILLISECOND the millisecond of the second 0-999, EPOCH whole seconds
since 1970, DOW 0 = Sunday, WEEK the ISO week). DATE_TRUNC returns the kind of
value it was given: epoch ms in, epoch ms out; timestamp in, timestamp out.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from flowsql.exec.functions.base import Datum, Function, constant, decode, fail, is_string_type
from flowsql.exec.functions.coerce import TS_MS, parse_timestamps

MS_PER_SECOND = 1000

EXTRACTORS: dict[str, Callable[[Datum], Datum]] = {
    "year": pc.year,
    "quarter": pc.quarter,
    "month": pc.month,
    "week": pc.iso_week,
    "day": pc.day,
    "hour": pc.hour,
    "minute": pc.minute,
    "second": pc.second,
    "millisecond": pc.millisecond,
    "dow": lambda t: pc.day_of_week(t, count_from_zero=True, week_start=7),
    "doy": pc.day_of_year,
}

TRUNC_UNITS = ("millisecond", "second", "minute", "hour", "day", "week", "month", "quarter", "year")

_ALIASES = {
    "years": "year",
    "quarters": "quarter",
    "months": "month",
    "weeks": "week",
    "isoweek": "week",
    "days": "day",
    "dayofmonth": "day",
    "hours": "hour",
    "minutes": "minute",
    "seconds": "second",
    "milliseconds": "millisecond",
    "ms": "millisecond",
    "dayofweek": "dow",
    "day_of_week": "dow",
    "dayofyear": "doy",
    "day_of_year": "doy",
}


def _unit(name: str, value: Datum, allowed: tuple[str, ...]) -> str:
    raw = constant(value, name, "the unit")
    unit = str(raw).strip().lower()
    unit = _ALIASES.get(unit, unit)
    if unit not in allowed:
        raise fail(name, [value], f"unknown unit {raw!r} (allowed: {', '.join(allowed)})")
    return unit


def as_time(name: str, value: Datum) -> Datum:
    """A time operand as an Arrow timestamp (or date): integers are epoch ms,
    strings are parsed as ISO-8601."""
    value = decode(value)
    t = value.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return value
    if pa.types.is_integer(t) or pa.types.is_null(t):
        return value.cast(pa.int64()).cast(TS_MS)
    if is_string_type(t):
        return parse_timestamps(value)
    raise fail(name, [value], "argument must be epoch-ms integer, timestamp, date or string")


def _floor_div(value: Datum, divisor: int) -> Datum:
    """Integer division rounding toward negative infinity."""
    return pc.divide(pc.subtract(value, pc.modulo(value, divisor)), divisor)


def _epoch_seconds(time: Datum) -> Datum:
    t = time.type
    if pa.types.is_date(t):
        time = time.cast(TS_MS)
        t = time.type
    millis = time.cast(pa.timestamp("ms", t.tz)).cast(pa.int64())
    return _floor_div(millis, MS_PER_SECOND)


def _extract(args: list[Datum]) -> Datum:
    unit = _unit("extract", args[0], (*EXTRACTORS, "epoch"))
    time = as_time("extract", args[1])
    if unit == "epoch":
        return _epoch_seconds(time)
    if pa.types.is_date(time.type) and unit in ("hour", "minute", "second", "millisecond"):
        time = time.cast(TS_MS)
    return EXTRACTORS[unit](time).cast(pa.int64())


def _date_trunc(args: list[Datum]) -> Datum:
    unit = _unit("date_trunc", args[0], TRUNC_UNITS)
    value = decode(args[1])
    time = as_time("date_trunc", value)
    if pa.types.is_date(time.type) and unit in TRUNC_UNITS[:4]:
        return time
    floored = pc.floor_temporal(time, unit=unit, week_starts_monday=True)
    if pa.types.is_integer(value.type):
        return floored.cast(pa.int64())
    return floored


def _to_timestamp(args: list[Datum]) -> Datum:
    value = decode(args[0])
    t = value.type
    if pa.types.is_floating(t):
        return pc.floor(value).cast(pa.int64()).cast(TS_MS)
    time = as_time("to_timestamp", value)
    if pa.types.is_timestamp(time.type):
        return time.cast(pa.timestamp("ms", time.type.tz))
    return time.cast(TS_MS)


def _from_unixtime(args: list[Datum]) -> Datum:
    value = decode(args[0])
    t = value.type
    if pa.types.is_integer(t) or pa.types.is_null(t):
        millis = pc.multiply_checked(value.cast(pa.int64()), MS_PER_SECOND)
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        scaled = pc.multiply(value.cast(pa.float64()), float(MS_PER_SECOND))
        millis = pc.round(scaled, 0, round_mode="half_towards_infinity").cast(pa.int64())
    else:
        raise fail("from_unixtime", [value], "argument must be numeric seconds since 1970")
    return millis.cast(TS_MS)


FUNCTIONS = (
    Function("extract", _extract, 2, 2),
    Function("date_trunc", _date_trunc, 2, 2),
    Function("to_timestamp", _to_timestamp, 1, 1, "unary"),
    Function("from_unixtime", _from_unixtime, 1, 1, "unary"),
)
