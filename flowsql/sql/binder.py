"""Bind a planned statement to its input schemas.

Checks every column reference against what the node below provides, expands
``SELECT *`` into the source's non-system columns and fills ``Scan.columns``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from functools import singledispatch

import pyarrow as pa

from flowsql.errors import PlanError, UnsupportedError, did_you_mean, raise_all
from flowsql.plan.expr import AggCall, Col, Expr, WinCall
from flowsql.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    Limit,
    Node,
    Project,
    RowsWindow,
    Scan,
    Sort,
    Statement,
)
from flowsql.records import KEY, OFFSET, PARTITION, TIMESTAMP, WINDOW_END, WINDOW_START

#: System columns every source row carries.
SOURCE_SYSTEM_COLUMNS: tuple[str, ...] = (TIMESTAMP, KEY, PARTITION, OFFSET)
_HIDDEN = re.compile(r"^_(agg|win|key)\d+$")
#: Where :func:`check` collects unknown columns while :func:`bind` runs, so that
#: every unknown column of a statement is reported, not only the first.
_FOUND: ContextVar[list[PlanError] | None] = ContextVar("flowsql_bind_errors", default=None)


class _Frame:
    """What a node outputs: all column names, and those ``SELECT *`` expands to."""

    def __init__(self, columns: Iterable[str], star: Iterable[str]) -> None:
        self.columns = tuple(dict.fromkeys(columns))
        self.star = tuple(star)


def bind(statement: Statement, schemas: Mapping[str, pa.Schema]) -> Statement:
    """Check ``statement`` against ``schemas`` (FROM name -> Arrow schema).

    Returns:
        The statement with ``SELECT *`` expanded and ``Scan.columns`` filled.

    Raises:
        PlanError: an unknown stream or column, with a "did you mean" hint and
            the position of the reference (:class:`~flowsql.errors.PlanErrors`
            when several columns are unknown).
    """
    found: list[PlanError] = []
    token = _FOUND.set(found)
    try:
        plan, _ = _bind(statement.plan, schemas)
    finally:
        _FOUND.reset(token)
    unique = {(e.line, e.column, e.message): e for e in found}
    raise_all([unique[k] for k in sorted(unique)])
    return replace(statement, plan=plan)


@singledispatch
def _bind(node: Node, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    raise UnsupportedError(f"cannot bind plan node {type(node).__name__}")


@_bind.register
def _scan(node: Scan, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    schema = schemas.get(node.source)
    if schema is None:
        raise PlanError(f"unknown stream '{node.source}'", hint=did_you_mean(node.source, schemas))
    names = tuple(schema.names)
    return replace(node, columns=names), _Frame(names + SOURCE_SYSTEM_COLUMNS, names)


@_bind.register
def _filter(node: Filter, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    child, frame = _bind(node.input, schemas)
    check(node.predicate, frame)
    return replace(node, input=child), frame


@_bind.register
def _rows_window(node: RowsWindow, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    child, frame = _bind(node.input, schemas)
    for expr in (*node.partition_by, *(e for e, _ in node.order_by)):
        check(expr, frame)
    for _, call in node.funcs:
        _check_win(call, frame)
    out = _Frame(frame.columns + tuple(name for name, _ in node.funcs), frame.star)
    return replace(node, input=child), out


@_bind.register
def _aggregate(node: Aggregate, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    child, frame = _bind(node.input, schemas)
    if node.window and node.window.time_column:
        check(Col(node.window.time_column), frame)
    for _, key in node.keys:
        check(key, frame)
    for _, call in node.aggs:
        _check_agg(call, frame)
    names = [name for name, _ in node.keys]
    if node.window is not None:
        names += [WINDOW_START, WINDOW_END]
    names += [name for name, _ in node.aggs] + [TIMESTAMP]
    return replace(node, input=child), _Frame(names, ())


@_bind.register
def _project(node: Project, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    child, frame = _bind(node.input, schemas)
    for _, expr in node.exprs:
        check(expr, frame)
    exprs = node.exprs
    if node.star:
        exprs = tuple((name, Col(name)) for name in frame.star) + exprs
    names = [name for name, _ in exprs]
    return replace(node, input=child, exprs=exprs, star=False), _Frame(names, names)


@_bind.register
def _sort(node: Sort, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    child, frame = _bind(node.input, schemas)
    for expr, _, _ in node.keys:
        check(expr, frame)
    return replace(node, input=child), frame


@_bind.register(Distinct)
@_bind.register(Limit)
def _pass_through(node: Node, schemas: Mapping[str, pa.Schema]) -> tuple[Node, _Frame]:
    child, frame = _bind(node.input, schemas)  # type: ignore[attr-defined]
    return replace(node, input=child), frame  # type: ignore[type-var]


def check(expr: Expr, frame: _Frame) -> None:
    """A PlanError for each column of ``expr`` the frame lacks: collected while
    :func:`bind` runs, else raised (all of them)."""
    errors = [
        PlanError(
            f"unknown column '{col.name}'",
            line=col.pos.line,
            column=col.pos.column,
            hint=_hint(col.name, frame),
        )
        for col in _columns(expr)
        if col.name not in frame.columns
    ]
    found = _FOUND.get()
    if found is None:
        raise_all(errors)
    else:
        found.extend(errors)


def _hint(name: str, frame: _Frame) -> str:
    if name in (WINDOW_START, WINDOW_END):
        return f"{name} exists only above a windowed GROUP BY (WINDOW TUMBLING/SLIDING/SESSION)"
    visible = [c for c in frame.columns if not _HIDDEN.match(c)]
    return did_you_mean(name, visible) or f"available: {', '.join(visible)}"


def _columns(expr: Expr) -> list[Col]:
    """The Col nodes of ``expr`` in source order (keeps their positions)."""
    found: list[Col] = []
    _collect(expr, found)
    return found


def _collect(expr: object, out: list[Col]) -> None:
    if isinstance(expr, Col):
        out.append(expr)
        return
    for value in getattr(expr, "__dict__", {}).values():
        if isinstance(value, tuple):
            for item in value:
                for sub in item if isinstance(item, tuple) else (item,):
                    _collect(sub, out)
        elif isinstance(value, Expr):
            _collect(value, out)


def _check_agg(call: AggCall, frame: _Frame) -> None:
    for arg in call.args:
        check(arg, frame)


def _check_win(call: WinCall, frame: _Frame) -> None:
    for arg in call.args:
        check(arg, frame)
    if call.default is not None:
        check(call.default, frame)
