"""Split a query for source-parallel execution: a pure plan rewrite.

Workers each read their own split of the input; what they can run without
seeing the other splits is the *lower* plan, the rest (the *upper* plan) runs
once, in the coordinator, over the lower plan's outputs taken in input order:

- no stateful node: the whole query is lower; upper is empty;
- an EMIT FINAL aggregate (unwindowed or TUMBLING, late rows dropped) whose
  aggregates all merge exactly (COUNT, MIN, MAX): lower is a *partial*
  aggregate per (key, window) of each split; the coordinator merges the
  partials (:class:`Merge`) and runs the nodes above the aggregate. SUM and
  AVG are not merged: V1 adds every row into a running sum in arrival order,
  and a sum of partial sums adds floating-point values in another order (it
  can differ in the last bit), so they take the path below;
- an EMIT CHANGES aggregate anywhere: its changelog follows the micro-batches
  (one row per changed group per batch), so lower only decodes and the
  coordinator runs the whole query over the source's own batches, in order
  (``batch_exact``: workers keep the batch boundaries the source would give);
  the same for LEAD, which releases held-back rows with later batches (the
  order of the output depends on where batches are cut);
- anything else: lower decodes, and runs the filters right above the scan
  unless the plan has a windowed aggregate (V1 decides lateness from the
  event times of every row, filtered out or not); upper is the rest.

Lower plans that hand rows to the upper plan keep only the columns it reads
(and ``_timestamp``): the workers decode everything, the coordinator receives
what it needs.

Partial aggregates carry ``__rows`` (rows aggregated) so a partial the
coordinator finds late can be counted as late rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from flowsql.plan import nodes as n
from flowsql.plan.expr import AggCall, Col, columns_of
from flowsql.records import TIMESTAMP

#: The FROM name of an upper plan: the lower plan's (or the merge's) output.
UPPER_SOURCE = "__lower"
#: Partial column holding how many input rows a partial aggregate covers.
ROWS = "__rows"

MergeKind = Literal["sum", "min", "max", "avg"]
DECOMPOSABLE: frozenset[str] = frozenset({"count_star", "count", "sum", "min", "max", "avg"})


@dataclass(frozen=True)
class Merge:
    """How one output aggregate is computed from partial columns: ``sum``/``min``/
    ``max`` of ``columns[0]``, or ``avg`` = sum of ``columns[0]`` / sum of ``columns[1]``."""

    name: str
    kind: MergeKind
    columns: tuple[str, ...]


@dataclass(frozen=True)
class SplitPlan:
    """A query cut for source-parallel execution.

    Attributes:
        lower: what each worker runs over its split (same source and WITH).
        upper: what the coordinator runs over the lower outputs (or the merged
            aggregates), reading :data:`UPPER_SOURCE`; None when nothing is left.
        aggregate: the original aggregate when lower ends with its partial form.
        merges: how to finish each aggregate of ``aggregate`` from the partials.
        reason: the choice, in words (for ``explain`` and logs).
        batch_exact: the output depends on the micro-batch boundaries (EMIT
            CHANGES), so the upper plan must see the source's own batches.
    """

    lower: n.Statement
    upper: n.Statement | None
    aggregate: n.Aggregate | None
    merges: tuple[Merge, ...]
    reason: str
    batch_exact: bool = False

    @property
    def two_phase(self) -> bool:
        return self.aggregate is not None


def split_plan(statement: n.Statement) -> SplitPlan:
    """Cut ``statement`` into a per-split lower plan and a coordinator upper plan."""
    chain = list(reversed(n.walk(statement.plan)))  # scan first
    first = next((i for i, x in enumerate(chain) if _stateful(x)), None)
    if first is None:
        return SplitPlan(statement, None, None, (), "stateless: each split runs the whole query")
    if any(isinstance(x, n.Aggregate) and x.emit != "final" for x in chain):
        plan = _cut(
            statement, chain, 1, "EMIT CHANGES follows the micro-batches: splits only decode"
        )
        return replace(plan, batch_exact=True)
    if any(isinstance(x, n.RowsWindow) and _leads(x) for x in chain):
        reason = "LEAD releases held-back rows with later micro-batches: splits only decode"
        return replace(_cut(statement, chain, 1, reason), batch_exact=True)
    node = chain[first]
    if isinstance(node, n.Aggregate) and (why := _not_decomposable(node)) == "":
        return _two_phase(statement, chain, first, node)
    reason = why if isinstance(node, n.Aggregate) else f"{type(node).__name__} needs every row"
    if any(isinstance(x, n.Aggregate) and x.window is not None for x in chain):
        return _cut(statement, chain, 1, f"{reason}: splits only decode")
    filters = 1
    while filters < len(chain) and isinstance(chain[filters], n.Filter):
        filters += 1
    return _cut(statement, chain, filters, f"{reason}: splits only decode and filter")


def _two_phase(statement: n.Statement, chain: list[n.Node], at: int, agg: n.Aggregate) -> SplitPlan:
    partial_aggs, merges = partial_aggregates(agg)
    partial = replace(agg, aggs=partial_aggs, emit="final", late_strategy="drop")
    lower = replace(statement, plan=partial, kind="select")
    upper_root = _rebuild(chain[at + 1 :], n.Scan(UPPER_SOURCE))
    upper = None if upper_root is None else _upper_statement(statement, upper_root)
    return SplitPlan(
        lower, upper, agg, merges, "decomposable EMIT FINAL aggregate: partial per split, merged"
    )


def _cut(statement: n.Statement, chain: list[n.Node], at: int, reason: str) -> SplitPlan:
    lower_root = chain[at - 1]
    needed = _consumed_columns(chain[at:])
    if needed is not None:  # workers send only what the upper plan reads
        keep = sorted(needed | {TIMESTAMP})
        lower_root = n.Project(lower_root, tuple((c, Col(c)) for c in keep))
    lower = replace(statement, plan=lower_root, kind="select")
    upper_root = _rebuild(chain[at:], n.Scan(UPPER_SOURCE))
    upper = None if upper_root is None else _upper_statement(statement, upper_root)
    return SplitPlan(lower, upper, None, (), reason)


def partial_aggregates(
    agg: n.Aggregate,
) -> tuple[tuple[tuple[str, AggCall], ...], tuple[Merge, ...]]:
    """The partial aggregates of ``agg`` (plus ``__rows``) and how to merge them."""
    partials: list[tuple[str, AggCall]] = []
    merges: list[Merge] = []
    for i, (name, call) in enumerate(agg.aggs):
        if call.fn == "avg":
            s, c = f"__p{i}_sum", f"__p{i}_count"
            partials += [(s, replace(call, fn="sum")), (c, replace(call, fn="count"))]
            merges.append(Merge(name, "avg", (s, c)))
            continue
        col = f"__p{i}"
        partials.append((col, call))
        kind: MergeKind = "min" if call.fn == "min" else "max" if call.fn == "max" else "sum"
        merges.append(Merge(name, kind, (col,)))
    partials.append((ROWS, AggCall("count_star")))
    return tuple(partials), tuple(merges)


def _not_decomposable(agg: n.Aggregate) -> str:
    """Why ``agg`` cannot be merged from per-split partials ("" if it can)."""
    if agg.emit != "final":
        return "EMIT CHANGES emits after every batch"
    if agg.window is not None and agg.window.kind != "tumbling":
        return f"{agg.window.kind.upper()} windows"
    if agg.late_strategy != "drop":
        return "late rows go to the DLQ"
    bad = sorted({c.fn for _, c in agg.aggs if c.fn not in DECOMPOSABLE or c.distinct})
    if bad:
        return f"aggregates {', '.join(bad)} do not merge"
    sums = sorted({c.fn.upper() for _, c in agg.aggs if c.fn in ("sum", "avg")})
    if sums:
        return f"{'/'.join(sums)} partials would add in another order than V1"
    return ""


def _stateful(node: n.Node) -> bool:
    return isinstance(node, n.Aggregate | n.RowsWindow | n.Distinct | n.Limit | n.Sort)


def _leads(node: n.RowsWindow) -> bool:
    return any(call.fn == "lead" for _, call in node.funcs)


def _consumed_columns(nodes: list[n.Node]) -> set[str] | None:
    """Input columns the nodes (bottom first) read before one of them replaces
    its input's columns (an aggregate, a SELECT list); None: all of them."""
    out: set[str] = set()
    made: set[str] = set()  # columns the nodes add (ROWS functions)
    for node in nodes:
        if isinstance(node, n.Project) and node.star:
            return None
        out |= _node_columns(node) - made
        if isinstance(node, n.Aggregate | n.Project):
            return out
        if isinstance(node, n.RowsWindow):
            made |= {name for name, _ in node.funcs}
    return None


