"""A parsed SELECT -> the logical plan chain.

``Scan -> [Filter WHERE] -> [RowsWindow] -> [Aggregate] -> [Filter HAVING] ->
Project -> [Distinct] -> [Sort] -> [Limit]``
"""

from __future__ import annotations

import re

from sqlglot import exp

from flowsql.errors import PlanError, UnsupportedError, collect, raise_all
from flowsql.plan.expr import Col, Expr, Pos
from flowsql.plan.nodes import Distinct, Filter, Limit, Node, Project, Scan, Sort, Statement
from flowsql.sql.diagnostics import position
from flowsql.sql.dialect import StreamProperties, StreamWindow, WindowTable
from flowsql.sql.exprs import Scope, translate
from flowsql.sql.grouping import Grouping, is_grouped
from flowsql.sql.over import RowsWindows
from flowsql.sql.query import Query, select_items
from flowsql.sql.statements import SourceStatement

#: Clauses sqlglot parses that flowsql does not run.
_UNSUPPORTED: dict[str, str] = {
    "joins": "JOIN",
    "laterals": "LATERAL",
    "with_": "WITH (common table expressions)",
    "qualify": "QUALIFY",
    "offset": "OFFSET",
    "pivots": "PIVOT",
    "prewhere": "PREWHERE",
    "connect": "CONNECT BY",
    "match": "MATCH_RECOGNIZE",
    "sample": "TABLESAMPLE",
}


def plan_statement(source: SourceStatement, select: exp.Select) -> Statement:
    """Plan one parsed statement."""
    properties = dict(source.properties)
    properties.update(_stream_properties(select))
    plan = plan_select(select, source.sql, properties)
    return Statement(
        plan=plan,
        kind=source.kind,  # type: ignore[arg-type]
        name=source.name,
        properties=properties,
        annotations=dict(source.annotations),
        sql=source.text,
        line=source.line,
    )


def plan_select(select: exp.Select, sql: str, properties: dict[str, str]) -> Node:
    """The plan of one SELECT; ``sql`` is the file text its positions refer to.

    Independent errors (of the FROM, WHERE, each SELECT item, ORDER BY, LIMIT...)
    are all collected: one is raised as is, several as
    :class:`~flowsql.errors.PlanErrors`.
    """
    query = Query(sql, select)
    errors: list[PlanError] = []
    collect(errors, _reject_unsupported, query)
    collect(errors, _reject_subqueries, query)
    if errors:  # a JOIN's or a subquery's parts would be reported again as the query's
        raise_all(errors)
    scan = collect(errors, _scan, query)
    collect(errors, _window_time_column, query)
    node: Node = scan if scan is not None else Scan("")
    node = collect(errors, _where, query, node) or node
    collect(errors, select_items, query)
    if scan is None or len(query.items) + query.star < len(select.expressions):
        raise_all(_in_order(errors))  # no FROM or SELECT list to check the rest against
    if is_grouped(query):
        grouped = collect(errors, Grouping(query, properties).plan, node)
        node = Project(*grouped) if grouped is not None else node
    else:
        node = collect(errors, _project, query, node) or node
    if select.args.get("distinct"):
        node = collect(errors, _distinct, query, node) or node
    node = collect(errors, _sort, query, node) or node
    node = collect(errors, _limit, query, node) or node
    raise_all(_in_order(errors))
    return node


def _in_order(errors: list[PlanError]) -> list[PlanError]:
    """The errors in the order of the text (those without a position last)."""
    return sorted(errors, key=lambda e: (e.line or 1 << 30, e.column))


def _stream_properties(select: exp.Select) -> dict[str, str]:
    props = select.args.get("stream_props")
    if not isinstance(props, StreamProperties):
        return {}
    return {p.this.this: p.args["value"].this for p in props.expressions}


def _reject_unsupported(query: Query) -> None:
    for key, what in _UNSUPPORTED.items():
        value = query.select.args.get(key)
        if value:
            node = value[0] if isinstance(value, list) else value
            raise query.unsupported(f"{what} is not supported", node)


def _reject_subqueries(query: Query) -> None:
    """A subquery anywhere but FROM (which :func:`_scan` reports) is refused here,
    before its aggregates would make the outer query look grouped."""
    errors: list[PlanError] = []
    for key in ("expressions", "where", "group", "having", "order"):
        value = query.select.args.get(key)
        for part in value if isinstance(value, list) else [value] if value else []:
            for node in part.find_all(exp.Select):
                if node.find_ancestor(exp.Select) is not query.select:
                    continue  # inside a subquery already reported
                errors.append(_subquery_error(query, node))
    raise_all(errors)


_SUBQUERY_HEAD = re.compile(r"\s*SELECT\s+((DISTINCT|ALL)\s+)?", re.IGNORECASE)


