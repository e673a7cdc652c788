"""The SQL engine called directly: ``Engine`` for incremental use, ``query`` for
bounded inputs ("SQL engine direct" in the benchmarks).

The engine owns one operator chain. Each input batch gets its event time
(``_timestamp``), goes through the chain, and then every operator is told how
far event time has advanced so windows can close: the watermark base, kept per
input partition (``_partition``) by a :class:`~flowsql.exec.watermarks.PartitionClock`
(the minimum over the active partitions; for an unpartitioned input, the max
event time). A driver that knows the input's partitions declares them
(:meth:`Engine.expect_partitions`) and reports their end or idleness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from flowsql.errors import PlanError, did_you_mean
from flowsql.exec.compile import compile_plan
from flowsql.exec.eventtime import (
    PRIOR_MAX_EVENT_TIME,
    EventTimeAssigner,
    allowed_lateness,
    has_windowed_aggregate,
)
from flowsql.exec.operator import Operator, OperatorContext
from flowsql.exec.watermarks import SNAPSHOT_KEY, PartitionClock, partition_ids
from flowsql.exec.windows import NO_TIME
from flowsql.plan import nodes as n
from flowsql.plan.routing import event_time_column
from flowsql.records import TIMESTAMP, DeadLetterSink, ListDeadLetters
from flowsql.sql import parse_one

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000


@dataclass
class EngineMetrics:
    """Counters of one engine (or of a V2 coordinator).

    ``max_event_time``: the max event time seen over the whole input.
    ``watermark``: the watermark base (see ``flowsql.exec.watermarks``) minus
    the allowed lateness; None before anything is reached.
    ``partition_watermarks``: per input partition (``_partition``), its max
    event time minus the allowed lateness (None: declared, nothing seen yet);
    empty for an unpartitioned input. ``partition_states``: per input
    partition, ``active``, ``idle`` or ``ended``.
    """

    records_in: int = 0
    records_out: int = 0
    late_records: int = 0
    dead_lettered: int = 0
    max_event_time: int | None = None
    watermark: int | None = None
    partition_watermarks: dict[int, int | None] = field(default_factory=dict)
    partition_states: dict[int, str] = field(default_factory=dict)

    def slowest_partition(self) -> int | None:
        """The active input partition holding the watermark back (the lowest
        watermark; one not seen yet first); None when no partition is active."""
        active = [q for q, s in self.partition_states.items() if s == "active"]
        if not active:
            return None
        return min(active, key=lambda q: (_or_no_time(self.partition_watermarks.get(q)), q))


def _or_no_time(ms: int | None) -> int:
    return NO_TIME if ms is None else ms


def report_watermarks(metrics: EngineMetrics, clock: PartitionClock, lateness_ms: int) -> None:
    """Write the clock's watermark, and per partition ones, into ``metrics``."""
    floor = clock.floor
    metrics.watermark = None if floor == NO_TIME else floor - lateness_ms
    if clock.partitioned:
        metrics.partition_watermarks = {
            q: None if high is None else high - lateness_ms
            for q, high in clock.partition_times().items()
        }
        metrics.partition_states = clock.partition_states()


