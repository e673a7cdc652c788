"""Compile plan expressions into vectorized evaluators over ``RecordBatch``.

``compile_expr`` walks the expression once and builds a chain of closures;
each call then evaluates a whole batch with Arrow compute kernels (see
``flowsql.exec.functions``). Constants stay Arrow scalars while evaluating
and are broadcast only at the end, so ``price * 2`` never materialises a
column of twos.

SQL semantics in short: NULL propagates; AND/OR use three-valued (Kleene)
logic; integer / integer truncates toward zero and x / 0 is NULL; DECIMAL
arithmetic is exact (``123.45 * 67.89 = 8381.0205`` as decimal128); a
constant compared with a column of another type is cast to the column's type;
dictionary-encoded columns work everywhere (string functions run over the
dictionary only). Type errors raise :class:`~flowsql.errors.ExecutionError`
naming the function and the argument types.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import singledispatch

import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError, PlanError, UnsupportedError, did_you_mean
from flowsql.exec.functions import FUNCTIONS
from flowsql.exec.functions.base import Datum, decode, is_scalar, type_names
from flowsql.exec.functions.coerce import sql_cast, unify
from flowsql.exec.functions.logical import boolean
from flowsql.plan.expr import Call, Case, Cast, Col, Expr, Lit

#: A compiled expression: batch in, one value per row out.
Evaluator = Callable[[pa.RecordBatch], pa.Array]

_Eval = Callable[[pa.RecordBatch], Datum]
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def compile_expr(expr: Expr) -> Evaluator:
    """Compile ``expr`` once; the result evaluates it over any number of batches.

    The returned function always yields an Array of length ``batch.num_rows``.

    Raises:
        UnsupportedError: unknown function or expression node.
        PlanError: wrong number of arguments, or a literal Arrow cannot hold.
    """
    inner = _compile(expr)

    def evaluate_batch(batch: pa.RecordBatch) -> pa.Array:
        return broadcast(inner(batch), batch.num_rows)

    return evaluate_batch


def evaluate(expr: Expr, batch: pa.RecordBatch) -> pa.Array:
    """Evaluate ``expr`` over one batch (compiles each time; prefer ``compile_expr``)."""
    return compile_expr(expr)(batch)


def broadcast(value: Datum | pa.ChunkedArray, num_rows: int) -> pa.Array:
    """``value`` as an Array of ``num_rows`` values (a constant is repeated)."""
    if isinstance(value, pa.Scalar):
        return pa.repeat(decode(value), num_rows)
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    return value


@singledispatch
def _compile(expr: Expr) -> _Eval:
    raise UnsupportedError(f"cannot evaluate expression {type(expr).__name__}")


@_compile.register
def _column(expr: Col) -> _Eval:
    name = expr.name

    def column(batch: pa.RecordBatch) -> Datum:
        index = batch.schema.get_field_index(name)
        if index < 0:
            hint = did_you_mean(name, batch.schema.names)
            raise ExecutionError(
                f"column '{name}' is not in the input (columns: {', '.join(batch.schema.names)})"
                + (f"; {hint}" if hint else "")
            )
        return batch.column(index)

    return column


@_compile.register
def _literal(expr: Lit) -> _Eval:
    try:
        value = pa.scalar(expr.value, expr.type)
    except _ARROW_ERRORS as exc:
        raise PlanError(
            f"literal {expr.value!r} is not a valid {expr.type}: {exc}",
            line=expr.pos.line,
            column=expr.pos.column,
        ) from exc
    return lambda batch: value


@_compile.register
def _call(expr: Call) -> _Eval:
    function = FUNCTIONS.get(expr.fn)
    if function is None:
        raise UnsupportedError(
            f"unknown function '{expr.fn}'", line=expr.pos.line, column=expr.pos.column
        )
    if not function.accepts(len(expr.args)):
        raise PlanError(
            f"{expr.fn.upper()} does not take {len(expr.args)} argument(s)",
            line=expr.pos.line,
            column=expr.pos.column,
        )
    args = [_compile(a) for a in expr.args]

    def call(batch: pa.RecordBatch) -> Datum:
        values = [a(batch) for a in args]
        try:
            return function.apply(values)
        except _ARROW_ERRORS as exc:
            raise ExecutionError(f"{expr.fn.upper()}({type_names(values)}): {exc}") from exc

    return call


@_compile.register
def _case(expr: Case) -> _Eval:
    conditions = [_compile(c) for c, _ in expr.whens]
    results = [_compile(v) for _, v in expr.whens]
    default = _compile(expr.default) if expr.default is not None else None

    def case(batch: pa.RecordBatch) -> Datum:
        whens = [boolean("case", c(batch)) for c in conditions]
        values = [r(batch) for r in results]
        values.append(default(batch) if default else pa.scalar(None))
        try:
            return _choose(whens, unify(values, "case"), batch.num_rows)
        except _ARROW_ERRORS as exc:
            raise ExecutionError(f"CASE({type_names(values)}): {exc}") from exc

    return case


def _choose(whens: list[Datum], values: list[Datum], num_rows: int) -> Datum:
    """The first value whose condition is TRUE (NULL counts as not TRUE), else the last."""
    if pa.types.is_null(values[0].type):
        return values[0]
    if all(is_scalar(w) for w in whens):
        chosen = next((v for w, v in zip(whens, values, strict=False) if w.as_py()), values[-1])
        return chosen
    columns = [broadcast(w, num_rows) for w in whens]
    names = [f"c{i}" for i in range(len(columns))]
    return pc.case_when(pc.make_struct(*columns, field_names=names), *values)


@_compile.register
def _cast(expr: Cast) -> _Eval:
    inner = _compile(expr.expr)
    to = expr.to

    def cast(batch: pa.RecordBatch) -> Datum:
        value = inner(batch)
        if value.type == to:
            return value
        try:
            return sql_cast(value, to)
        except _ARROW_ERRORS as exc:
            if expr.safe:
                return _try_cast(value, to)
            raise ExecutionError(f"CAST({value.type} AS {to}): {exc}") from exc

    return cast


def _try_cast(value: Datum, to: pa.DataType) -> Datum:
    """TRY_CAST after a failed vectorized cast: each distinct value is cast on its
    own (values that do not convert become NULL), then mapped back to the rows."""
    if isinstance(value, pa.Scalar):
        return _try_cast_one(value, to)
    encoded = pc.dictionary_encode(value) if not pa.types.is_dictionary(value.type) else value
    uniques = [_try_cast_one(v, to) for v in encoded.dictionary]  # distinct values only
    return pc.take(pa.array([u.as_py() for u in uniques], to), encoded.indices)


def _try_cast_one(value: pa.Scalar, to: pa.DataType) -> pa.Scalar:
    try:
        return sql_cast(value, to)
    except (*_ARROW_ERRORS, ValueError, TypeError):
        return pa.scalar(None, to)
