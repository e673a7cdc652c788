"""Compile a logical plan into a chain of operators (dispatch on node type)."""

from __future__ import annotations

from functools import singledispatch

from flowsql.errors import UnsupportedError
from flowsql.exec.aggregate import AggregateOp
from flowsql.exec.basic import FilterOp, ProjectOp
from flowsql.exec.operator import Operator, OperatorContext
from flowsql.exec.relational import DistinctOp, LimitOp, SortOp
from flowsql.exec.rows import RowsWindowOp
from flowsql.plan import nodes as n


@singledispatch
def build_operator(node: n.Node, ctx: OperatorContext) -> Operator:
    """Build the operator for one plan node."""
    raise UnsupportedError(f"no operator for {type(node).__name__}")


@build_operator.register
def _filter(node: n.Filter, ctx: OperatorContext) -> Operator:
    return FilterOp(node, ctx)


@build_operator.register
def _project(node: n.Project, ctx: OperatorContext) -> Operator:
    return ProjectOp(node, ctx)


@build_operator.register
def _aggregate(node: n.Aggregate, ctx: OperatorContext) -> Operator:
    return AggregateOp(node, ctx)


@build_operator.register
def _rows(node: n.RowsWindow, ctx: OperatorContext) -> Operator:
    return RowsWindowOp(node, ctx)


@build_operator.register
def _distinct(node: n.Distinct, ctx: OperatorContext) -> Operator:
    return DistinctOp(node, ctx)


@build_operator.register
def _limit(node: n.Limit, ctx: OperatorContext) -> Operator:
    return LimitOp(node, ctx)


@build_operator.register
def _sort(node: n.Sort, ctx: OperatorContext) -> Operator:
    return SortOp(node, ctx)


def compile_plan(root: n.Node, ctx: OperatorContext) -> list[Operator]:
    """Operators from the scan upwards (the scan itself is the engine's input)."""
    chain = [node for node in reversed(n.walk(root)) if not isinstance(node, n.Scan)]
    return [build_operator(node, ctx) for node in chain]