def _node_columns(node: n.Node) -> set[str]:
    out: set[str] = set()
    if isinstance(node, n.Filter):
        out |= columns_of(node.predicate)
    elif isinstance(node, n.Project):
        for _, e in node.exprs:
            out |= columns_of(e)
    elif isinstance(node, n.Aggregate):
        for _, e in node.keys:
            out |= columns_of(e)
        for _, call in node.aggs:
            for a in call.args:
                out |= columns_of(a)
        if node.window is not None and node.window.time_column:
            out.add(node.window.time_column)
    elif isinstance(node, n.RowsWindow):
        for _, w in node.funcs:
            for a in (*w.args, *([w.default] if w.default is not None else [])):
                out |= columns_of(a)
        for e in node.partition_by:
            out |= columns_of(e)
        for e, _ in node.order_by:
            out |= columns_of(e)
    return out


def _rebuild(nodes: list[n.Node], base: n.Node) -> n.Node | None:
    """Re-chain ``nodes`` (bottom first) on top of ``base``; None when empty."""
    if not nodes:
        return None
    node = base
    for x in nodes:
        node = replace(x, input=node)  # type: ignore[call-arg,type-var]
    return node


def _upper_statement(statement: n.Statement, root: n.Node) -> n.Statement:
    return replace(statement, plan=root)


def reads_column(statement: n.Statement, name: str) -> bool:
    """True when any expression of the plan reads column ``name``."""
    return name in repr(statement.plan)  # plan nodes are frozen dataclasses: repr is exhaustive
