"""ROWS window snapshots cut by partition id and put back together.

``RowsWindowOp.snapshot()`` (``flowsql.exec.rows``) is indexed by dense
partition id (a PARTITION BY value), ``size`` ids in all::

    {"size": int,
     "keys": [pa.Array per PARTITION BY expression, by id],
     "count": rows released, by id,
     "tail": {"start", "length": by id, "cols": slabs (data, valid, type, kind)},
     "funcs": [per function: dicts of arrays by id, or (array by id, identity)],
     "pending": rows held back for LEAD (arrival order) or None,
     "pending_order": their computation order}

Function arrays may be shorter than ``size``: they cover a prefix of the ids.
Splitting selects ids (and held-back rows) per partition and renumbers them
densely; merging concatenates, shifting tail offsets and held-back order.
Everything is numpy/Arrow gathers: no loop over ids or rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from flowsql.exec.rowkernels import ranges
from flowsql.records import ARRIVAL


def select(state: dict[str, Any], ids: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    """The part of ``state`` made of partition ``ids`` and held-back rows ``held``,
    ids renumbered ``0..len(ids)``."""
    size = int(state["size"])
    tail = state["tail"]
    lengths = tail["length"][ids]
    rows = np.repeat(tail["start"][ids], lengths) + ranges(lengths)
    pending = state["pending"]
    order = np.asarray(state["pending_order"])
    return {
        **state,
        "size": len(ids),
        "keys": [k.take(pa.array(ids)) for k in state["keys"]] if size else state["keys"],
        "count": state["count"][ids],
        "tail": {
            "start": np.cumsum(lengths) - lengths,
            "length": lengths,
            "cols": [_take_slab(c, rows) for c in tail["cols"]],
        },
        "funcs": [_take_by_id(f, ids) for f in state["funcs"]],
        "pending": None if pending is None or not len(held) else pending.take(pa.array(held)),
        "pending_order": np.argsort(np.argsort(order[held], kind="stable"), kind="stable"),
    }


def concat(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """States of disjoint partitions as one, ids numbered in the order given;
    held-back rows carrying ``__arrival`` are put back in arrival order without it."""
    sizes = [int(st["size"]) for st in states]
    used = [int(np.sum(st["tail"]["length"])) for st in states]
    compact = [
        select(st, np.arange(sz), np.arange(held(st))) for st, sz in zip(states, sizes, strict=True)
    ]
    keyed = [st for st in compact if st["size"]]
    width = len(states[0]["tail"]["cols"])
    offsets = np.cumsum([0, *used[:-1]])
    pending = [st["pending"] for st in compact if st["pending"] is not None]
    orders = [st["pending_order"] for st in compact if st["pending"] is not None]
    bases = np.cumsum([0, *(len(o) for o in orders[:-1])])
    merged = {
        **states[0],
        "size": sum(sizes),
        "keys": _concat_keys([st["keys"] for st in keyed]) if keyed else states[0]["keys"],
        "count": np.concatenate([st["count"] for st in compact]),
        "tail": {
            "start": np.concatenate(
                [st["tail"]["start"] + off for st, off in zip(compact, offsets, strict=True)]
            ),
            "length": np.concatenate([st["tail"]["length"] for st in compact]),
            "cols": [
                _concat_slabs([st["tail"]["cols"][i] for st in compact]) for i in range(width)
            ],
        },
        "funcs": [
            _concat_by_id([st["funcs"][i] for st in compact], sizes)
            for i in range(len(states[0]["funcs"]))
        ],
        "pending": pa.concat_batches(pending) if pending else None,
        "pending_order": np.concatenate([o + b for o, b in zip(orders, bases, strict=True)])
        if orders
        else np.zeros(0, np.int64),
    }
    return by_arrival(merged)


def numbered(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` whose held-back rows (in arrival order) carry ``__arrival``
    numbers below zero, so they sort before the rows routed after a restore."""
    pending = state["pending"]
    if pending is None or ARRIVAL in pending.schema.names:
        return state
    numbers = np.arange(-pending.num_rows, 0, dtype=np.int64)
    return {**state, "pending": pending.append_column(ARRIVAL, pa.array(numbers))}


def by_arrival(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with held-back rows back in arrival order, without ``__arrival``
    (the partition-independent format)."""
    pending = state["pending"]
    if pending is None or ARRIVAL not in pending.schema.names:
        return state
    perm = np.argsort(pending.column(ARRIVAL).to_numpy(), kind="stable")
    pending = pending.drop_columns([ARRIVAL]).take(pa.array(perm))
    return {**state, "pending": pending, "pending_order": state["pending_order"][perm]}


def held(state: dict[str, Any]) -> int:
    """Number of held-back rows."""
    pending = state["pending"]
    return 0 if pending is None else int(pending.num_rows)


def _take_slab(slab: Any, rows: np.ndarray) -> Any:
    if slab is None:
        return None
    data, valid, *rest = slab
    return (data[rows], valid[rows], *rest)


def _take_by_id(value: Any, ids: np.ndarray) -> Any:
    """Select ids from every array indexed by partition id (a shorter array
    covers a prefix of the ids)."""
    if isinstance(value, np.ndarray):
        return value[ids[ids < len(value)]]
    if isinstance(value, dict):
        return {k: _take_by_id(v, ids) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_take_by_id(v, ids) for v in value)
    return value


def _concat_keys(keys: list[list[Any]]) -> list[Any]:
    return [pa.concat_arrays([_plain(k[i]) for k in keys]) for i in range(len(keys[0]))]


def _plain(arr: Any) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _concat_slabs(slabs: list[Any]) -> Any:
    known = [s for s in slabs if s is not None]
    if not known:
        return None
    data = np.concatenate([s[0] for s in known])
    valid = np.concatenate([s[1] for s in known])
    return (data, valid, *known[0][2:])


def _concat_by_id(values: list[Any], sizes: list[int]) -> Any:
    """Concatenate per-id values; a value missing (None) from a state, e.g. a
    function that has not started on a partition that saw no row, is blank."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, np.ndarray):
        blank = np.zeros(0, first.dtype)
        arrays = [
            _pad(blank if v is None else v, sz, 0) for v, sz in zip(values, sizes, strict=True)
        ]
        return np.concatenate(arrays)
    if isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], np.ndarray):
        blank, ident = np.zeros(0, first[0].dtype), first[1]
        arrays = [
            _pad(blank if v is None else v[0], sz, ident)
            for v, sz in zip(values, sizes, strict=True)
        ]
        return (np.concatenate(arrays), ident)
    if isinstance(first, dict):
        keys = dict.fromkeys(k for v in values if v is not None for k in v)
        return {
            k: _concat_by_id([None if v is None else v.get(k) for v in values], sizes) for k in keys
        }
    return first


def _pad(arr: np.ndarray, size: int, fill: Any) -> np.ndarray:
    if len(arr) >= size:
        return arr[:size]
    return np.concatenate([arr, np.full(size - len(arr), fill, dtype=arr.dtype)])
