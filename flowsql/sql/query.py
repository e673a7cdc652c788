"""What the planning steps share about one SELECT: its text, its SELECT list
with output names, and whether it is windowed."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from flowsql.errors import PlanError, UnsupportedError
from flowsql.plan.expr import Col, Expr, Pos
from flowsql.sql.dialect import StreamWindow
from flowsql.sql.exprs import pos_of
from flowsql.sql.windows import WINDOW_COLUMN_ALIASES


@dataclass(frozen=True)
class SelectItem:
    """One SELECT-list entry: its output name and expression."""

    name: str
    node: exp.Expr
    aliased: bool = False


@dataclass
class Query:
    """A SELECT being planned."""

    sql: str
    select: exp.Select
    items: list[SelectItem] = field(default_factory=list)
    star: bool = False
    window: StreamWindow | None = None

    def error(self, message: str, node: exp.Expr, hint: str = "") -> PlanError:
        """A PlanError at ``node``."""
        pos = pos_of(self.sql, node)
        return PlanError(message, line=pos.line, column=pos.column, hint=hint)

    def unsupported(self, message: str, node: exp.Expr, hint: str = "") -> PlanError:
        """An UnsupportedError at ``node``."""
        pos = pos_of(self.sql, node)
        return UnsupportedError(message, line=pos.line, column=pos.column, hint=hint)

    @property
    def windowed(self) -> bool:
        return self.window is not None

    def window_column(self, name: str, pos: Pos) -> Expr | None:
        """``Col('_window_start')`` for window_start & co. in a windowed query."""
        target = WINDOW_COLUMN_ALIASES.get(name.lower()) if self.windowed else None
        return Col(target, pos) if target else None

    def item_named(self, name: str) -> SelectItem | None:
        """The SELECT item whose output name is ``name``."""
        return next((i for i in self.items if i.name == name), None)


def select_items(query: Query) -> None:
    """Fill ``query.items`` and ``query.star`` from the SELECT list.

    Raises:
        PlanError: an alias that names another output column too (a generated
            name that collides is made unique instead: ``a``, ``a_1``).
    """
    used: set[str] = set()
    seen: dict[str, bool] = {}  # output name as written -> aliased
    for node in query.select.expressions:
        if _is_star(node):
            if query.star:
                raise query.error("SELECT * may appear only once", node)
            query.star = True
            continue
        name, inner, aliased = _name_of(node, query.sql)
        if name in seen and (aliased or seen[name]):
            raise query.error(
                f"the SELECT list has two output columns named '{name}'",
                node,
                hint="give each output column its own alias",
            )
        seen[name] = seen.get(name, False) or aliased
        query.items.append(SelectItem(_unique(name, used), inner, aliased))


def _is_star(node: exp.Expr) -> bool:
    return isinstance(node, exp.Star) or (
        isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
    )


def _name_of(node: exp.Expr, sql: str) -> tuple[str, exp.Expr, bool]:
    """Output name: the alias; a column's name; a function's name as written
    (``COUNT(*)`` -> ``count``); else the expression's SQL text."""
    if isinstance(node, exp.Alias):
        return node.alias, node.this, True
    if isinstance(node, exp.Column):
        return node.name, node, False
    func = node.this if isinstance(node, exp.Window) else node
    if isinstance(func, exp.Func) and func.meta.get("start") is not None:
        word = sql[int(func.meta["start"]) : int(func.meta["end"]) + 1]
        if word.replace("_", "a").isalnum():
            return word.lower(), node, False
    return node.sql(comments=False), node, False


def _unique(name: str, used: set[str]) -> str:
    out, n = name, 1
    while out in used:
        out = f"{name}_{n}"
        n += 1
    used.add(out)
    return out
