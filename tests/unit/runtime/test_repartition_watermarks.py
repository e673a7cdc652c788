"""Watermarks across a repartition hop, without a broker: rows of three source
partitions, each in event-time order but read one partition after another,
are routed by the GROUP BY key to two readers (through the same Arrow IPC
encoding the internal topic uses). Each reader declares the source partitions,
so none of its rows is late, and the end markers close the last windows."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from flowsql.connectors.kafka.repartition import from_ipc, to_ipc
from flowsql.runtime.processor import SimpleJobProcessor
from flowsql.runtime.router import HashRouter
from flowsql.sql import parse_one

SQL = (
    "SELECT symbol, COUNT(*) AS n, _window_start AS ws FROM trades"
    " GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
)
START = 1_700_000_000_000


def _partition(part: int, n: int) -> pa.RecordBatch:
    """One source partition: every third trade of an event-time-ordered stream."""
    idx = range(part, 3 * n, 3)
    return pa.record_batch(
        {
            "symbol": pa.array([f"S{i % 4}" for i in idx]),
            "ts": pa.array([START + 7 * i for i in idx], pa.int64()),
            "_partition": pa.array([part] * n, pa.int32()),
        }
    )


def _run(declare: bool) -> tuple[Counter[tuple[str, int]], int]:
    readers = [SimpleJobProcessor(parse_one(SQL)) for _ in range(2)]
    if declare:
        for reader in readers:
            reader.expect_partitions([0, 1, 2])
    router = HashRouter(("symbol",), 2)
    out: list[pa.RecordBatch] = []
    for part in (2, 0, 1):  # partition 2 read first, to its end
        batch = _partition(part, 2000)
        for reader, piece in zip(readers, router.split(batch), strict=True):
            out += reader.process_batch(from_ipc(to_ipc(piece)))
        if declare:
            for reader in readers:
                out += reader.end_partition(part)
    for reader in readers:
        out += reader.flush()
    counts: Counter[tuple[str, int]] = Counter()
    for b in out:
        for row in b.to_pylist():
            counts[(row["symbol"], row["ws"])] += row["n"]
    return counts, sum(r.metrics.late_records for r in readers)


def _expected() -> Counter[tuple[str, int]]:
    want: Counter[tuple[str, int]] = Counter()
    for i in range(6000):
        want[(f"S{i % 4}", (START + 7 * i) // 1000 * 1000)] += 1
    return want


def test_readers_that_declare_the_source_partitions_lose_nothing() -> None:
    counts, late = _run(declare=True)
    assert late == 0
    assert counts == _expected()


def test_without_declared_partitions_the_first_partition_read_makes_the_others_late() -> None:
    counts, late = _run(declare=False)
    assert late > 0  # what the declaration prevents
    assert counts != _expected()
