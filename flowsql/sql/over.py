"""OVER (...) window functions over ROWS frames -> a ``RowsWindow`` node.

Every OVER call of a query must share one PARTITION BY and ORDER BY: the
node keeps one ordered buffer per partition key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

from flowsql.plan.expr import Col, Expr, WinCall
from flowsql.plan.nodes import Node, RowsWindow
from flowsql.sql.exprs import Scope, pos_of, translate
from flowsql.sql.query import Query

_FUNCTIONS: dict[type[exp.Expr], str] = {
    exp.Lag: "lag",
    exp.Lead: "lead",
    exp.RowNumber: "row_number",
    exp.Rank: "rank",
    exp.DenseRank: "dense_rank",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Count: "count",
}
_OFFSET_FUNCTIONS = ("lag", "lead")


@dataclass
class RowsWindows:
    """Collects the OVER calls of one query."""

    query: Query
    funcs: list[tuple[str, WinCall]] = field(default_factory=list)
    partition_by: tuple[Expr, ...] | None = None
    order_by: tuple[tuple[Expr, bool], ...] = ()

    def column(self, node: exp.Expr, preferred: str = "") -> Expr:
        """Register the OVER call ``node``; return the column holding its value."""
        assert isinstance(node, exp.Window)
        self._share_spec(node)
        call = self._call(node)
        taken = {name for name, _ in self.funcs}
        name = preferred if preferred and preferred not in taken else f"_win{len(self.funcs)}"
        self.funcs.append((name, call))
        return Col(name, call.pos)

    def hook(self, top: exp.Expr, name: str) -> Callable[[exp.Expr], Expr]:
        """The ``Scope.on_window`` hook for the SELECT item ``top`` named ``name``."""
        return lambda node: self.column(node, name if node is top else "")

    def node(self, input_node: Node) -> Node:
        """``RowsWindow`` over ``input_node`` when there were OVER calls."""
        if not self.funcs:
            return input_node
        return RowsWindow(input_node, tuple(self.funcs), self.partition_by or (), self.order_by)

    def _row_scope(self) -> Scope:
        return Scope(self.query.sql, where="OVER (...)")

    def _share_spec(self, node: exp.Window) -> None:
        if node.args.get("alias") or (node.this is None):
            raise self.query.unsupported("named windows (OVER w) are not supported", node)
        scope = self._row_scope()
        partition = tuple(translate(p, scope) for p in node.args.get("partition_by") or [])
        order = node.args.get("order")
        ordered = tuple(
            (translate(o.this, scope), not o.args.get("desc"))
            for o in (order.expressions if order else [])
        )
        if self.partition_by is None:
            self.partition_by, self.order_by = partition, ordered
        elif (partition, ordered) != (self.partition_by, self.order_by):
            raise self.query.error(
                "all OVER (...) clauses of a query must use the same PARTITION BY and ORDER BY",
                node,
                hint="split the query, or give every window function the same OVER (...)",
            )

    def _call(self, node: exp.Window) -> WinCall:
        func = node.this
        fn = _FUNCTIONS.get(type(func))
        if fn is None:
            raise self.query.unsupported(
                f"unsupported window function {func.sql()}",
                node,
                hint="use LAG, LEAD, ROW_NUMBER, RANK, DENSE_RANK, SUM, AVG, MIN, MAX or COUNT",
            )
        pos = pos_of(self.query.sql, node)
        scope = self._row_scope()
        if fn in _OFFSET_FUNCTIONS:
            offset = self._offset(func)
            default = func.args.get("default")
            value = translate(func.this, scope)
            fallback = translate(default, scope) if default is not None else None
            return WinCall(fn, (value,), None, offset, fallback, pos)
        if fn == "count" and (func.this is None or isinstance(func.this, exp.Star)):
            return WinCall("count_star", (), self._preceding(node), pos=pos)
        args = (translate(func.this, scope),) if func.this is not None else ()
        return WinCall(fn, args, self._preceding(node), pos=pos)

    def _offset(self, func: exp.Expr) -> int:
        offset = func.args.get("offset")
        if offset is None:
            return 1
        if not (isinstance(offset, exp.Literal) and offset.this.isdigit()):
            raise self.query.error("LAG/LEAD offset must be a whole number", offset)
        return int(offset.this)

    def _preceding(self, node: exp.Window) -> int | None:
        """Rows before the current one in the frame; None = UNBOUNDED PRECEDING."""
        spec = node.args.get("spec")
        if spec is None:
            return None
        if str(spec.args.get("kind", "")).upper() != "ROWS":
            raise self.query.unsupported(
                "only ROWS frames are supported",
                node,
                hint="use ROWS BETWEEN n PRECEDING AND CURRENT ROW",
            )
        end = spec.args.get("end")
        if end is not None and str(end).upper() != "CURRENT ROW":
            raise self.query.unsupported("frames must end at CURRENT ROW", node)
        return self._frame_start(spec, node)

    def _frame_start(self, spec: exp.Expr, node: exp.Window) -> int | None:
        start = spec.args.get("start")
        side = str(spec.args.get("start_side") or "").upper()
        if isinstance(start, str):
            if start.upper() == "UNBOUNDED":
                return None
            if start.upper() == "CURRENT ROW":
                return 0
        if isinstance(start, exp.Literal) and start.this.isdigit() and side == "PRECEDING":
            return int(start.this)
        raise self.query.unsupported(
            "unsupported frame start", node, hint="use n PRECEDING or UNBOUNDED PRECEDING"
        )
