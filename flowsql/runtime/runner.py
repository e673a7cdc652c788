"""Run one statement over bounded inputs to completion: source -> processor -> sink.

:func:`run_job` is the whole pipeline in one place; the CLI's ``flowsql run``
and ``flowsql demo`` call it, and so can tests and notebooks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from flowsql.connectors.base import Sink, Source
from flowsql.connectors.files import FileSource
from flowsql.connectors.generator import GeneratorSource
from flowsql.connectors.memory import MemorySource
from flowsql.engine import DEFAULT_BATCH_SIZE
from flowsql.errors import ConfigError, ConnectorError, did_you_mean
from flowsql.plan.nodes import Statement
from flowsql.records import SYSTEM_COLUMNS, DeadLetterSink
from flowsql.runtime.driver import Driver, Progress
from flowsql.runtime.factory import V1, ProcessorFactory, make_processor
from flowsql.runtime.processor import JobProcessor
from flowsql.runtime.splits import source_splits
from flowsql.sql import bind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobReport:
    """What a finished job did.

    ``dead_lettered`` counts records the sources could not decode plus those
    the engine sent to the dead-letter sink (bad event time, late with the
    ``dlq`` strategy). ``stopped_early`` is True when a LIMIT ended the job.
    """

    job: str
    processor: str
    partitions: int
    records_in: int
    records_out: int
    late_records: int
    dead_lettered: int
    elapsed_s: float
    stopped_early: bool = False

    @property
    def records_per_s(self) -> float:
        """Input records per second of wall time."""
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values (for JSON), ``records_per_s`` included."""
        return {**dataclasses.asdict(self), "records_per_s": self.records_per_s}

    def summary(self) -> str:
        """One line for humans (the CLI prints it on stderr)."""
        return (
            f"{self.job}: {self.records_in:,} records in, {self.records_out:,} out,"
            f" {self.late_records:,} late, {self.dead_lettered:,} dead-lettered"
            f" in {self.elapsed_s:.2f}s ({self.records_per_s:,.0f} rec/s,"
            f" {self.processor} x{self.partitions})"
        )


def run_job(
    statement: Statement,
    sources: Mapping[str, Source] | Source,
    sink: Sink,
    *,
    processor: JobProcessor | ProcessorFactory | None = None,
    dead_letters: DeadLetterSink | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    event_time: str | None = None,
) -> JobReport:
    """Run ``statement`` over bounded ``sources`` into ``sink`` until the input
    ends (or a LIMIT is reached), then flush and close everything.

    Args:
        statement: the planned query (one FROM name for now).
        sources: FROM name -> source, or the single source.
        sink: where result batches go; closed at the end (aborted on error
            when it can be).
        processor: a ready processor, or a factory ``(statement, dead_letters)``;
            default V1 :class:`SimpleJobProcessor`.
        dead_letters: where the engine's dead letters go.
        batch_size: largest micro-batch handed to the processor.
        progress: called after each batch with the records read so far.
        event_time: event-time column when the query does not name one.
    """
    started = time.perf_counter()
    source = single_source(statement, sources)
    log.debug("job %s: source %s, sink %s", statement.name, source.name, type(sink).__name__)
    proc = _build_processor(statement, processor, dead_letters, event_time)
    log.debug(
        "job %s: processor %s x%d", statement.name, proc.processor_version, proc.num_partitions
    )
    driver = Driver(proc, sink, batch_size=batch_size)
    try:
        splits = source_splits(source, batch_size=batch_size) if proc.can_split() else None
        if splits is not None:
            log.debug("job %s: %d splits read in parallel by workers", statement.name, len(splits))
            outcome = driver.run_splits(splits, progress=progress)
        else:
            outcome = driver.run(source.batches(), progress=progress)
        log.debug(
            "job %s: %s; %d records out", statement.name, outcome, driver.counters.records_out
        )
    except BaseException:
        _abort(sink)
        raise
    finally:
        proc.close()
        source.close()
    sink.close()
    elapsed = time.perf_counter() - started
    log.debug("job %s: done in %.3fs", statement.name, elapsed)
    return JobReport(
        job=statement.name,
        processor=proc.processor_version,
        partitions=proc.num_partitions,
        records_in=driver.counters.records_in,
        records_out=driver.counters.records_out,
        late_records=proc.metrics.late_records,
        dead_lettered=source.dead_lettered + proc.metrics.dead_lettered,
        elapsed_s=elapsed,
        stopped_early=proc.done,
    )


def single_source(statement: Statement, sources: Mapping[str, Source] | Source) -> Source:
    """The source of ``statement``'s one FROM name (joins come later)."""
    if not isinstance(sources, Mapping):
        return sources
    names = list(dict.fromkeys(statement.sources))
    if len(names) > 1:
        raise ConfigError(
            f"{statement.name} inputs", ", ".join(names), "one FROM name (no joins yet)"
        )
    name = names[0] if names else next(iter(sources), "")
    if name not in sources:
        hint = did_you_mean(name, sources)
        raise ConnectorError(f"no source for '{name}'" + (f"; {hint}" if hint else ""))
    return sources[name]


#: Sources that know their columns before the first batch is read.
SCHEMA_SOURCES = (FileSource, GeneratorSource, MemorySource)


def bind_sources(statement: Statement, sources: Mapping[str, Source]) -> Statement:
    """Check the query against its inputs' columns (system columns excluded)
    when every input knows them up front: an unknown column fails before the
    job starts, with a hint. Otherwise the statement is returned unchecked."""
    schemas = {}
    for name, source in sources.items():
        if not isinstance(source, SCHEMA_SOURCES):
            return statement  # a source that cannot tell its columns up front
        keep = [f for f in source.schema if f.name not in SYSTEM_COLUMNS]
        if not keep:
            return statement  # an empty input: nothing to check against
        schemas[name] = pa.schema(keep)
    return bind(statement, schemas)


def _build_processor(
    statement: Statement,
    processor: JobProcessor | ProcessorFactory | None,
    dead_letters: DeadLetterSink | None,
    event_time: str | None,
) -> JobProcessor:
    if processor is None:
        return make_processor(statement, V1, dead_letters, event_time=event_time)
    if isinstance(processor, JobProcessor) and not isinstance(processor, type):
        return processor
    return processor(statement, dead_letters)


def _abort(sink: Sink) -> None:
    try:
        sink.abort()
    except Exception:  # the original error matters more
        log.debug("sink cleanup failed", exc_info=True)
