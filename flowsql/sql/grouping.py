"""GROUP BY, aggregates, windows and HAVING -> ``Aggregate`` (+ ``Filter``) and the
SELECT list over the aggregate's output.

The Aggregate outputs its keys by name and one column per distinct aggregate
call: the SELECT alias when the item is exactly that call, else a hidden
``_aggN``. The SELECT list and HAVING are then expressions over those
columns, so ``SUM(x) / COUNT(*)`` becomes ``div(_agg0, _agg1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from flowsql.errors import PlanError, collect, raise_all
from flowsql.plan.expr import AggCall, Col, Expr, Pos
from flowsql.plan.nodes import Aggregate, EmitMode, Filter, Node
from flowsql.records import TIMESTAMP
from flowsql.sql.exprs import Scope, pos_of, translate
from flowsql.sql.query import Query
from flowsql.sql.windows import (
    allowed_lateness_ms,
    grace_ms,
    late_strategy,
    window_spec,
)

_AGGREGATES: dict[type[exp.Expr], str] = {
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Stddev: "stddev_samp",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
    exp.Variance: "var_samp",
    exp.VariancePop: "var_pop",
    exp.First: "first",
    exp.Last: "last",
    exp.ApproxDistinct: "approx_count_distinct",
}


def is_grouped(query: Query) -> bool:
    """True when the query aggregates (GROUP BY, an aggregate call, or a window)."""
    select = query.select
    if select.args.get("group") or query.windowed:
        return True
    nodes = [i.node for i in query.items]
    having = select.args.get("having")
    if having is not None:
        nodes.append(having)
    return any(
        isinstance(n, exp.AggFunc) and not n.find_ancestor(exp.Window)
        for node in nodes
        for n in node.walk()
    )


@dataclass
class _Key:
    name: str
    expr: Expr
    node: exp.Expr


@dataclass
class Grouping:
    """Plans the aggregate part of one query."""

    query: Query
    properties: dict[str, str]
    keys: list[_Key] = field(default_factory=list)
    aggs: list[tuple[str, AggCall]] = field(default_factory=list)

    def plan(self, node: Node) -> tuple[Node, tuple[tuple[str, Expr], ...]]:
        """The Aggregate (and HAVING filter) over ``node`` and the SELECT list."""
        if self.query.star:
            raise self.query.error(
                "SELECT * cannot be used with GROUP BY or aggregates", self.query.select
            )
        errors: list[PlanError] = []
        self._group_keys(errors)
        exprs = []
        for item in self.query.items:
            expr = collect(errors, self._output, item.node, item.name)
            exprs.append((item.name, expr if expr is not None else Col(item.name)))
        having = collect(errors, self._having)
        raise_all(errors)
        plan: Node = self._aggregate(node)
        if having is not None:
            plan = Filter(plan, having)
        return plan, tuple(exprs)

    # -- keys ---------------------------------------------------------------------

    def _group_keys(self, errors: list[PlanError]) -> None:
        group = self.query.select.args.get("group")
        if group is not None and not group.expressions:
            raise self.query.error("GROUP BY needs at least one expression", group)
        for node in group.expressions if group else []:
            resolved = collect(errors, self._resolve_group_item, node)
            if resolved is None:
                continue
            target, name = resolved
            if self._is_window_bound(target):
                continue
            if isinstance(target, exp.Column):
                name = target.name
            name = name or f"_key{len(self.keys)}"
            expr = collect(errors, translate, target, self._row_scope("GROUP BY"))
            if expr is not None:
                self.keys.append(_Key(name, expr, target))

    def _resolve_group_item(self, node: exp.Expr) -> tuple[exp.Expr, str]:
        """GROUP BY 2 and GROUP BY alias refer to SELECT items; ``GROUP BY (expr)``
        is ``GROUP BY expr``."""
        items = self.query.items
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Literal) and not node.is_string:
            index = int(node.this)
            if not 1 <= index <= len(items):
                raise self.query.error(f"GROUP BY position {index} is not in the SELECT list", node)
            return items[index - 1].node, items[index - 1].name
        if isinstance(node, exp.Column) and not node.table:
            item = self.query.item_named(node.name)
            if item is not None and item.aliased and not _reads_column(item.node, node.name):
                return item.node, item.name
        match = next((i for i in items if i.node == node and i.aliased), None)
        return node, match.name if match else ""

    def _is_window_bound(self, node: exp.Expr) -> bool:
        return (
            isinstance(node, exp.Column) and self.query.window_column(node.name, Pos()) is not None
        )

    # -- scopes ---------------------------------------------------------------------

    def _row_scope(self, where: str) -> Scope:
        """Expressions over input rows (keys, aggregate arguments)."""
        return Scope(self.query.sql, where=where)

    def _output_scope(self, where: str, preferred: str = "", top: exp.Expr | None = None) -> Scope:
        """Expressions over the aggregate's output (SELECT list, HAVING)."""
        return Scope(
            self.query.sql,
            on_agg=lambda node: self._agg_column(node, preferred if node is top else ""),
            on_column=lambda node, pos: self._output_column(node, pos, where),
            substitute=self._key_column,
            where=where,
        )

    def _output(self, node: exp.Expr, name: str) -> Expr:
        return translate(node, self._output_scope("SELECT", name, node))

    def _key_column(self, node: exp.Expr) -> Expr | None:
        for key in self.keys:
            if key.node == node or _same_column(key.node, node.name, node):
                return Col(key.name, pos_of(self.query.sql, node))
        return None

    def _output_column(self, node: exp.Column, pos: Pos, where: str) -> Expr:
        window = self.query.window_column(node.name, pos)
        if window is not None:
            return window
        if node.name == TIMESTAMP:
            return Col(TIMESTAMP, pos)
        item = self.query.item_named(node.name) if where == "HAVING" else None
        if item is not None and item.node is not node:
            return translate(item.node, self._output_scope(where))
        raise self.query.error(
            f"column '{node.name}' must appear in GROUP BY or inside an aggregate function",
            node,
            hint=f"add {node.name} to GROUP BY, or use e.g. MAX({node.name})",
        )

    # -- aggregates ---------------------------------------------------------------

    def _agg_column(self, node: exp.Expr, preferred: str) -> Expr:
        call = self._agg_call(node)
        pos = pos_of(self.query.sql, node)
        for name, existing in self.aggs:
            if existing == call:
                return Col(name, pos)
        taken = {k.name for k in self.keys} | {n for n, _ in self.aggs}
        name = preferred if preferred and preferred not in taken else f"_agg{len(self.aggs)}"
        while name in taken:
            name = f"_{name}"
        self.aggs.append((name, call))
        return Col(name, pos)

    def _agg_call(self, node: exp.Expr) -> AggCall:
        pos = pos_of(self.query.sql, node)
        scope = self._row_scope(f"the argument of {node.sql()}")
        if isinstance(node, exp.Count):
            return _count(node, scope, pos)
        fn = _AGGREGATES.get(type(node))
        if fn is None:
            raise self.query.unsupported(f"unsupported aggregate {node.sql()}", node)
        if isinstance(node.this, exp.Distinct):
            raise self.query.unsupported(
                f"DISTINCT is only supported in COUNT(DISTINCT x), not {node.sql()}", node
            )
        return AggCall(fn, (translate(node.this, scope),), pos=pos)

    # -- HAVING, window, emit ------------------------------------------------------

    def _having(self) -> Expr | None:
        having = self.query.select.args.get("having")
        if having is None:
            return None
        return translate(having.this, self._output_scope("HAVING"))

    def _aggregate(self, node: Node) -> Aggregate:
        window = window_spec(self.query.window, self.query.sql) if self.query.window else None
        lateness = allowed_lateness_ms(self.properties, grace_ms(self.query.window) or 0)
        return Aggregate(
            input=node,
            keys=tuple((k.name, k.expr) for k in self.keys),
            aggs=tuple(self.aggs),
            window=window,
            emit=self._emit(),
            allowed_lateness_ms=lateness,
            late_strategy=late_strategy(self.properties),
        )

    def _emit(self) -> EmitMode:
        clause = self.query.select.args.get("emit")
        if clause is not None:
            return "final" if clause.this == "final" else "changes"
        return "final" if self.query.windowed else "changes"


def _count(node: exp.Count, scope: Scope, pos: Pos) -> AggCall:
    arg = node.this
    if arg is None or isinstance(arg, exp.Star):
        return AggCall("count_star", pos=pos)
    if isinstance(arg, exp.Distinct):
        args = tuple(translate(a, scope) for a in arg.expressions)
        return AggCall("count", args, distinct=True, pos=pos)
    if isinstance(arg, exp.Literal) and not arg.is_string:
        return AggCall("count_star", pos=pos)
    return AggCall("count", (translate(arg, scope),), pos=pos)


def _reads_column(node: exp.Expr, name: str) -> bool:
    """``node`` reads an input column ``name``: then GROUP BY ``name`` means that
    column, not the SELECT alias (as in PostgreSQL)."""
    return any(col.name == name for col in node.find_all(exp.Column))


def _same_column(node: exp.Expr, name: str, other: exp.Expr | None = None) -> bool:
    """``node`` is a column named ``name`` (and ``other``, if given, is a column too)."""
    if other is not None and not isinstance(other, exp.Column):
        return False
    return isinstance(node, exp.Column) and node.name == name
