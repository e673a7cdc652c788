"""A parsed SELECT -> the logical plan chain.

``Scan -> [Filter WHERE] -> [RowsWindow] -> [Aggregate] -> [Filter HAVING] ->
Project -> [Distinct] -> [Sort] -> [Limit]``
"""

from __future__ import annotations

from sqlglot import exp

from flowsql.plan.expr import Col, Expr, Pos
from flowsql.plan.nodes import Distinct, Filter, Limit, Node, Project, Scan, Sort, Statement
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
    """The plan of one SELECT; ``sql`` is the file text its positions refer to."""
    query = Query(sql, select)
    _reject_unsupported(query)
    node = _scan(query)
    node = _where(query, node)
    select_items(query)
    if is_grouped(query):
        node, exprs = Grouping(query, properties).plan(node)
        node = Project(node, exprs)
    else:
        node = _project(query, node)
    if select.args.get("distinct"):
        node = _distinct(query, node)
    node = _sort(query, node)
    return _limit(query, node)


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


def _where(query: Query, node: Node) -> Node:
    where = query.select.args.get("where")
    if where is None:
        return node
    return Filter(node, translate(where.this, Scope(query.sql, where="WHERE")))


# -- SELECT list without aggregation --------------------------------------------------


def _project(query: Query, node: Node) -> Node:
    windows = RowsWindows(query)
    exprs: list[tuple[str, Expr]] = []
    for item in query.items:
        scope = Scope(query.sql, on_window=windows.hook(item.node, item.name), where="SELECT")
        exprs.append((item.name, translate(item.node, scope)))
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
