"""Scalar, aggregate and window-function expressions of the logical plan.

These are frozen values. The SQL front end (``flowsql.sql``) builds them from
the sqlglot AST; the executor (``flowsql.exec``) compiles them to vectorized
kernels over ``pyarrow.RecordBatch``.

Function names in :class:`Call` are lower-case canonical names; the full list
with their argument conventions is :data:`SCALAR_FUNCTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

#: Canonical scalar function names and their argument conventions.
#: ``Call(fn, args)``; literals that select behaviour (units, flags) are ``Lit``.
SCALAR_FUNCTIONS: dict[str, str] = {
    # arithmetic
    "add": "a + b",
    "sub": "a - b",
    "mul": "a * b",
    "div": "a / b (integer / integer truncates toward zero like SQL; decimals exact)",
    "mod": "a % b",
    "neg": "-a",
    # comparison / logic (SQL three-valued logic)
    "eq": "a = b",
    "ne": "a <> b",
    "lt": "a < b",
    "le": "a <= b",
    "gt": "a > b",
    "ge": "a >= b",
    "and": "a AND b",
    "or": "a OR b",
    "not": "NOT a",
    "is_null": "a IS NULL",
    "is_not_null": "a IS NOT NULL",
    "in": "a IN (v1, v2, ...): args = (a, v1, v2, ...)",
    "not_in": "a NOT IN (...)",
    "between": "a BETWEEN lo AND hi: args = (a, lo, hi)",
    "like": "a LIKE pattern: args = (a, pattern)",
    "not_like": "a NOT LIKE pattern",
    # conditional
    "coalesce": "COALESCE(a, b, ...)",
    "nullif": "NULLIF(a, b)",
    # math
    "abs": "ABS(a)",
    "round": "ROUND(a[, digits]) half away from zero",
    "floor": "FLOOR(a)",
    "ceil": "CEIL(a)",
    "trunc": "TRUNC(a[, digits]) toward zero",
    "exp": "EXP(x)",
    "ln": "LN(x)",
    "log": "LOG(x) base 10, LOG(b, x) base b",
    "log10": "LOG10(x)",
    "log2": "LOG2(x)",
    "sqrt": "SQRT(x)",
    "cbrt": "CBRT(x)",
    "power": "POWER(x, y), POW",
    "sign": "SIGN(x) -> -1, 0, 1 (BIGINT)",
    "sin": "SIN(x)",
    "cos": "COS(x)",
    "tan": "TAN(x)",
    "asin": "ASIN(x)",
    "acos": "ACOS(x)",
    "atan": "ATAN(x)",
    "atan2": "ATAN2(y, x)",
    "degrees": "DEGREES(x)",
    "radians": "RADIANS(x)",
    "pi": "PI()",
    # strings
    "upper": "UPPER(s)",
    "lower": "LOWER(s)",
    "initcap": "INITCAP(s): words are runs of letters and digits",
    "length": "LENGTH(s) in characters",
    "substring": "SUBSTRING(s, start[, length]) 1-based",
    "concat": "CONCAT(a, b, ...) and a || b (NULL-propagating for ||, skipping for CONCAT)",
    "concat_op": "a || b (NULL if any NULL)",
    "concat_ws": "CONCAT_WS(sep, a, b, ...) NULL args skipped; NULL sep -> NULL",
    "trim": "TRIM(s[, chars]) whitespace by default",
    "ltrim": "LTRIM(s)",
    "rtrim": "RTRIM(s)",
    "replace": "REPLACE(s, from, to)",
    "split_part": "SPLIT_PART(s, delim, n) 1-based; out of range -> ''",
    "regexp_replace": "REGEXP_REPLACE(s, pattern, repl[, flags]) first match; flag 'g' = all",
    # time (event times are epoch-ms int64 unless typed timestamp)
    "extract": "EXTRACT(unit FROM a): args = (Lit(unit), a); unit in YEAR..MILLISECOND, DOW, DOY, EPOCH",
    "date_trunc": "DATE_TRUNC(unit, a): args = (Lit(unit), a)",
    "to_timestamp": "TO_TIMESTAMP(x): epoch ms int / ISO string -> timestamp[ms]",
    "from_unixtime": "FROM_UNIXTIME(seconds) -> timestamp[ms]",
    # json
    "json_value": "JSON_VALUE(s, '$.a.b[0]') -> string scalar",
    "json_extract": "JSON_EXTRACT(s, '$.a') -> JSON text of the node",
}

#: Aggregate functions, canonical names.
AGGREGATE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "count_star",
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "stddev_samp",
        "stddev_pop",
        "var_samp",
        "var_pop",
        "first",
        "last",
        "approx_count_distinct",
    }
)

#: Window (OVER) functions, canonical names.
WINDOW_FUNCTIONS: frozenset[str] = frozenset(
    {
        "lag",
        "lead",
        "row_number",
        "rank",
        "dense_rank",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "count_star",
    }
)


@dataclass(frozen=True)
class Pos:
    """Where an expression started in the SQL text (1-based; 0 = unknown)."""

    line: int = 0
    column: int = 0


class Expr:
    """Base of all scalar expressions."""

    pos: Pos


@dataclass(frozen=True)
class Col(Expr):
    """A column reference, by its output name in the input batch (system columns too)."""

    name: str
    pos: Pos = field(default=Pos(), compare=False)


@dataclass(frozen=True)
class Lit(Expr):
    """A literal. ``type`` is the Arrow type (``pa.decimal128(p, s)`` for exact decimals,
    whose ``value`` is a ``decimal.Decimal``); ``value`` None means typed NULL."""

    value: Any
    type: pa.DataType
    pos: Pos = field(default=Pos(), compare=False)


@dataclass(frozen=True)
class Call(Expr):
    """A scalar function call by canonical name (see :data:`SCALAR_FUNCTIONS`)."""

    fn: str
    args: tuple[Expr, ...]
    pos: Pos = field(default=Pos(), compare=False)


@dataclass(frozen=True)
class Case(Expr):
    """``CASE WHEN c THEN v ... ELSE d END``; the simple form ``CASE x WHEN a`` is
    rewritten by the front end into ``eq`` conditions."""

    whens: tuple[tuple[Expr, Expr], ...]
    default: Expr | None = None
    pos: Pos = field(default=Pos(), compare=False)


@dataclass(frozen=True)
class Cast(Expr):
    """``CAST(expr AS type)``; ``to`` is an Arrow type. ``safe`` is ``TRY_CAST``:
    a value that does not convert becomes NULL instead of an error."""

    expr: Expr
    to: pa.DataType
    pos: Pos = field(default=Pos(), compare=False)
    safe: bool = False


@dataclass(frozen=True)
class AggCall:
    """An aggregate call in an :class:`~flowsql.plan.nodes.Aggregate` node.

    ``fn`` is one of :data:`AGGREGATE_FUNCTIONS`; ``count_star`` has no args.
    ``distinct`` is set for ``COUNT(DISTINCT x)``. FIRST/LAST pick by event time.
    """

    fn: str
    args: tuple[Expr, ...] = ()
    distinct: bool = False
    pos: Pos = field(default=Pos(), compare=False)


@dataclass(frozen=True)
class WinCall:
    """A window function evaluated over a ROWS frame in a
    :class:`~flowsql.plan.nodes.RowsWindow` node.

    ``preceding`` is the number of rows before the current row in the frame
    (``ROWS BETWEEN n PRECEDING AND CURRENT ROW``; ``ROWS WINDOW BUFFER n ROWS``
    gives n-1); ``None`` means UNBOUNDED PRECEDING. ``offset``/``default`` are
    for LAG/LEAD.
    """

    fn: str
    args: tuple[Expr, ...] = ()
    preceding: int | None = None
    offset: int = 1
    default: Expr | None = None
    pos: Pos = field(default=Pos(), compare=False)


def columns_of(expr: Expr) -> set[str]:
    """Names of the columns an expression reads."""
    if isinstance(expr, Col):
        return {expr.name}
    if isinstance(expr, Call):
        return set().union(*(columns_of(a) for a in expr.args)) if expr.args else set()
    if isinstance(expr, Case):
        out: set[str] = set()
        for cond, val in expr.whens:
            out |= columns_of(cond) | columns_of(val)
        if expr.default is not None:
            out |= columns_of(expr.default)
        return out
    if isinstance(expr, Cast):
        return columns_of(expr.expr)
    return set()
