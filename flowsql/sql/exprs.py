"""Translate sqlglot scalar expressions into :mod:`flowsql.plan.expr` values.

A :class:`Scope` tells the translator what a query position allows:
aggregates (``on_agg``), OVER calls (``on_window``), and how to resolve
columns and whole sub-expressions (GROUP BY keys, window columns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from flowsql.errors import PlanError, UnsupportedError, did_you_mean
from flowsql.plan.expr import Call, Case, Cast, Col, Expr, Lit, Pos
from flowsql.sql.diagnostics import position

Hook = Callable[[exp.Expr], Expr | None]

_BINARY: dict[type[exp.Expr], str] = {
    exp.Add: "add",
    exp.Sub: "sub",
    exp.Mul: "mul",
    exp.Div: "div",
    exp.IntDiv: "div",
    exp.Mod: "mod",
    exp.EQ: "eq",
    exp.NEQ: "ne",
    exp.LT: "lt",
    exp.LTE: "le",
    exp.GT: "gt",
    exp.GTE: "ge",
    exp.And: "and",
    exp.Or: "or",
    exp.DPipe: "concat_op",
}

#: sqlglot function classes whose args are (this, *expressions) in order.
_SIMPLE_FUNCS: dict[type[exp.Expr], str] = {
    exp.Abs: "abs",
    exp.Floor: "floor",
    exp.Ceil: "ceil",
    exp.Upper: "upper",
    exp.Lower: "lower",
    exp.Length: "length",
    exp.Coalesce: "coalesce",
    exp.Exp: "exp",
    exp.Ln: "ln",
    exp.Sqrt: "sqrt",
    exp.Cbrt: "cbrt",
    exp.Sign: "sign",
    exp.Sin: "sin",
    exp.Cos: "cos",
    exp.Tan: "tan",
    exp.Asin: "asin",
    exp.Acos: "acos",
    exp.Atan: "atan",
    exp.Degrees: "degrees",
    exp.Radians: "radians",
    exp.Pi: "pi",
}

#: Functions sqlglot leaves anonymous, by upper-case name.
_ANONYMOUS: dict[str, str] = {
    "TO_TIMESTAMP": "to_timestamp",
    "FROM_UNIXTIME": "from_unixtime",
    "JSON_VALUE": "json_value",
    "JSON_EXTRACT": "json_extract",
    "REGEXP_REPLACE": "regexp_replace",
    "LTRIM": "ltrim",
    "RTRIM": "rtrim",
    "CONCAT": "concat",
    "SPLIT_PART": "split_part",
    "REPLACE": "replace",
    "LOG10": "log10",
    "LOG2": "log2",
}

#: SQL spellings of every supported function, for "did you mean" hints.
KNOWN_FUNCTIONS: tuple[str, ...] = tuple(
    [
        "ABS",
        "ROUND",
        "TRUNC",
        "TRUNCATE",
        "EXP",
        "LN",
        "LOG",
        "LOG10",
        "LOG2",
        "SQRT",
        "CBRT",
        "POWER",
        "POW",
        "SIGN",
        "SIN",
        "COS",
        "TAN",
        "ASIN",
        "ACOS",
        "ATAN",
        "ATAN2",
        "DEGREES",
        "RADIANS",
        "PI",
        "INITCAP",
        "CONCAT_WS",
        "FLOOR",
        "CEIL",
        "CEILING",
        "UPPER",
        "LOWER",
        "LENGTH",
        "SUBSTRING",
        "SUBSTR",
        "CONCAT",
        "TRIM",
        "LTRIM",
        "RTRIM",
        "REPLACE",
        "SPLIT_PART",
        "REGEXP_REPLACE",
        "EXTRACT",
        "DATE_TRUNC",
        "TO_TIMESTAMP",
        "FROM_UNIXTIME",
        "JSON_VALUE",
        "JSON_EXTRACT",
        "COALESCE",
        "NULLIF",
        "CAST",
        "COUNT",
        "SUM",
        "AVG",
        "MIN",
        "MAX",
        "STDDEV",
        "STDDEV_SAMP",
        "STDDEV_POP",
        "VARIANCE",
        "VAR_SAMP",
        "VAR_POP",
        "FIRST",
        "LAST",
        "APPROX_COUNT_DISTINCT",
        "LAG",
        "LEAD",
        "ROW_NUMBER",
        "RANK",
        "DENSE_RANK",
    ]
)

#: The delimiter argument sqlglot fills in for a one-argument INITCAP.
_INITCAP_DEFAULT = sqlglot.parse_one("INITCAP(x)").expression

_INT_TYPES = {"BIGINT", "INT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINT"}
_FLOAT_TYPES = {"DOUBLE", "FLOAT", "REAL", "DOUBLE_PRECISION"}
_STRING_TYPES = {"VARCHAR", "TEXT", "CHAR", "NVARCHAR", "NCHAR", "STRING"}
_TIMESTAMP_TYPES = {"TIMESTAMP", "DATETIME", "TIMESTAMPTZ", "TIMESTAMP_MS", "TIMESTAMPLTZ"}
DEFAULT_DECIMAL = (18, 3)


@dataclass
class Scope:
    """What the translator may meet at one place in a query.

    Attributes:
        sql: the file text (positions are offsets into it).
        on_agg: called for an aggregate call; None = aggregates not allowed here.
        on_window: called for an OVER call; None = not allowed here.
        on_column: resolves a column reference; None = ``Col(name)``.
        substitute: returns a replacement for a whole sub-expression (e.g. a
            GROUP BY key expression) or None.
        where: the clause name used in messages ("WHERE", "GROUP BY" ...).
    """

    sql: str
    on_agg: Hook | None = None
    on_window: Hook | None = None
    on_column: Callable[[exp.Column, Pos], Expr] | None = None
    substitute: Hook | None = None
    where: str = "SELECT"


def pos_of(sql: str, node: exp.Expr) -> Pos:
    """Position of the leftmost token of ``node`` that sqlglot recorded."""
    starts = [int(sub.meta["start"]) for sub in node.walk() if sub.meta and "start" in sub.meta]
    return position(sql, min(starts)) if starts else Pos()


def is_aggregate(node: exp.Expr) -> bool:
    """True for an aggregate function call (not one under OVER)."""
    return isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Window)


def translate(node: exp.Expr, scope: Scope) -> Expr:
    """The plan expression for ``node``.

    Raises:
        PlanError: aggregates/OVER where not allowed, unknown functions...
    """
    if scope.substitute is not None:
        hit = scope.substitute(node)
        if hit is not None:
            return hit
    return _Translator(scope).visit(node)


class _Translator:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def pos(self, node: exp.Expr) -> Pos:
        return pos_of(self.scope.sql, node)

    def sub(self, node: exp.Expr) -> Expr:
        return translate(node, self.scope)

    def error(
        self, cls: type[PlanError], message: str, node: exp.Expr, hint: str = ""
    ) -> PlanError:
        pos = self.pos(node)
        return cls(message, line=pos.line, column=pos.column, hint=hint)

    def visit(self, node: exp.Expr) -> Expr:
        if isinstance(node, exp.Window):
            return self._window(node)
        if is_aggregate(node):
            return self._aggregate(node)
        kind = type(node)
        if kind in _BINARY:
            return Call(
                _BINARY[kind], (self.sub(node.this), self.sub(node.expression)), self.pos(node)
            )
        if kind in _SIMPLE_FUNCS:
            args = [node.this, *node.expressions]
            return Call(_SIMPLE_FUNCS[kind], tuple(self.sub(a) for a in args if a), self.pos(node))
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise self.error(UnsupportedError, f"unsupported SQL construct: {node.sql()}", node)
        return handler(self, node)

    # -- leaves ---------------------------------------------------------------

    def column(self, node: exp.Column) -> Expr:
        if isinstance(node.this, exp.Star):
            raise self.error(PlanError, "'*' is only allowed as SELECT * or COUNT(*)", node)
        pos = self.pos(node)
        if self.scope.on_column is not None:
            return self.scope.on_column(node, pos)
        return Col(node.name, pos)

    def literal(self, node: exp.Literal) -> Expr:
        pos = self.pos(node)
        if node.is_string:
            return Lit(node.this, pa.string(), pos)
        return number_literal(node.this, pos)

    def boolean(self, node: exp.Boolean) -> Expr:
        return Lit(bool(node.this), pa.bool_(), self.pos(node))

    def null(self, node: exp.Null) -> Expr:
        return Lit(None, pa.null(), self.pos(node))

    def paren(self, node: exp.Paren) -> Expr:
        return self.sub(node.this)

    def neg(self, node: exp.Neg) -> Expr:
        inner = self.sub(node.this)
        if isinstance(inner, Lit) and inner.value is not None and not isinstance(inner.value, str):
            return Lit(-inner.value, inner.type, self.pos(node))
        return Call("neg", (inner,), self.pos(node))

    # -- logic ----------------------------------------------------------------

    def not_(self, node: exp.Not) -> Expr:
        inner = node.this
        if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
            return Call("is_not_null", (self.sub(inner.this),), self.pos(node))
        if isinstance(inner, exp.In):
            return Call("not_in", self._in_args(inner), self.pos(node))
        if isinstance(inner, exp.Like) and not inner.args.get("negate"):
            return Call("not_like", self._binary_args(inner), self.pos(node))
        return Call("not", (self.sub(inner),), self.pos(node))

    def is_(self, node: exp.Is) -> Expr:
        if isinstance(node.expression, exp.Null):
            return Call("is_null", (self.sub(node.this),), self.pos(node))
        if not isinstance(node.expression, exp.Boolean):
            raise self.error(UnsupportedError, f"unsupported IS test: {node.sql()}", node)
        # a IS TRUE is never NULL: coalesce(a = TRUE, FALSE)
        pos = self.pos(node)
        test = Call("eq", (self.sub(node.this), self.sub(node.expression)), pos)
        return Call("coalesce", (test, Lit(False, pa.bool_(), pos)), pos)

    def in_(self, node: exp.In) -> Expr:
        return Call("in", self._in_args(node), self.pos(node))

    def _in_args(self, node: exp.In) -> tuple[Expr, ...]:
        if node.args.get("query") or not node.expressions:
            raise self.error(UnsupportedError, "IN (subquery) is not supported", node)
        return (self.sub(node.this), *(self.sub(v) for v in node.expressions))

    def _binary_args(self, node: exp.Expr) -> tuple[Expr, ...]:
        return (self.sub(node.this), self.sub(node.expression))

    def between(self, node: exp.Between) -> Expr:
        args = (self.sub(node.this), self.sub(node.args["low"]), self.sub(node.args["high"]))
        return Call("between", args, self.pos(node))

    def like(self, node: exp.Like) -> Expr:
        fn = "not_like" if node.args.get("negate") else "like"
        if node.args.get("escape"):
            raise self.error(UnsupportedError, "LIKE ... ESCAPE is not supported", node)
        return Call(fn, self._binary_args(node), self.pos(node))

    def case(self, node: exp.Case) -> Expr:
        operand = self.sub(node.this) if node.this else None
        whens: list[tuple[Expr, Expr]] = []
        for branch in node.args.get("ifs") or []:
            cond = self.sub(branch.this)
            if operand is not None:
                cond = Call("eq", (operand, cond), cond.pos)
            whens.append((cond, self.sub(branch.args["true"])))
        default = node.args.get("default")
        return Case(tuple(whens), self.sub(default) if default else None, self.pos(node))

    def if_(self, node: exp.If) -> Expr:
        false = node.args.get("false")
        whens = ((self.sub(node.this), self.sub(node.args["true"])),)
        return Case(whens, self.sub(false) if false else None, self.pos(node))

    def cast(self, node: exp.Cast) -> Expr:
        safe = isinstance(node, exp.TryCast)
        return Cast(self.sub(node.this), self.arrow_type(node.to), self.pos(node), safe=safe)

    def arrow_type(self, dt: exp.DataType) -> pa.DataType:
        name = dt.this.name if hasattr(dt.this, "name") else str(dt.this)
        if name in _INT_TYPES:
            return pa.int64()
        if name in _FLOAT_TYPES:
            return pa.float64()
        if name in _STRING_TYPES:
            return pa.string()
        if name == "BOOLEAN":
            return pa.bool_()
        if name == "DATE":
            return pa.date32()
        if name in _TIMESTAMP_TYPES:
            return pa.timestamp("ms")
        if name == "DECIMAL":
            return self._decimal_type(dt)
        raise self.error(UnsupportedError, f"unsupported type {dt.sql()}", dt)

    def _decimal_type(self, dt: exp.DataType) -> pa.DataType:
        params = [int(p.this.this) for p in dt.expressions]
        precision, scale = (params + list(DEFAULT_DECIMAL[len(params) :]))[:2]
        if len(params) == 1:
            scale = 0
        if not 0 < precision <= 38 or not 0 <= scale <= precision:
            raise self.error(PlanError, f"invalid DECIMAL({precision}, {scale})", dt)
        return pa.decimal128(precision, scale)

    # -- functions ------------------------------------------------------------

    def call(self, fn: str, node: exp.Expr, *args: Any) -> Expr:
        return Call(fn, tuple(self.sub(a) for a in args if a is not None), self.pos(node))

    def round_(self, node: exp.Round) -> Expr:
        return self.call("round", node, node.this, node.args.get("decimals"))

    def trunc(self, node: exp.Expr) -> Expr:
        return self.call("trunc", node, node.this, node.args.get("decimals"))

    def log(self, node: exp.Log) -> Expr:
        # LOG(x) is base 10 (DuckDB, PostgreSQL); LOG(b, x); LOG10/LOG2 parse as LOG(10|2, x).
        if node.expression is None:
            return self.call("log", node, node.this)
        base = node.this
        if isinstance(base, exp.Literal) and not base.is_string and base.this in ("10", "2"):
            return self.call("log10" if base.this == "10" else "log2", node, node.expression)
        return self.call("log", node, base, node.expression)

    def initcap(self, node: exp.Expr) -> Expr:
        delimiters = node.expression
        if delimiters is not None and delimiters != _INITCAP_DEFAULT:
            raise self.error(UnsupportedError, "INITCAP(s, delimiters) is not supported", node)
        return self.call("initcap", node, node.this)

    def power(self, node: exp.Pow) -> Expr:
        return self.call("power", node, node.this, node.expression)

    def atan2(self, node: exp.Atan2) -> Expr:
        return self.call("atan2", node, node.this, node.expression)

    def concat_ws(self, node: exp.Expr) -> Expr:
        return self.call("concat_ws", node, *node.expressions)

    def nullif(self, node: exp.Nullif) -> Expr:
        return self.call("nullif", node, node.this, node.expression)

    def substring(self, node: exp.Substring) -> Expr:
        return self.call(
            "substring", node, node.this, node.args.get("start"), node.args.get("length")
        )

    def concat(self, node: exp.Concat) -> Expr:
        return self.call("concat", node, *node.expressions)

    def trim(self, node: exp.Trim) -> Expr:
        # TRIM([BOTH|LEADING|TRAILING] [chars] FROM s), TRIM(s, chars), LTRIM/RTRIM(s[, chars])
        side = str(node.args.get("position") or "").upper()
        fn = {"LEADING": "ltrim", "TRAILING": "rtrim"}.get(side, "trim")
        return self.call(fn, node, node.this, node.expression)

    def replace(self, node: exp.Expr) -> Expr:
        return self.call("replace", node, node.this, node.expression, node.args.get("replacement"))

    def split_part(self, node: exp.Expr) -> Expr:
        args = (node.this, node.args.get("delimiter"), node.args.get("part_index"))
        return self.call("split_part", node, *args)

    def regexp_replace(self, node: exp.Expr) -> Expr:
        flags = node.args.get("modifiers") or node.args.get("position")
        args = (node.this, node.expression, node.args.get("replacement"), flags)
        return self.call("regexp_replace", node, *args)

    def extract(self, node: exp.Extract) -> Expr:
        unit = Lit(node.this.name.upper(), pa.string(), self.pos(node.this))
        return Call("extract", (unit, self.sub(node.expression)), self.pos(node))

    def date_trunc(self, node: exp.Expr) -> Expr:
        unit_node = node.args.get("unit")
        unit_name = unit_node.name if unit_node is not None else ""
        unit = Lit(unit_name.upper(), pa.string(), self.pos(node))
        return Call("date_trunc", (unit, self.sub(node.this)), self.pos(node))

    def anonymous(self, node: exp.Anonymous) -> Expr:
        name = str(node.this).upper()
        fn = _ANONYMOUS.get(name)
        if fn is None:
            raise self.error(
                PlanError,
                f"unknown function {name}",
                node,
                hint=did_you_mean(name, KNOWN_FUNCTIONS),
            )
        return self.call(fn, node, *node.expressions)

    # -- aggregates and OVER ----------------------------------------------------

    def _aggregate(self, node: exp.Expr) -> Expr:
        if self.scope.on_agg is None:
            raise self.error(
                PlanError,
                f"aggregate {node.sql()} is not allowed in {self.scope.where}",
                node,
                hint="aggregates belong in SELECT or HAVING of a GROUP BY query",
            )
        out = self.scope.on_agg(node)
        assert out is not None
        return out

    def _window(self, node: exp.Window) -> Expr:
        if self.scope.on_window is None:
            raise self.error(
                PlanError,
                f"window function {node.this.sql()} is not allowed in {self.scope.where}",
                node,
            )
        out = self.scope.on_window(node)
        assert out is not None
        return out


def number_literal(text: str, pos: Pos = Pos()) -> Lit:
    """Integers -> int64; with a decimal point -> exact decimal128; exponent -> float64."""
    if "e" in text.lower():
        return Lit(float(text), pa.float64(), pos)
    if "." not in text:
        return Lit(int(text), pa.int64(), pos)
    value = Decimal(text)
    _, digits, exponent = value.as_tuple()
    scale = max(0, -int(exponent))
    precision = max(len(digits), scale, 1)
    return Lit(value, pa.decimal128(precision, scale), pos)


_HANDLERS: dict[type[exp.Expr], Callable[[_Translator, Any], Expr]] = {
    exp.Column: _Translator.column,
    exp.Literal: _Translator.literal,
    exp.Boolean: _Translator.boolean,
    exp.Null: _Translator.null,
    exp.Paren: _Translator.paren,
    exp.Neg: _Translator.neg,
    exp.Not: _Translator.not_,
    exp.Is: _Translator.is_,
    exp.In: _Translator.in_,
    exp.Between: _Translator.between,
    exp.Like: _Translator.like,
    exp.Case: _Translator.case,
    exp.If: _Translator.if_,
    exp.Cast: _Translator.cast,
    exp.TryCast: _Translator.cast,
    exp.Round: _Translator.round_,
    exp.Nullif: _Translator.nullif,
    exp.Trunc: _Translator.trunc,
    exp.Log: _Translator.log,
    exp.Initcap: _Translator.initcap,
    exp.ConcatWs: _Translator.concat_ws,
    exp.Pow: _Translator.power,
    exp.Atan2: _Translator.atan2,
    exp.Substring: _Translator.substring,
    exp.Concat: _Translator.concat,
    exp.Trim: _Translator.trim,
    exp.Replace: _Translator.replace,
    exp.SplitPart: _Translator.split_part,
    exp.RegexpReplace: _Translator.regexp_replace,
    exp.Extract: _Translator.extract,
    exp.DateTrunc: _Translator.date_trunc,
    exp.TimestampTrunc: _Translator.date_trunc,
    exp.Anonymous: _Translator.anonymous,
}