def _subquery_error(query: Query, node: exp.Select) -> UnsupportedError:
    """The error at the subquery's opening parenthesis (sqlglot keeps no position
    for it nor for SELECT: the one before ``SELECT [DISTINCT]`` and its first item)."""
    starts = [int(n.meta["start"]) for n in node.walk() if n.meta and "start" in n.meta]
    start = min(starts, default=0)
    opening = query.sql.rfind("(", 0, start)
    if opening >= 0 and _SUBQUERY_HEAD.fullmatch(query.sql, opening + 1, start):
        start = opening
    at = position(query.sql, start) if starts else Pos()
    return UnsupportedError(_subquery_message(node), line=at.line, column=at.column)


def _subquery_message(node: exp.Select) -> str:
    holder = node.parent.parent if isinstance(node.parent, exp.Subquery) else node.parent
    if isinstance(holder, exp.In):
        return "IN (subquery) is not supported"
    if isinstance(holder, exp.Exists):
        return "EXISTS (subquery) is not supported"
    return "scalar subqueries are not supported"


# -- FROM and window ------------------------------------------------------------------


def _scan(query: Query) -> Node:
    from_ = query.select.args["from_"]
    source = from_.this
    window = query.select.args.get("windows")
    if isinstance(source, WindowTable):
        if window:
            raise query.error("use either a window table function or a WINDOW clause", source)
        query.window = source
        source = source.this
    elif isinstance(window, StreamWindow):
        query.window = window
    elif window:
        raise query.unsupported(
            "named windows (WINDOW w AS ...) are not supported",
            window[0] if isinstance(window, list) else window,
            hint="use WINDOW TUMBLING(size), SLIDING(size, advance) or SESSION(gap)",
        )
    if not isinstance(source, exp.Table) or not source.name:
        raise query.unsupported("FROM must name a stream (subqueries are not supported)", source)
    return Scan(source.name)


def _window_time_column(query: Query) -> None:
    time_column = query.window.args.get("time_column") if query.window is not None else None
    if time_column is not None and not isinstance(time_column, exp.Column):
        raise query.unsupported(
            f"the window time column must be a column name, not {time_column.sql()}",
            time_column,
            hint="compute it in an upstream statement (CREATE STREAM ... AS SELECT"
            " expr AS ts ...) and window over that column",
        )


def _where(query: Query, node: Node) -> Node:
    where = query.select.args.get("where")
    if where is None:
        return node
    return Filter(node, translate(where.this, Scope(query.sql, where="WHERE")))


# -- SELECT list without aggregation --------------------------------------------------


def _project(query: Query, node: Node) -> Node:
    windows = RowsWindows(query)
    exprs: list[tuple[str, Expr]] = []
    errors: list[PlanError] = []
    for item in query.items:
        scope = Scope(query.sql, on_window=windows.hook(item.node, item.name), where="SELECT")
        expr = collect(errors, translate, item.node, scope)
        if expr is not None:
            exprs.append((item.name, expr))
    raise_all(errors)
    return Project(windows.node(node), tuple(exprs), star=query.star)


def _distinct(query: Query, node: Node) -> Node:
    distinct = query.select.args["distinct"]
    if distinct.args.get("on"):
        raise query.unsupported("DISTINCT ON is not supported", distinct)
    return Distinct(node)


# -- ORDER BY and LIMIT over the SELECT output ----------------------------------------


def _sort(query: Query, node: Node) -> Node:
    order = query.select.args.get("order")
    if order is None:
        return node
    keys = []
    for ordered in order.expressions:
        expr = _output_ref(query, ordered.this)
        ascending = not ordered.args.get("desc")
        keys.append((expr, ascending, bool(ordered.args.get("nulls_first"))))
    return Sort(node, tuple(keys))


def _output_ref(query: Query, node: exp.Expr) -> Expr:
    """An ORDER BY item as an expression over the SELECT output."""
    if isinstance(node, exp.Literal) and not node.is_string:
        if not node.this.isdigit():
            raise query.error(f"ORDER BY {node.this}: a position must be a whole number", node)
        index = int(node.this)
        if not 1 <= index <= len(query.items):
            raise query.error(f"ORDER BY position {index} is not in the SELECT list", node)
        return Col(query.items[index - 1].name)

    def substitute(sub: exp.Expr) -> Expr | None:
        match = next((i for i in query.items if i.node == sub), None)
        return Col(match.name) if match else None

    def column(col: exp.Column, pos: Pos) -> Expr:
        if query.star or query.item_named(col.name):
            return Col(col.name, pos)
        raise query.error(
            f"ORDER BY column '{col.name}' is not in the SELECT list",
            col,
            hint="ORDER BY can only use selected columns; add it to the SELECT list",
        )

    return translate(
        node, Scope(query.sql, on_column=column, substitute=substitute, where="ORDER BY")
    )


def _limit(query: Query, node: Node) -> Node:
    limit = query.select.args.get("limit")
    if limit is None:
        return node
    value = limit.expression
    if not (isinstance(value, exp.Literal) and value.this.isdigit()):
        raise query.error("LIMIT needs a whole number", value)
    return Limit(node, int(value.this))
