"""Re-sharding job state between partition counts, through the operators.

An ``Engine.snapshot()`` holds one state per operator (``"operators"``, in
chain order) plus engine values: the max event time and the watermarks per
input partition (``"event_time"``, owned by ``flowsql.exec.watermarks``). Each
operator owns its state's format and splits and merges it by routing key
(:class:`flowsql.exec.operator.Stateful`); this module only walks the chain,
so V2 moves a job between V1 and any partition count without reading an
operator's state. The watermarks belong to the whole input: every partition
gets a copy, and a merge combines the copies (a V2 coordinator then puts its
own, the one that counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowsql.exec.operator import KeyRouter, Stateful
from flowsql.exec.state import merge_values
from flowsql.exec.watermarks import SNAPSHOT_KEY, merge_snapshots


def split_state(
    state: dict[str, Any],
    operators: Sequence[Stateful],
    router: KeyRouter,
    *,
    arrival: bool = False,
) -> list[dict[str, Any]]:
    """One engine snapshot per partition of ``router``: every operator splits
    its own state by key.

    Args:
        state: an ``Engine.snapshot()`` (V1's, or merged from V2's partitions).
        operators: an operator chain of the same plan (only their ``split`` is
            called; their own state is not used).
        router: the partitioning to split for.
        arrival: the partitions number input rows in ``__arrival`` (see
            ``flowsql.runtime.ordering``).
    """
    parts = router.num_partitions
    if parts == 1:
        return [state]
    per_op = [
        op.split(op_state, router, arrival=arrival)
        for op, op_state in zip(operators, state["operators"], strict=True)
    ]
    return [{**state, "operators": [ops[p] for ops in per_op]} for p in range(parts)]


def merge_states(
    states: Sequence[dict[str, Any]], operators: Sequence[Stateful], router: KeyRouter
) -> dict[str, Any]:
    """One engine snapshot from those of the partitions of ``router``
    (``states[p]`` is partition ``p``'s), restorable by any partition count.

    Each operator keeps from partition ``p`` only the keys ``p`` owns (its part
    of its own ``split``): an operator may hold empty entries for keys it saw
    in a dictionary but never received rows for. Engine values are maxed, the
    watermark clocks merged (``flowsql.exec.watermarks.merge_snapshots``).
    """
    if len(states) == 1:
        return dict(states[0])
    ops = [
        op.merge([op.split(st["operators"][i], router)[p] for p, st in enumerate(states)])
        for i, op in enumerate(operators)
    ]
    own = ("operators", SNAPSHOT_KEY)
    rest = [{k: v for k, v in st.items() if k not in own} for st in states]
    merged = dict(merge_values(rest))
    merged["operators"] = ops
    clocks = [st[SNAPSHOT_KEY] for st in states if SNAPSHOT_KEY in st]
    if clocks:
        merged[SNAPSHOT_KEY] = merge_snapshots(clocks)
    return merged
