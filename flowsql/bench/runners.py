"""The runners: one timed run of a scenario by one engine.

Each builds what it needs before the clock starts (the engine, the processor and
its worker processes, DuckDB's connection, the pre-encoded arrays) and returns
an :class:`~flowsql.bench.measure.Outcome` whose seconds cover only the work:

- **direct**: ``flowsql.Engine.process`` on every pre-built batch, then ``flush``;
- **V1 / V2**: ``run_job`` with a ready processor, from a memory source over the
  same batches (or from the JSONL file, decode included) into a counting sink;
  ``run_job`` closes the processor, so stopping V2's workers is timed;
- **ceiling**: the numpy kernel of :mod:`flowsql.bench.ceiling`;
- **DuckDB**: the equivalent batch SQL over the same Arrow table, one thread
  (skipped without the 'bench' extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from flowsql.bench import ceiling
from flowsql.bench.measure import Outcome, children_cpu_now
from flowsql.bench.scenarios import Scenario
from flowsql.connectors.base import Source
from flowsql.connectors.files import JsonlSource
from flowsql.connectors.memory import MemorySource
from flowsql.engine import Engine
from flowsql.plan.nodes import Statement
from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.processor import JobProcessor, SimpleJobProcessor
from flowsql.runtime.runner import run_job
from flowsql.runtime.splits import source_splits
from flowsql.sql import parse_one

Run = Callable[[], Outcome]


class _Clock:
    """Wall and CPU time of this process from its creation to :meth:`outcome`
    (with ``children``, also where the worker processes' CPU time stood)."""

    def __init__(self, children: bool = False) -> None:
        self.children = children_cpu_now() if children else None
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def outcome(self, rows: int, groups: int | None = None) -> Outcome:
        cpu = time.process_time() - self.cpu
        return Outcome(time.perf_counter() - self.wall, rows, groups, cpu, self.children)


class CountingSink:
    """A sink that only counts the rows it is given."""

    def __init__(self) -> None:
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


def parse(sql: str) -> Statement:
    """The planned statement of a scenario's SQL."""
    return parse_one(sql)


def direct(statement: Statement, batches: list[pa.RecordBatch]) -> Run:
    """``flowsql.Engine`` called directly on the pre-built batches."""

    def run() -> Outcome:
        engine = Engine(statement)
        rows = 0
        clock = _Clock()
        for b in batches:
            rows += sum(o.num_rows for o in engine.process(b))
        rows += sum(o.num_rows for o in engine.flush())
        return clock.outcome(rows)

    return run


@dataclass
class JobRun:
    """Startup cost and data path of the last processor built (V2 reports
    whether workers read splits of the file themselves)."""

    startup_s: float = 0.0
    path: str = ""


def job(
    statement: Statement,
    source: Callable[[], Source],
    processor: Callable[[], JobProcessor],
    info: JobRun,
) -> Run:
    """``run_job`` from ``source()`` with a ready ``processor()``."""

    def run() -> Outcome:
        built = time.perf_counter()
        proc = processor()
        src = source()
        info.startup_s = time.perf_counter() - built
        info.path = data_path(proc, src)
        sink = CountingSink()
        clock = _Clock(children=True)
        report = run_job(statement, src, sink, processor=proc)
        return clock.outcome(report.records_out)

    return run


def data_path(proc: JobProcessor, source: Source) -> str:
    """How the processor will get its input: ``splits`` (workers read and decode
    the file themselves), ``router`` (V2 routes rows) or ``inline`` (V1)."""
    if proc.processor_version != "V2":
        return "inline"
    if proc.can_split() and source_splits(source):
        return "splits"
    return "router"


def memory_source(
    kind: str, batches: list[pa.RecordBatch], batch_size: int
) -> Callable[[], Source]:
    table = pa.Table.from_batches(batches)
    return lambda: MemorySource(table, name=kind, batch_size=batch_size)


def jsonl_source(kind: str, path: Path, batch_size: int) -> Callable[[], Source]:
    return lambda: JsonlSource(path, name=kind, batch_size=batch_size)


def v1(statement: Statement) -> Callable[[], JobProcessor]:
    return lambda: SimpleJobProcessor(statement)


def v2(statement: Statement, partitions: int) -> Callable[[], JobProcessor]:
    return lambda: PartitionedJobCoordinator(statement, num_partitions=partitions)


def numpy_ceiling(scenario: Scenario, batches: list[pa.RecordBatch]) -> Run:
    """The scenario's numpy kernel on arrays encoded before the clock starts."""
    arrays, keys = ceiling.encode(batches, scenario.ceiling)
    kernel = ceiling.KERNELS[scenario.ceiling]

    def run() -> Outcome:
        clock = _Clock()
        rows, groups = kernel(arrays, keys)
        return clock.outcome(rows, groups)

    return run


def have_duckdb() -> bool:
    """Whether DuckDB (the 'bench' extra) imports; without it there is no DuckDB run."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def duckdb_batch(scenario: Scenario, batches: list[pa.RecordBatch], threads: int = 1) -> Run:
    """DuckDB running the equivalent batch SQL over the same Arrow table."""
    import duckdb

    table = pa.Table.from_batches(batches)

    def run() -> Outcome:
        con = duckdb.connect()
        con.execute(f"SET threads = {int(threads)}")
        con.register("t", table)
        clock = _Clock()
        rel = con.sql(scenario.duckdb_sql)
        # DuckDB renamed arrow() to_arrow_table(); both releases are in the extra's range
        out = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
        outcome = clock.outcome(out.num_rows, out.num_rows)
        con.close()
        return outcome

    return run
