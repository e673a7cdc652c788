"""Helpers operators share to split and merge their state by routing key.

Each operator owns its snapshot's format and splits and merges it itself
(:class:`flowsql.exec.operator.Stateful`). Tables that hold key values
(aggregate groups, DISTINCT rows) split by routing those values through the
router, exactly as live rows are routed, and merge by concatenation, since the
parts hold disjoint keys. Plain values are settings (equal everywhere) or
event-time maxima, so a merge keeps their maximum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import pyarrow as pa

from flowsql.errors import ExecutionError
from flowsql.exec.operator import KeyRouter

Table: TypeAlias = pa.Table | pa.RecordBatch


def key_columns(
    names: Sequence[str], router: KeyRouter, aliases: Mapping[str, str] | None = None
) -> list[str] | None:
    """The state columns holding ``router.key_columns``, in key order, or None
    when one is missing.

    Args:
        names: the state table's columns.
        router: gives the routing key (input column names).
        aliases: input column -> the name the operator stores it under.
    """
    have = set(names)
    aliases = aliases or {}
    columns = [c if c in have else aliases.get(c, c) for c in router.key_columns]
    if not router.key_columns or not all(c in have for c in columns):
        return None
    return columns


def split_table(table: Table, columns: list[str] | None, router: KeyRouter) -> list[Table]:
    """``table`` cut into one table per partition by the key values in ``columns``.

    Raises:
        ExecutionError: ``columns`` is None (the table lacks the routing key)
            and the table holds rows, which therefore cannot be placed.
    """
    parts = router.num_partitions
    if columns is None:
        if table.num_rows:
            raise ExecutionError(
                "cannot re-partition operator state: a state table lacks the routing"
                f" key ({', '.join(router.key_columns)}); columns: {', '.join(table.schema.names)}"
            )
        return [table] * parts
    ids = router.partitions_of([table.column(c) for c in columns])
    return [table.filter(pa.array(ids == p)) for p in range(parts)]


def concat_tables(tables: Sequence[Table | None]) -> pa.Table | None:
    """The rows of every table (None when there is none)."""
    known = [pa.table(t) if isinstance(t, pa.RecordBatch) else t for t in tables if t is not None]
    if not known:
        return None
    if len(known) == 1:
        return known[0]
    return pa.concat_tables(known, promote_options="permissive")


def merge_values(states: Sequence[Any]) -> Any:
    """Merge the same part of several states (keys disjoint): tables are
    concatenated, dicts and equally long lists merged item by item, numbers
    maxed, anything else taken from the first state that has it."""
    first = states[0]
    if len(states) == 1:
        return first
    if isinstance(first, pa.Table | pa.RecordBatch):
        return concat_tables(states)
    if isinstance(first, dict):
        return {k: merge_values([st[k] for st in states]) for k in first}
    if isinstance(first, list | tuple):
        states = [x for x in states if len(x)] or [first]
        first = states[0]
        if all(len(x) == len(first) for x in states):
            merged = [merge_values([st[i] for st in states]) for i in range(len(first))]
            return type(first)(merged) if isinstance(first, tuple) else merged
    return _merge_plain(states)


def _merge_plain(values: Sequence[Any]) -> Any:
    known = [v for v in values if v is not None]
    if not known:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in known):
        return max(known)
    return known[0]


def whole(state: dict[str, Any], router: KeyRouter, why: str) -> list[dict[str, Any]]:
    """The split of a state that belongs to the whole stream: only possible
    onto one partition."""
    if router.num_partitions != 1:
        raise ExecutionError(f"cannot split operator state over partitions: {why}")
    return [state]
