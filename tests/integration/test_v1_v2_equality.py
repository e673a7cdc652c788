"""V1 and V2 give the same rows: routed (process_batch) at 1, 2, 3 and 8
partitions, source-parallel (run_splits) over a JSONL file, with late data,
and after a mid-stream switch from V1 to V2 with 3 partitions."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flowsql.engine import Engine
from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.processor import SimpleJobProcessor
from flowsql.runtime.splits import jsonl_splits
from flowsql.sql import parse_one
from tests.differential.harness import run_processor

T0 = 1_700_000_000_000
BATCH = 250

QUERIES = {
    "filter": "SELECT symbol, price, qty FROM trades WHERE qty > 25 AND price < 60",
    "group_changes": "SELECT symbol, COUNT(*) AS n, SUM(qty) AS q FROM trades GROUP BY symbol",
    "tumbling": (
        "SELECT symbol, COUNT(*) AS n, AVG(price) AS p, MIN(qty) AS lo, MAX(qty) AS hi"
        " FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
    ),
    "tumbling_having": (
        "SELECT symbol, _window_start, SUM(qty) AS q FROM trades GROUP BY symbol"
        " WINDOW TUMBLING(ts, INTERVAL '500' MILLISECOND) HAVING SUM(qty) > 40"
    ),
    "sliding": (
        "SELECT symbol, COUNT(*) AS n, MAX(price) AS p FROM trades GROUP BY symbol"
        " WINDOW SLIDING(ts, INTERVAL '1' SECOND, INTERVAL '500' MILLISECOND)"
    ),
    "session": (
        "SELECT symbol, COUNT(*) AS n, SUM(qty) AS q FROM trades GROUP BY symbol"
        " WINDOW SESSION(ts, INTERVAL '20' MILLISECOND)"
    ),
    "rows_partitioned": (
        "SELECT symbol, qty, SUM(qty) OVER (PARTITION BY symbol"
        " ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3 FROM trades"
    ),
    "rows_lead_lag": (
        "SELECT symbol, qty, LEAD(qty) OVER (PARTITION BY symbol) AS nxt,"
        " LAG(qty, 2) OVER (PARTITION BY symbol) AS prv,"
        " ROW_NUMBER() OVER (PARTITION BY symbol) AS rn FROM trades"
    ),
    "global": (
        "SELECT COUNT(*) AS n, SUM(qty) AS q, MAX(price) AS p FROM trades"
        " WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
    ),
    "limit": "SELECT symbol, qty FROM trades WHERE qty > 10 LIMIT 37",
    "distinct": "SELECT DISTINCT symbol FROM trades",
    "late_lateness": (
        "SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol"
        " WINDOW TUMBLING(ts, INTERVAL '200' MILLISECOND)"
        " WITH ('watermark.allowed_lateness' = '50ms')"
    ),
}

#: Queries whose result is a changelog: compare the last row of each key.
CHANGES = {"group_changes"}


def trades(rows: int = 4_000, seed: int = 7) -> pa.Table:
    """Trades with ~5% of rows up to 1.5 s late, so some windows see late data."""
    rng = np.random.default_rng(seed)
    late = (rng.random(rows) < 0.05) * rng.integers(0, 1_500, rows)
    return pa.table(
        {
            # dictionary-encoded like the generator's: every partition sees every value
            "symbol": pa.array([f"S{i}" for i in rng.integers(0, 11, rows)]).dictionary_encode(),
            "price": np.round(rng.uniform(1, 100, rows), 2),
            "qty": rng.integers(1, 50, rows),
            "ts": T0 + np.arange(rows, dtype=np.int64) * 3 - late,
        }
    )


def canonical(rows: list[dict[str, Any]], sql_name: str) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples; floats rounded (partial merges may differ in the last bits)."""
    if sql_name in CHANGES:
        last: dict[Any, dict[str, Any]] = {}
        for r in rows:
            last[r["symbol"]] = r
        rows = list(last.values())
    out = []
    for r in rows:
        out.append(
            tuple(
                (k, round(v, 9) if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in sorted(r.items())
            )
        )
    return sorted(out, key=repr)


def run(processor: Any, table: pa.Table) -> list[dict[str, Any]]:
    return run_processor(processor, table, BATCH)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades()


class V1Results(dict[str, list[tuple[Any, ...]]]):
    """V1's canonical rows per query, computed on first use."""

    def __init__(self, table: pa.Table) -> None:
        super().__init__()
        self.table = table

    def __missing__(self, name: str) -> list[tuple[Any, ...]]:
        rows = canonical(run(SimpleJobProcessor(parse_one(QUERIES[name])), self.table), name)
        self[name] = rows
        return rows


@pytest.fixture(scope="module")
def expected(table: pa.Table) -> V1Results:
    return V1Results(table)


@pytest.fixture(scope="module")
def v1_rows(table: pa.Table) -> dict[str, list[dict[str, Any]]]:
    return {name: run(SimpleJobProcessor(parse_one(sql)), table) for name, sql in QUERIES.items()}


@pytest.mark.parametrize("partitions", [1, 2, 3, 8])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_routed_v2_equals_v1_row_for_row(
    name: str, partitions: int, table: pa.Table, v1_rows: dict[str, list[dict[str, Any]]]
) -> None:
    """Same rows, same values to the bit, in the same order: each group is
    aggregated by one partition over the same rows, and the coordinator merges
    outputs into V1's order (window end, window start, key; else arrival)."""
    v2 = PartitionedJobCoordinator(parse_one(QUERIES[name]), num_partitions=partitions)
    assert run(v2, table) == v1_rows[name]


def test_late_counts_agree(table: pa.Table) -> None:
    sql = QUERIES["tumbling"]
    v1 = SimpleJobProcessor(parse_one(sql))
    run(v1, table)
    v2 = PartitionedJobCoordinator(parse_one(sql), num_partitions=3)
    run(v2, table)
    assert v1.metrics.late_records > 0
    assert v2.metrics.late_records == v1.metrics.late_records


@pytest.fixture(scope="module")
def jsonl(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v2") / "trades.jsonl"
    with path.open("w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_source_parallel_v2_equals_v1(
    name: str, partitions: int, jsonl: Path, expected: dict[str, Any], table: pa.Table
) -> None:
    splits = jsonl_splits(jsonl, source="trades", split_bytes=40_000)
    assert splits is not None and len(splits) > 4
    v2 = PartitionedJobCoordinator(parse_one(QUERIES[name]), num_partitions=partitions)
    with v2:
        rows = [r for b in v2.run_splits(splits) for r in b.to_pylist()]
    if name == "limit":  # which 37 rows is input order: the first 37 of V1
        assert len(rows) == 37
    assert canonical(rows, name) == expected[name]
    if name == "tumbling":
        v1 = Engine(parse_one(QUERIES[name]))
        for b in table.to_batches(BATCH):
            v1.process(b)
        v1.flush()
        assert v2.metrics.late_records == v1.metrics.late_records > 0


@pytest.mark.parametrize(
    "name", ["tumbling", "group_changes", "session", "rows_partitioned", "rows_lead_lag"]
)
def test_switch_v1_to_v2_to_v2x3_to_v1_mid_stream_equals_unswitched(
    name: str, table: pa.Table, expected: dict[str, Any]
) -> None:
    sql = QUERIES[name]
    batches = table.to_batches(BATCH)
    legs = [batches[:8], batches[8:14], batches[14:20], batches[20:]]
    out: list[pa.RecordBatch] = []
    old: Any = None
    makes: list[Callable[[], Any]] = [
        lambda: SimpleJobProcessor(parse_one(sql)),
        lambda: PartitionedJobCoordinator(parse_one(sql), num_partitions=2),
        lambda: PartitionedJobCoordinator(parse_one(sql), num_partitions=3),
        lambda: SimpleJobProcessor(parse_one(sql)),
    ]
    for leg, make in zip(legs, makes, strict=True):
        new = make()
        try:
            if old is not None:
                out += getattr(old, "drain", list)()
                new.restore(old.snapshot())
                old.close()
            for b in leg:
                out += new.process_batch(b)
        except BaseException:
            new.close()
            raise
        old = new
    out += old.flush()
    old.close()
    assert canonical([r for b in out for r in b.to_pylist()], name) == expected[name]


#: EMIT CHANGES queries: every changelog row counts, not only the last per key.
CHANGELOGS = {
    "group_changes": QUERIES["group_changes"],
    "tumbling_changes": QUERIES["tumbling"] + " EMIT CHANGES",
    "filtered_changes": (
        "SELECT symbol, COUNT(*) AS n, MAX(price) AS p FROM trades WHERE qty > 20"
        " GROUP BY symbol EMIT CHANGES"
    ),
}


def changelog(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Every row of a changelog as a sortable tuple (order within a micro-batch
    may differ between partitions; the rows themselves may not)."""
    return sorted((tuple(sorted(r.items())) for r in rows), key=repr)


def rows_of(batches: list[pa.RecordBatch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.to_pylist()]


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", sorted(CHANGELOGS))
def test_emit_changes_from_jsonl_v2_gives_v1_changelog(
    name: str, partitions: int, jsonl: Path
) -> None:
    """From a JSONL file V2 reads splits in parallel; the changelog must still
    be V1's row for row: one row per changed group per micro-batch."""
    from flowsql.connectors.files import JsonlSource
    from flowsql.connectors.memory import MemorySink
    from flowsql.runtime.runner import run_job
    from flowsql.runtime.splits import source_splits

    def source() -> JsonlSource:
        return JsonlSource(jsonl, name="trades", batch_size=300, chunk_bytes=50_000)

    splits = source_splits(source(), batch_size=120)
    assert splits is not None and len(splits) > 3
    statement = parse_one(CHANGELOGS[name])
    v1_sink, v2_sink = MemorySink(), MemorySink()
    v1 = run_job(statement, source(), v1_sink, batch_size=120)
    v2 = PartitionedJobCoordinator(statement, num_partitions=partitions)
    report = run_job(statement, source(), v2_sink, processor=v2, batch_size=120)
    assert report.records_in == v1.records_in == 4_000
    assert v2.metrics.late_records == report.late_records
    assert changelog(rows_of(v2_sink.batches)) == changelog(rows_of(v1_sink.batches))
    assert report.records_out == v1.records_out > 200


@pytest.mark.parametrize("name", sorted(CHANGELOGS))
def test_emit_changes_routed_v2_gives_v1_changelog(name: str, table: pa.Table) -> None:
    statement = parse_one(CHANGELOGS[name])
    v1 = SimpleJobProcessor(statement)
    v2 = PartitionedJobCoordinator(statement, num_partitions=3)
    assert changelog(run(v2, table)) == changelog(run(v1, table))


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_v2_from_jsonl_gives_v1_rows_row_for_row(name: str, partitions: int, jsonl: Path) -> None:
    """From a JSONL file (workers decode chunks; two-phase COUNT/MIN/MAX, the
    rest aggregated by the coordinator), every row as V1 gives it, in order,
    to the bit, with the same late count."""
    from flowsql.connectors.files import JsonlSource
    from flowsql.connectors.memory import MemorySink
    from flowsql.runtime.runner import run_job
    from flowsql.runtime.splits import source_splits

    def source() -> JsonlSource:
        return JsonlSource(jsonl, name="trades", batch_size=300, chunk_bytes=50_000)

    assert len(source_splits(source()) or []) > 3
    statement = parse_one(QUERIES[name])
    v1_sink, v2_sink = MemorySink(), MemorySink()
    v1 = run_job(statement, source(), v1_sink, batch_size=120)
    v2 = PartitionedJobCoordinator(statement, num_partitions=partitions)
    report = run_job(statement, source(), v2_sink, processor=v2, batch_size=120)
    assert rows_of(v2_sink.batches) == rows_of(v1_sink.batches)
    assert report.late_records == v1.late_records