class Engine:
    """One query, fed batch by batch.

    Args:
        sql: SQL text holding one query (SELECT or CREATE STREAM/TABLE ... AS
            SELECT), or an already planned :class:`~flowsql.plan.nodes.Statement`.
        event_time: event-time column when the query does not name one.
        dead_letters: where undecodable/late records go (default: kept in
            ``self.dead_letters`` when it is a ``ListDeadLetters``).
        job: name used in errors and metrics.
        stamped: the rows arrive with their event time in ``_timestamp`` already
            (the output of an upstream engine, e.g. V2's per-split partials).
        driven: a V2 partition's engine: the coordinator assigns ``_timestamp``,
            stamps the watermark bases (``__prior_max_event_time``) and calls
            :meth:`advance`; the engine keeps no watermark of its own and does
            not advance by itself.
    """

    def __init__(
        self,
        sql: str | n.Statement,
        *,
        event_time: str | None = None,
        dead_letters: DeadLetterSink | None = None,
        job: str | None = None,
        stamped: bool = False,
        driven: bool = False,
    ) -> None:
        statement = _parse(sql) if isinstance(sql, str) else sql
        self.statement = statement
        self.ctx = OperatorContext(job=job or statement.name)
        self.dead_letters: DeadLetterSink = dead_letters or ListDeadLetters()
        self.metrics = EngineMetrics()
        source = statement.sources[0] if statement.sources else ""
        column = TIMESTAMP if stamped or driven else event_time_column(statement, event_time)
        self._clock = EventTimeAssigner(column, "" if stamped else source)
        self.operators: list[Operator] = compile_plan(statement.plan, self.ctx)
        self._stamp_prior_max = has_windowed_aggregate(statement.plan)
        self._driven = driven
        self._watermarks = PartitionClock()
        self._lateness = allowed_lateness(statement.plan)

    @property
    def done(self) -> bool:
        """True once a LIMIT has been reached: no more input is wanted."""
        return self.ctx.done

    def process(self, batch: pa.RecordBatch | pa.Table) -> list[pa.RecordBatch]:
        """Run one batch through the query; return the rows emitted."""
        if isinstance(batch, pa.Table):
            out: list[pa.RecordBatch] = []
            for b in batch.to_batches():
                out += self.process(b)
            return out
        if self.ctx.done or batch.num_rows == 0:
            return []
        self.metrics.records_in += batch.num_rows
        batch, letters = self._clock.assign(batch)
        if letters:
            self.ctx.dead_letters.extend(letters)
        if not batch.num_rows:
            self._drain()
            return []
        ts = batch.column(TIMESTAMP).to_numpy(zero_copy_only=False)
        if self._driven:
            out = self._push([batch])
            self._saw(int(ts.max()))
            return out
        stamp = self._watermarks.arrive(ts, partition_ids(batch), rows=self._stamp_prior_max)
        if stamp.prior is not None and PRIOR_MAX_EVENT_TIME not in batch.schema.names:
            batch = batch.append_column(PRIOR_MAX_EVENT_TIME, pa.array(stamp.prior))
        out = self._push([batch])
        self._saw(stamp.high)
        return out + self._reach()

    def _saw(self, high: int) -> None:
        prev = self.metrics.max_event_time
        self.metrics.max_event_time = high if prev is None else max(prev, high)

    def _reach(self) -> list[pa.RecordBatch]:
        """Advance every operator to the watermark base (nothing while none is reached)."""
        base = self._watermarks.floor
        if base == NO_TIME:
            report_watermarks(self.metrics, self._watermarks, self._lateness)
            return []
        return self.advance(base)

    def advance(self, event_time_ms: int) -> list[pa.RecordBatch]:
        """Tell every operator event time reached ``event_time_ms``; emit what closes."""
        self._watermarks.advance(event_time_ms)
        report_watermarks(self.metrics, self._watermarks, self._lateness)
        return self._cascade(lambda op: op.advance(event_time_ms))

    def expect_partitions(self, partitions: Iterable[int]) -> None:
        """The input's partitions (``_partition`` values) known to exist: those
        not seen yet hold the watermark until they send, end or go idle."""
        self._watermarks.expect(partitions)
        report_watermarks(self.metrics, self._watermarks, self._lateness)

    def end_partition(self, partition: int) -> list[pa.RecordBatch]:
        """A partition's bounded input is finished (an empty one too): it no
        longer holds the watermark back. Returns what closes."""
        return self._signal(self._watermarks.end(partition))

    def idle_partition(self, partition: int) -> list[pa.RecordBatch]:
        """A partition sent nothing for the idle timeout: it no longer holds the
        watermark back until its next record. Returns what closes."""
        return self._signal(self._watermarks.idle(partition))

    def _signal(self, rose: bool) -> list[pa.RecordBatch]:
        if rose:
            return self._reach()
        report_watermarks(self.metrics, self._watermarks, self._lateness)
        return []

    def flush(self) -> list[pa.RecordBatch]:
        """End of input: emit every open window and final aggregate."""
        return self._cascade(lambda op: op.flush())

    def _cascade(self, signal: Callable[[Operator], list[pa.RecordBatch]]) -> list[pa.RecordBatch]:
        # What operator i emits on the signal is processed by operator i+1
        # before i+1 receives the signal itself.
        carried: list[pa.RecordBatch] = []
        for op in self.operators:
            nxt: list[pa.RecordBatch] = []
            for b in carried:
                if b.num_rows:
                    nxt += op.process(b)
            nxt += signal(op)
            carried = nxt
        return self._finish(carried)

    def snapshot(self) -> dict[str, Any]:
        """State of every operator (``"operators"``, in chain order) plus the
        engine's max event time and its watermarks per input partition
        (``"event_time"``, see ``flowsql.exec.watermarks``);
        ``flowsql.state.snapshots`` re-shards it by key."""
        return {
            "operators": [op.snapshot() for op in self.operators],
            "max_event_time": self.metrics.max_event_time,
            SNAPSHOT_KEY: self._watermarks.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot; one without watermarks per partition (older) starts
        the watermark base at its max event time."""
        for op, op_state in zip(self.operators, state["operators"], strict=True):
            op.restore(op_state)
        self.metrics.max_event_time = state.get("max_event_time")
        self._watermarks = PartitionClock.restore(
            state.get(SNAPSHOT_KEY), self.metrics.max_event_time
        )
        report_watermarks(self.metrics, self._watermarks, self._lateness)

    def _push(self, batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """Send batches through the whole chain; return what comes out the top."""
        for op in self.operators:
            nxt: list[pa.RecordBatch] = []
            for b in batches:
                if b.num_rows:
                    nxt += op.process(b)
            batches = nxt
        return self._finish(batches)

    def _finish(self, out: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        out = [b for b in out if b.num_rows]
        self.metrics.records_out += sum(b.num_rows for b in out)
        self._drain()
        return out

    def _drain(self) -> None:
        if self.ctx.dead_letters:
            self.metrics.dead_lettered += len(self.ctx.dead_letters)
            self.dead_letters.write(self.ctx.dead_letters)
            self.ctx.dead_letters = []
        self.metrics.late_records = self.ctx.late_records


def query(
    sql: str,
    inputs: Mapping[str, pa.Table | pa.RecordBatch | Iterable[Mapping[str, Any]]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    event_time: str | None = None,
) -> pa.Table:
    """Run a query over bounded inputs and return every row it emits.

    Args:
        sql: one query.
        inputs: FROM name -> ``pyarrow.Table``/``RecordBatch`` or list of dicts.
        batch_size: micro-batch size the input is cut into.
        event_time: event-time column when the query does not name one.
    """
    engine = Engine(sql, event_time=event_time)
    sources = engine.statement.sources
    name = sources[0] if sources else next(iter(inputs))
    if name not in inputs:
        raise PlanError(f"no input named '{name}'", hint=did_you_mean(name, inputs))
    table = _as_table(inputs[name])
    out: list[pa.RecordBatch] = []
    for batch in table.to_batches(max_chunksize=batch_size):
        out += engine.process(batch)
        if engine.done:
            break
    out += engine.flush()
    if not out and table.num_rows:
        return _empty_result(engine.statement, table, event_time)
    return _concat(out)


def _empty_result(statement: n.Statement, table: pa.Table, event_time: str | None) -> pa.Table:
    """No row came out: learn the output columns and types by running the query
    without its row filters (WHERE, HAVING, LIMIT) over the first input row."""
    probe = replace(statement, plan=_without_filters(statement.plan))
    engine = Engine(probe, event_time=event_time)
    out = engine.process(table.slice(0, 1)) + engine.flush()
    return _concat(out).slice(0, 0) if out else pa.table({})


def _without_filters(node: n.Node) -> n.Node:
    if isinstance(node, n.Filter | n.Limit):
        return _without_filters(node.input)
    child = getattr(node, "input", None)
    if isinstance(child, n.Node):
        return replace(node, input=_without_filters(child))  # type: ignore[type-var]
    return node


def _parse(sql: str) -> n.Statement:
    return parse_one(sql)


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    return pa.Table.from_pylist(list(data))


def _concat(batches: list[pa.RecordBatch]) -> pa.Table:
    if not batches:
        return pa.table({})
    schema = batches[0].schema
    return pa.Table.from_batches([b.cast(schema) if b.schema != schema else b for b in batches])
