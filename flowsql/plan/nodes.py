"""Frozen logical plan nodes.

A query is a chain of nodes from a :class:`Scan` up to the root. Each node
compiles to exactly one operator in ``flowsql.exec`` (dispatch on node type).

Output columns of each node:

- ``Scan``: the source's columns plus the system columns ``_timestamp`` (event
  time, epoch ms int64), ``_key``, ``_partition``, ``_offset`` when the source
  provides them. ``_timestamp`` is always present after the engine's input
  normalisation.
- ``Filter``: its input's columns.
- ``Project``: exactly ``exprs`` in order (system columns are dropped unless
  selected; ``SELECT *`` expands to non-system columns at plan time).
- ``Aggregate``: ``keys`` then, when windowed, ``_window_start`` and
  ``_window_end`` (int64 epoch ms), then ``aggs``; plus ``_timestamp`` (= the
  window end - 1 for windowed results, else the max event time of the group)
  so downstream time semantics stay defined. HAVING is a ``Filter`` and the
  SELECT list a ``Project`` above it.
- ``RowsWindow``: its input's columns plus one column per function.
- ``Distinct``/``Limit``/``Sort``: their input's columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowsql.plan.expr import AggCall, Expr, WinCall

EmitMode = Literal["changes", "final"]
WindowKind = Literal["tumbling", "sliding", "session"]
LateStrategy = Literal["drop", "dlq"]


class Node:
    """Base of all plan nodes."""

    def children(self) -> tuple[Node, ...]:
        inp = getattr(self, "input", None)
        return (inp,) if isinstance(inp, Node) else ()


@dataclass(frozen=True)
class Scan(Node):
    """Read the stream named ``source`` (the FROM name)."""

    source: str
    columns: tuple[str, ...] = ()  # known input columns, empty when not known at plan time


@dataclass(frozen=True)
class Filter(Node):
    input: Node
    predicate: Expr


@dataclass(frozen=True)
class Project(Node):
    """Compute the SELECT list. ``star`` = ``SELECT *`` when the input columns are not
    known at plan time: all non-system input columns come first, then ``exprs``."""

    input: Node
    exprs: tuple[tuple[str, Expr], ...]
    star: bool = False


@dataclass(frozen=True)
class WindowSpec:
    """An event-time window. Sizes in ms. ``time_column`` None = the engine's
    event-time column (``_timestamp``)."""

    kind: WindowKind
    size_ms: int = 0
    advance_ms: int = 0  # sliding only
    gap_ms: int = 0  # session only
    time_column: str | None = None

    def __post_init__(self) -> None:
        if self.kind in ("tumbling", "sliding") and self.size_ms <= 0:
            raise ValueError(f"{self.kind.upper()} window size must be positive")
        if self.kind == "sliding" and not 0 < self.advance_ms <= self.size_ms:
            raise ValueError("SLIDING advance must be positive and at most the window size")
        if self.kind == "session" and self.gap_ms <= 0:
            raise ValueError("SESSION gap must be positive")


@dataclass(frozen=True)
class Aggregate(Node):
    """GROUP BY ``keys`` (possibly none) with aggregates, optionally windowed.

    ``emit`` is "final" (one row per group and window when it closes / at end of
    input) or "changes" (after each batch, the current row of each group that
    changed). ``allowed_lateness_ms`` and ``late_strategy`` come from WITH.
    """

    input: Node
    keys: tuple[tuple[str, Expr], ...]
    aggs: tuple[tuple[str, AggCall], ...]
    window: WindowSpec | None = None
    emit: EmitMode = "final"
    allowed_lateness_ms: int = 0
    late_strategy: LateStrategy = "drop"


@dataclass(frozen=True)
class RowsWindow(Node):
    """Window functions over ROWS frames, per partition, in order of ``order_by``
    (arrival order within a partition when empty). State carries across batches."""

    input: Node
    funcs: tuple[tuple[str, WinCall], ...]
    partition_by: tuple[Expr, ...] = ()
    order_by: tuple[tuple[Expr, bool], ...] = ()  # (expr, ascending)


@dataclass(frozen=True)
class Distinct(Node):
    """SELECT DISTINCT: emit the first occurrence of each row."""

    input: Node


@dataclass(frozen=True)
class Limit(Node):
    """Stop after ``n`` rows (the job ends when reached)."""

    input: Node
    n: int


@dataclass(frozen=True)
class Sort(Node):
    """ORDER BY: on a bounded input, a total order at end of input; on each
    emitted batch of a streaming job otherwise."""

    input: Node
    keys: tuple[tuple[Expr, bool, bool], ...]  # (expr, ascending, nulls_first)


@dataclass(frozen=True)
class Statement:
    """One parsed and planned SQL statement.

    ``kind`` is "select", "stream" (CREATE STREAM name AS) or "table" (CREATE
    TABLE name AS); ``name`` is the created name (or "query" for a bare SELECT).
    ``properties`` are the trailing WITH ('k'='v') pairs; ``annotations`` the
    ``-- @key: value`` comments before the statement. ``sql`` is the statement
    text and ``line`` its first line in the file.
    """

    plan: Node
    kind: Literal["select", "stream", "table"] = "select"
    name: str = "query"
    properties: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    sql: str = ""
    line: int = 1

    @property
    def sources(self) -> tuple[str, ...]:
        """FROM names, in plan order."""
        out: list[str] = []
        stack: list[Node] = [self.plan]
        while stack:
            node = stack.pop()
            if isinstance(node, Scan):
                out.append(node.source)
            stack.extend(node.children())
        return tuple(out)


def walk(node: Node) -> list[Node]:
    """Nodes from the root down to the scan."""
    out = [node]
    while node.children():
        node = node.children()[0]
        out.append(node)
    return out
