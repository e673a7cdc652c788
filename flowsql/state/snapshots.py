"""Aggregate operator snapshots: format check and re-partitioning by key.

The format is documented in :mod:`flowsql.exec.aggregate`: scalar settings
plus one ``groups`` table holding every live (group, window) state row by key
*values*, so a snapshot splits by filtering rows and merges by concatenating.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from flowsql.errors import ExecutionError

SNAPSHOT_FORMAT = "flowsql.aggregate/1"


def split_snapshot(
    state: dict[str, Any],
    partition: np.ndarray | Callable[[pa.Table], np.ndarray],
    partitions: int | None = None,
) -> list[dict[str, Any]]:
    """Split an aggregate snapshot by key, e.g. to move a job to more partitions.

    Args:
        state: an ``AggregateOp.snapshot()``.
        partition: the partition of each state row, or a function from the
            key columns (a ``pa.Table``) to that array (e.g. the router's hash).
        partitions: number of parts (default: max partition + 1).

    Returns:
        One snapshot per partition; restore each into its partition's operator.
    """
    groups: pa.Table = state["groups"]
    part = partition(groups.select(state["keys"])) if callable(partition) else partition
    part = np.asarray(part, dtype=np.int64)
    count = partitions if partitions is not None else (int(part.max()) + 1 if len(part) else 1)
    return [dict(state, groups=groups.filter(pa.array(part == i))) for i in range(count)]


def check_snapshot(state: dict[str, Any], state_key: str) -> None:
    """Refuse a snapshot that is not an aggregate's or is for another query."""
    if state.get("format") != SNAPSHOT_FORMAT:
        raise ExecutionError(f"not an aggregate snapshot (format {state.get('format')!r})")
    if state.get("state_key") != state_key:
        raise ExecutionError(
            f"snapshot is for {state.get('state_key')}, not {state_key}: the query changed"
        )
