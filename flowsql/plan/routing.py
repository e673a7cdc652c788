"""Routing-key analysis: can a query run hash-partitioned, and by which columns?

A query can run on N partitions when every piece of state it keeps belongs to
rows that share a routing key: rows are hash-routed by ``key_columns`` and
each partition owns the groups / partitions of its keys. The rules:

- GROUP BY: hash by the keys that are plain columns (rows of one group share
  them). Keys that are only expressions (``FLOOR(x / 10)``) cannot be routed by
  the columns they read: rows of one group may differ in those columns.
- ROWS functions: hash by the PARTITION BY columns; without PARTITION BY every
  row belongs to one ordered buffer -> single.
- Global aggregates: ``two_phase`` (partial per partition, merged) when every
  aggregate merges (count/sum/avg/min/max/var/stddev), else single. A session
  window without a key is one session over the whole stream -> single.
- Stateless SELECT/WHERE: any row on any partition (hash with no key).
- LIMIT, ORDER BY and DISTINCT over rows that may sit on different partitions
  need one place that sees every row -> single.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from flowsql.plan import nodes as n
from flowsql.plan import options
from flowsql.plan.expr import Col, Expr

Strategy = Literal["hash", "two_phase", "single"]

#: Aggregates whose partial results merge exactly.
MERGEABLE_AGGREGATES: frozenset[str] = frozenset(
    {
        "count_star",
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "var_samp",
        "var_pop",
        "stddev_samp",
        "stddev_pop",
    }
)


@dataclass(frozen=True)
class Routing:
    """How a query's rows may be spread over partitions.

    Attributes:
        key_columns: input columns to hash-route rows by (empty with "hash" =
            any row may go to any partition).
        strategy: "hash" (N partitions, routed by ``key_columns``), "two_phase"
            (partial aggregate per partition, one final merge) or "single".
        reason: why, in words, for ``explain``.
    """

    key_columns: tuple[str, ...]
    strategy: Strategy
    reason: str

    @property
    def partitionable(self) -> bool:
        """True when rows may be spread over several partitions."""
        return self.strategy != "single"


def routing(statement: n.Statement) -> Routing:
    """The routing decision for ``statement``."""
    nodes = n.walk(statement.plan)
    base = _stateful_routing(nodes)
    for node in nodes:
        if isinstance(node, n.Limit):
            return _single(f"LIMIT {node.n} counts rows over the whole stream")
        if isinstance(node, n.Sort):
            return _single("ORDER BY sorts all rows together")
    distinct = next((x for x in nodes if isinstance(x, n.Distinct)), None)
    return _with_distinct(base, nodes) if distinct is not None else base


#: Column names used as event time when nothing is configured and the input has
#: no ``_timestamp`` column, in order of preference (the engine and ``explain``
#: both read them here).
FALLBACK_EVENT_TIME = ("timestamp", "event_time", "ts")


def event_time_column(statement: n.Statement, override: str | None = None) -> str | None:
    """The query's event-time column: the window's, else ``override`` (CLI/API),
    else WITH '<source>.event.time.field' or 'event.time.field', else None
    (= ``_timestamp``)."""
    for node in n.walk(statement.plan):
        if isinstance(node, n.Aggregate) and node.window and node.window.time_column:
            return node.window.time_column
    if override:
        return override
    props = statement.properties
    for source in statement.sources:
        found = options.find(props, options.STREAM_EVENT_TIME_FIELD, source)
        if found is not None:
            return found[1]
    field: str | None = options.get(props, options.EVENT_TIME_FIELD)
    return field


def _stateful_routing(nodes: list[n.Node]) -> Routing:
    for node in nodes:
        if isinstance(node, n.Aggregate):
            return _aggregate_routing(node)
        if isinstance(node, n.RowsWindow):
            return _rows_routing(node)
    return Routing((), "hash", "stateless: each row is processed on its own, on any partition")


def _aggregate_routing(node: n.Aggregate) -> Routing:
    if node.keys:
        columns = plain_columns(expr for _, expr in node.keys)
        if columns:
            return Routing(
                columns, "hash", f"GROUP BY {', '.join(columns)}: each group lives on one partition"
            )
        return _single(
            "GROUP BY only expressions: rows of one group may differ in the columns they read"
        )
    if node.window is not None and node.window.kind == "session":
        return _single("a SESSION window without GROUP BY key is one session over the whole stream")
    unmergeable = sorted(
        {call.fn for _, call in node.aggs if call.fn not in MERGEABLE_AGGREGATES or call.distinct}
    )
    if unmergeable:
        names = ", ".join("count distinct" if f == "count" else f for f in unmergeable)
        return _single(f"global aggregate with {names}, which cannot merge partial results")
    return Routing((), "two_phase", "global aggregate: partial per partition, merged at the end")


def _rows_routing(node: n.RowsWindow) -> Routing:
    if not node.partition_by:
        return _single("ROWS window functions without PARTITION BY see every row in one order")
    columns = plain_columns(node.partition_by)
    if not columns:
        return _single(
            "PARTITION BY only expressions: rows of one partition may differ in the columns they read"
        )
    return Routing(
        columns, "hash", f"PARTITION BY {', '.join(columns)}: each partition's rows stay together"
    )


def _with_distinct(base: Routing, nodes: list[n.Node]) -> Routing:
    """DISTINCT is partition-local when equal rows always share a partition."""
    project = next((x for x in nodes if isinstance(x, n.Project)), None)
    if project is None or project.star or base.strategy != "hash":
        return _single("DISTINCT compares rows from every partition")
    selected = {expr.name for _, expr in project.exprs if isinstance(expr, Col)}
    if base.key_columns:
        if set(base.key_columns) <= selected:
            return base
        return _single("DISTINCT on columns other than the routing key")
    if project.exprs and all(isinstance(expr, Col) for _, expr in project.exprs):
        columns = tuple(
            dict.fromkeys(expr.name for _, expr in project.exprs if isinstance(expr, Col))
        )
        return Routing(
            columns, "hash", f"DISTINCT {', '.join(columns)}: equal rows share a partition"
        )
    return _single("DISTINCT over computed columns compares rows from every partition")


def plain_columns(exprs: Iterable[Expr]) -> tuple[str, ...]:
    """Names of the expressions that are plain column references, in order."""
    out: list[str] = []
    for expr in exprs:
        if isinstance(expr, Col) and expr.name not in out:
            out.append(expr.name)
    return tuple(out)


def _single(reason: str) -> Routing:
    return Routing((), "single", reason)


def routed_exprs(statement: n.Statement) -> tuple[Expr, ...]:
    """The key expressions the routing decision looked at (for ``explain``)."""
    for node in n.walk(statement.plan):
        if isinstance(node, n.Aggregate):
            return tuple(expr for _, expr in node.keys)
        if isinstance(node, n.RowsWindow):
            return node.partition_by
    return ()
