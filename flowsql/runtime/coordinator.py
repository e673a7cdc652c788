"""V2: ``PartitionedJobCoordinator``, the hash-partitioned multi-core processor.

The coordinator runs in the caller's thread; each partition is a worker process
with a private engine (``flowsql.runtime.worker``). For every input batch:

1. assign event time (``_timestamp``) here, before routing, exactly as V1's
   engine would;
2. for windowed queries, stamp each row with ``__prior_max_event_time``: the
   largest event time of all rows before it in the whole input, so each
   partition decides lateness exactly as V1 does (a batch in event-time order
   needs no stamp: none of its rows can be late);
3. route rows by a stable hash of the routing key (``HashRouter``) and send
   each partition its rows together with the new global max event time, to
   which every partition advances, so windows close in all partitions
   together (the watermark is the same for all: min over partitions = global);
4. collect the partitions' outputs for the batch and merge them into V1's
   order (``flowsql.runtime.ordering``): window end, window start, then key for
   aggregates; arrival order for everything else.

Up to ``max_in_flight`` batches per partition are outstanding, so routing the
next batch overlaps the partitions' work; outputs therefore come back from a
later ``process_batch`` (or ``drain``/``flush``) call, always in input order.

No wait on a worker is unbounded: a worker that dies is seen at once (its
process sentinel), one that stalls with work outstanding within
``'v2.heartbeat.timeout'`` (see ``flowsql.runtime.worker``); either fails the
call with an :class:`ExecutionError` naming the partition and the pid.

Queries whose routing strategy is ``single`` (LIMIT, DISTINCT, ORDER BY over
everything, ...) run on one partition; ``two_phase`` queries (global
aggregates) also run on one partition on this path, while ``run_splits``
(the source-parallel path, ``flowsql.runtime.splits``) aggregates them in
two phases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from flowsql.engine import EngineMetrics, event_time_column
from flowsql.errors import ExecutionError
from flowsql.exec.eventtime import (
    PRIOR_MAX_EVENT_TIME,
    EventTimeAssigner,
    has_windowed_aggregate,
    in_order,
    prior_max,
)
from flowsql.plan import nodes as n
from flowsql.plan.expr import Col
from flowsql.plan.partial import reads_column, split_plan
from flowsql.records import ARRIVAL, OFFSET, TIMESTAMP, DeadLetterSink, ListDeadLetters
from flowsql.runtime.ordering import output_order
from flowsql.runtime.router import HashRouter
from flowsql.runtime.splits import SourceSplit, SplitRun
from flowsql.runtime.worker import (
    EngineSpec,
    PartitionError,
    PartitionWorker,
    Reply,
    close_all,
    heartbeat_timeout,
    worker_env,
)

log = logging.getLogger(__name__)

#: Column stamped on every row of a windowed query: the global max event time
#: of all rows before it (the row's own event time for the very first row).

#: Batches each partition may have outstanding before the coordinator waits.
DEFAULT_MAX_IN_FLIGHT = 3


class BatchError(ExecutionError):
    """A batch raised in a partition (bad data, e.g. a CAST that fails). The
    workers live on, as V1's engine would; the batch's outputs are dropped.

    With batches in flight the error surfaces on a later call: ``batch`` is the
    input batch that failed. ``process_batch`` raises it *before* accepting its
    own batch, so a caller applying a failure policy handles ``exc.batch`` and
    then gives its current batch again.
    """

    def __init__(self, message: str, batch: pa.RecordBatch | None) -> None:
        super().__init__(message)
        self.batch = batch


class PartitionedJobCoordinator:
    """V2: N worker processes, each owning a private engine for ``statement``.

    Args:
        statement: the planned query.
        num_partitions: partitions to run (default: CPU count). Queries that
            cannot be hash-partitioned use one; see :attr:`routing`.
        event_time: event-time column when the query does not name one.
        dead_letters: sink for undecodable and (with the dlq strategy) late rows.
        job: name used in errors, process names and metrics.
        max_in_flight: batches a partition may have outstanding (backpressure).
        heartbeat_timeout_s: a worker silent this long with work outstanding
            fails the job (0: never); default: the WITH key
            ``'v2.heartbeat.timeout'``, else 10 s.
    """

    processor_name = "PartitionedJobCoordinator"
    processor_version = "V2"

    def __init__(
        self,
        statement: n.Statement,
        *,
        num_partitions: int | None = None,
        event_time: str | None = None,
        dead_letters: DeadLetterSink | None = None,
        job: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        heartbeat_timeout_s: float | None = None,
    ) -> None:
        self.statement = statement
        self.job = job or statement.name
        self.event_time = event_time
        self.requested_partitions = max(1, num_partitions or os.cpu_count() or 1)
        self.routing = _routing(statement)
        partitions = self.requested_partitions if self.routing.strategy == "hash" else 1
        self.router = HashRouter(self.routing.key_columns, partitions)
        self.dead_letters: DeadLetterSink = dead_letters or ListDeadLetters()
        self.metrics = EngineMetrics()
        self.max_in_flight = max(1, max_in_flight)
        if heartbeat_timeout_s is None:
            heartbeat_timeout_s = heartbeat_timeout(statement.properties)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        source = statement.sources[0] if statement.sources else ""
        self._clock = EventTimeAssigner(event_time_column(statement, event_time), source)
        self._stamp_prior_max = has_windowed_aggregate(statement.plan)
        self.order = output_order(statement, partitions)
        self._arrived = 0  # rows routed so far (numbers rows when ordering by arrival)
        self._late = [0] * partitions
        self._pending: dict[int, dict[int, list[pa.RecordBatch]]] = {}
        self._next_seq = 0
        self._ready: list[pa.RecordBatch] = []
        self._done = False
        self._closed = False
        self._ran_splits = False
        self._inputs: dict[int, pa.RecordBatch] = {}  # batches in flight, by seq
        self._errors: dict[int, PartitionError] = {}
        self._failed: list[BatchError] = []
        self.workers: list[PartitionWorker] = []
        try:
            spec = EngineSpec(self.order.statement, self.job)
            env = worker_env(partitions)
            self.workers = [self._start_worker(p, spec, env) for p in range(partitions)]
            for w in self.workers:
                w.wait_ready()  # they start in parallel; a worker that cannot start fails here
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ protocol

    @property
    def num_partitions(self) -> int:
        """Partitions actually running (1 when the query cannot be partitioned)."""
        return self.router.num_partitions

    @property
    def done(self) -> bool:
        return self._done

    @property
    def failure(self) -> ExecutionError | None:
        """The error of a worker that died or stalled, checked without waiting
        (None while all are healthy)."""
        for w in self.workers:
            error = w.failure()
            if error is not None:
                return error
        return None

    def check_workers(self) -> None:
        """Fail (close every worker and raise) if a worker died or stalled."""
        error = self.failure
        if error is not None:
            self._fail(error)

    @property
    def tick(self) -> float | None:
        """Longest wait on the workers between two checks of :meth:`check_workers`."""
        return self.workers[0].tick if self.workers else None

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Route one batch to the partitions; return the outputs finished so far."""
        self._check_open()
        if isinstance(batch, pa.Table):
            return [o for b in batch.to_batches() for o in self.process_batch(b)]
        self._collect(block=False)
        self._raise_failed()
        if not self._done and batch.num_rows:
            self._route(batch)
        self._collect(block=False)
        return self._take_ready()

    def drain(self) -> list[pa.RecordBatch]:
        """Wait for every batch already given; return all outputs not yet returned.

        The job server calls this before ``snapshot()`` when it switches a job
        to another processor, so that no output is lost.
        """
        self._check_open()
        self._collect(block=True)
        self._raise_failed()
        return self._take_ready()

    def flush(self) -> list[pa.RecordBatch]:
        """End of input: every partition emits its open windows and final aggregates."""
        self._check_open()
        if self._ran_splits:
            return []  # run_splits already flushed
        self._collect(block=True)
        self._raise_failed()
        self._broadcast("flush")
        self._collect(block=True)
        self._raise_failed()
        return self._take_ready()

    def snapshot(self) -> dict[str, Any]:
        """Partition-independent state, in the format of ``Engine.snapshot()``.

        Restorable by V1 (``SimpleJobProcessor``) and by V2 with any partition
        count. Outputs of batches in flight are kept for the next call; the job
        server calls ``drain()`` first.
        """
        self._check_open()
        self._collect(block=True)
        states = self._ask_all("snapshot")
        merged = merge_states(states, self.statement.plan, self.router)
        merged["max_event_time"] = self.metrics.max_event_time
        return merged

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot taken by V1 or by V2 with any partition count."""
        self._check_open()
        self._collect(block=True)
        parts = split_state(state, self.router, self.statement.plan, arrival=self.order.arrival)
        for w, part in zip(self.routed, parts, strict=True):
            self._send(w, "restore", part)
        self._collect(block=True)
        self.metrics.max_event_time = state.get("max_event_time")

    def can_split(self) -> bool:
        """True when :meth:`run_splits` can run this query (it cannot when the
        query reads ``_offset``, which splits number on their own)."""
        return not reads_column(self.statement, OFFSET)

    def run_splits(self, splits: Iterable[SourceSplit]) -> Iterator[pa.RecordBatch]:
        """Run the query over a bounded input given as splits, each read and
        decoded by a worker (``flowsql.runtime.splits``); yield every output
        batch in order, the end-of-input flush included.

        Uses ``requested_partitions`` workers whatever the routing strategy:
        what crosses processes is partial aggregates (or filtered rows), which
        the coordinator merges in input order. Decode errors count in
        ``metrics.dead_lettered``.
        """
        self._check_open()
        plan = split_plan(self.statement)
        log.debug("job %s: source-parallel run: %s", self.job, plan.reason)
        self._ensure_workers(self.requested_partitions)
        run = SplitRun(self, plan)
        self._ran_splits = True
        yield from run.run(list(splits))
        self._done = True

    def _ensure_workers(self, count: int) -> None:
        spec = EngineSpec(self.statement, self.job)
        env = worker_env(count)
        while len(self.workers) < count:
            self.workers.append(self._start_worker(len(self.workers), spec, env))
        for w in self.workers:
            w.wait_ready()
        self._late += [0] * (count - len(self._late))

    def _start_worker(self, p: int, spec: EngineSpec, env: dict[str, str]) -> PartitionWorker:
        return PartitionWorker(p, spec, self.job, env, heartbeat_timeout=self.heartbeat_timeout_s)

    def close(self) -> None:
        """Stop and reap every worker process (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        close_all(self.workers)

    def __enter__(self) -> PartitionedJobCoordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- routing

    def _route(self, batch: pa.RecordBatch) -> None:
        given = batch
        self.metrics.records_in += batch.num_rows
        batch, letters = self._clock.assign(batch)
        if letters:
            self.metrics.dead_lettered += len(letters)
            self.dead_letters.write(letters)
        if not batch.num_rows:
            return
        ts = batch.column(TIMESTAMP).to_numpy(zero_copy_only=False)
        if self._stamp_prior_max and not in_order(ts, self.metrics.max_event_time):
            batch = batch.append_column(
                PRIOR_MAX_EVENT_TIME, pa.array(prior_max(ts, self.metrics.max_event_time))
            )
        high = int(ts.max())
        prev = self.metrics.max_event_time
        self.metrics.max_event_time = high if prev is None else max(prev, high)
        batch = self.order.tag(batch, self._arrived)
        self._arrived += batch.num_rows
        parts = self.router.split(batch)
        self._inputs[self.routed[0].sent] = given
        for w, part in zip(self.routed, parts, strict=True):
            self._wait_for_credit(w)
            self._send(w, "batch", self.metrics.max_event_time, [part])

    @property
    def routed(self) -> list[PartitionWorker]:
        """The workers that own the routed partitions."""
        return self.workers[: self.router.num_partitions]

    def _broadcast(self, kind: str, arg: Any = None) -> None:
        for w in self.routed:
            self._wait_for_credit(w)
            self._send(w, kind, arg)

    def _ask_all(self, kind: str) -> list[Any]:
        """Send ``kind`` to every partition and return their answers' values."""
        values: list[Any] = [None] * len(self.routed)
        for p, w in enumerate(self.routed):
            seq = self._send(w, kind)
            while True:
                got_seq, out, reply = self._receive(w)
                self._store(p, got_seq, out, reply)
                if got_seq == seq:
                    values[p] = reply
                    break
        self._merge_complete()
        for reply in values:
            if isinstance(reply, PartitionError):
                raise reply
        return [reply.value for reply in values]

    # ----------------------------------------------------------- collecting

    def _send(
        self, w: PartitionWorker, kind: str, arg: Any = None, batches: Sequence[pa.RecordBatch] = ()
    ) -> int:
        try:
            return w.send(kind, arg, batches)
        except ExecutionError as exc:
            self._fail(exc)

    def _wait_for_credit(self, w: PartitionWorker) -> None:
        while w.in_flight >= self.max_in_flight:
            self._store(w.partition, *self._receive(w))
        self._merge_complete()

    def _collect(self, *, block: bool) -> None:
        """Store every available reply (all outstanding ones when ``block``)."""
        for p, w in enumerate(self.routed):
            while w.in_flight and (block or self._ready_to_read(w)):
                self._store(p, *self._receive(w))
        self._merge_complete()

    def _ready_to_read(self, w: PartitionWorker) -> bool:
        if w.conn.poll():
            return True
        if w.process.exitcode is not None:
            self._fail(w.death_error())
        return False

    def _receive(
        self, w: PartitionWorker
    ) -> tuple[int, list[pa.RecordBatch], Reply | PartitionError]:
        """The next reply of ``w`` (or the error its handler raised); while
        waiting, a death or stall of *any* worker raises."""
        others = [x for x in self.workers if x is not w]
        sentinels: list[Any] = [w.conn, w.process.sentinel, *(x.process.sentinel for x in others)]
        while True:
            ready = wait(sentinels, self.tick)
            if not ready:
                self.check_workers()
                continue
            for x in others:
                if x.process.sentinel in ready:
                    self._fail(x.death_error())
            try:
                got = w.receive(timeout=0)
            except PartitionError as exc:
                return exc.seq, [], exc
            except ExecutionError as exc:
                self._fail(exc)
            if got is not None:
                return got

    def _fail(self, error: ExecutionError) -> NoReturn:
        log.error("%s", error)
        self.close()
        raise error

    def _store(
        self, p: int, seq: int, out: list[pa.RecordBatch], reply: Reply | PartitionError
    ) -> None:
        if isinstance(reply, PartitionError):
            self._errors.setdefault(seq, reply)
            self._pending.setdefault(seq, {})[p] = []
            return
        self._late[p] = reply.late_records
        self.metrics.late_records = sum(self._late)
        if reply.dead_letters:
            self.metrics.dead_lettered += len(reply.dead_letters)
            self.dead_letters.write(reply.dead_letters)
        if reply.done:
            self._done = True
        self._pending.setdefault(seq, {})[p] = out

    def _merge_complete(self) -> None:
        """Move the outputs of every batch all partitions answered to ``_ready``."""
        routed = self.router.num_partitions
        while len(got := self._pending.get(self._next_seq, {})) == routed:
            seq = self._next_seq
            del self._pending[seq]
            self._next_seq += 1
            given = self._inputs.pop(seq, None)
            if seq in self._errors:
                error = self._errors.pop(seq)
                self._failed.append(BatchError(str(error), given))
                continue
            self._ready += self.order.merge([got[p] for p in range(routed)])

    def _raise_failed(self) -> None:
        if self._failed:
            raise self._failed.pop(0)

    def _take_ready(self) -> list[pa.RecordBatch]:
        out, self._ready = self._ready, []
        self.metrics.records_out += sum(b.num_rows for b in out)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutionError(f"job '{self.job}': the V2 coordinator is closed")


def _routing(statement: n.Statement) -> Any:
    from flowsql.plan.routing import routing

    return routing(statement)


# ------------------------------------------------------ re-partitioning state
#
# An engine snapshot holds one state per operator, in plan order. Operator
# snapshots are plain values and Arrow tables (``Operator.snapshot``); each is
# split by routing the key values it stores through the same HashRouter as
# live rows, and merged by putting the partitions' keys (disjoint) together:
#
# - tables holding the routing key columns (aggregate groups, under their
#   GROUP BY output names) are filtered by partition / concatenated;
# - ROWS window state is indexed by dense partition id (see
#   ``flowsql.exec.rows``): ids are selected / renumbered (``_split_rows``);
# - plain values are settings (equal everywhere) or event-time maxima, so a
#   merge keeps their maximum.


def merge_states(
    states: Sequence[dict[str, Any]], plan: n.Node, router: HashRouter
) -> dict[str, Any]:
    """Merge the partitions' ``Engine.snapshot()`` into one (V1's format).

    Only what partition ``p`` owns under ``router`` is taken from it: an
    operator may hold empty entries for keys it has seen in a dictionary but
    never received rows for.
    """
    if len(states) == 1:
        return dict(states[0])
    nodes = operator_nodes(plan)
    aliases = key_aliases(plan)
    ops = []
    for i, node in enumerate(nodes):
        parts = [st["operators"][i] for st in states]
        if _is_rows_state(node, parts[0]):
            owned = [_owned_rows(op, router, node, p) for p, op in enumerate(parts)]  # type: ignore[arg-type]
            ops.append(_by_arrival(_merge_rows(owned)))
        else:
            owned = [_owned_tables(op, router, aliases, p) for p, op in enumerate(parts)]
            ops.append(merge_values(owned))
    rest = [{k: v for k, v in st.items() if k != "operators"} for st in states]
    merged = dict(merge_values(rest))
    merged["operators"] = ops
    return merged


def _owned_tables(state: Any, router: HashRouter, aliases: dict[str, str], p: int) -> Any:
    """``state`` with its keyed tables cut to the rows partition ``p`` owns."""
    if isinstance(state, pa.Table | pa.RecordBatch):
        names = set(state.schema.names)
        columns = [c if c in names else aliases.get(c, c) for c in router.key_columns]
        if not router.key_columns or not all(c in names for c in columns):
            return state
        ids = router.partitions_of([state.column(c) for c in columns])
        return state.filter(pa.array(ids == p))
    if isinstance(state, dict):
        return {k: _owned_tables(v, router, aliases, p) for k, v in state.items()}
    if isinstance(state, list | tuple):
        items = [_owned_tables(v, router, aliases, p) for v in state]
        return type(state)(items) if isinstance(state, tuple) else items
    return state


def split_state(
    state: dict[str, Any], router: HashRouter, plan: n.Node, *, arrival: bool = False
) -> list[dict[str, Any]]:
    """Split one ``Engine.snapshot()`` (from V1 or merged from V2) per partition.

    ``arrival``: the partitions' rows carry ``__arrival`` (see
    ``flowsql.runtime.ordering``); rows held back by ROWS functions get numbers
    before any new row's, in the order they arrived.
    """
    parts = router.num_partitions
    if parts == 1:
        return [state]
    aliases = key_aliases(plan)
    per_op = [
        _split_rows(_numbered(op) if arrival else op, router, node)  # type: ignore[arg-type]
        if _is_rows_state(node, op)
        else split_value(op, router, aliases)
        for node, op in zip(operator_nodes(plan), state["operators"], strict=True)
    ]
    return [{**state, "operators": [ops[p] for ops in per_op]} for p in range(parts)]


def operator_nodes(plan: n.Node) -> list[n.Node]:
    """The plan nodes of the engine's operators, in ``Engine.snapshot()`` order."""
    return [x for x in reversed(n.walk(plan)) if not isinstance(x, n.Scan)]


def merge_values(states: Sequence[Any]) -> Any:
    """Merge the same part of several partitions' snapshots (keys disjoint)."""
    first = states[0]
    if len(states) == 1:
        return first
    if isinstance(first, pa.Table | pa.RecordBatch):
        tables = [pa.table(x) if isinstance(x, pa.RecordBatch) else x for x in states]
        return pa.concat_tables(tables, promote_options="permissive")
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


def split_value(state: Any, router: HashRouter, aliases: dict[str, str]) -> list[Any]:
    """Split part of a snapshot: keyed tables by key, everything else copied."""
    parts = router.num_partitions
    if isinstance(state, pa.Table | pa.RecordBatch):
        return _split_table(state, router, aliases)
    if isinstance(state, dict):
        split = {k: split_value(v, router, aliases) for k, v in state.items()}
        return [{k: split[k][p] for k in state} for p in range(parts)]
    if isinstance(state, list | tuple):
        items = [split_value(v, router, aliases) for v in state]
        per = [[it[p] for it in items] for p in range(parts)]
        return [type(state)(x) if isinstance(state, tuple) else x for x in per]
    return [state] * parts


def _split_table(
    table: pa.Table | pa.RecordBatch, router: HashRouter, aliases: dict[str, str]
) -> list[Any]:
    names = set(table.schema.names)
    columns = [c if c in names else aliases.get(c, c) for c in router.key_columns]
    if not router.key_columns or not all(c in names for c in columns):
        if table.num_rows:
            raise ExecutionError(
                "cannot re-partition operator state: a state table lacks the routing"
                f" key ({', '.join(router.key_columns)}); columns: {', '.join(table.schema.names)}"
            )
        return [table] * router.num_partitions
    ids = router.partitions_of([table.column(c) for c in columns])
    return [table.filter(pa.array(ids == p)) for p in range(router.num_partitions)]


def key_aliases(plan: n.Node) -> dict[str, str]:
    """Routing key column -> its GROUP BY output name, where they differ."""
    out: dict[str, str] = {}
    for node in n.walk(plan):
        if isinstance(node, n.Aggregate):
            for name, expr in node.keys:
                if isinstance(expr, Col) and expr.name != name:
                    out[expr.name] = name
    return out


# ROWS window state: {"size", "keys": [array per PARTITION BY expr], "count":
# array by id, "tail": {"start", "length" by id, "cols": slabs}, "funcs": [dicts
# of arrays by id or (array, identity)], "pending": held-back rows,
# "pending_order": their order}.
_ROWS_FIELDS = frozenset({"size", "keys", "count", "tail", "funcs", "pending", "pending_order"})


def _is_rows_state(node: n.Node, state: Any) -> bool:
    return isinstance(node, n.RowsWindow) and isinstance(state, dict) and set(state) >= _ROWS_FIELDS


def _rows_partitions(state: dict[str, Any], router: HashRouter, node: n.RowsWindow) -> np.ndarray:
    """The partition of each id of a ROWS window state."""
    if not int(state["size"]):
        return np.zeros(0, np.uint16)
    keys = list(state["keys"])
    return router.partitions_of([_partition_by_values(node, keys, c) for c in router.key_columns])


def _owned_rows(
    state: dict[str, Any], router: HashRouter, node: n.RowsWindow, p: int
) -> dict[str, Any]:
    ids = np.flatnonzero(_rows_partitions(state, router, node) == p)
    held = _held(state)
    pending = state["pending"]
    mine = np.flatnonzero(router.partitions(pending) == p) if held else np.zeros(0, np.int64)
    return _select_rows_state(state, ids, mine)


def _split_rows(state: dict[str, Any], router: HashRouter, node: n.RowsWindow) -> list[Any]:
    part = _rows_partitions(state, router, node)
    pending = state["pending"]
    pending_part = router.partitions(pending) if pending is not None else np.zeros(0, np.uint16)
    out = []
    for p in range(router.num_partitions):
        ids = np.flatnonzero(part == p)
        held = np.flatnonzero(pending_part == p)
        out.append(_select_rows_state(state, ids, held))
    return out


def _partition_by_values(node: n.RowsWindow, keys: list[Any], column: str) -> Any:
    for i, expr in enumerate(node.partition_by):
        if isinstance(expr, Col) and expr.name == column and i < len(keys):
            return keys[i]
    return None


def _select_rows_state(state: dict[str, Any], ids: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    size = int(state["size"])
    tail = state["tail"]
    lengths = tail["length"][ids]
    rows = np.repeat(tail["start"][ids], lengths) + _ranges(lengths)
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
        "funcs": [_take_by_id(f, ids, size) for f in state["funcs"]],
        "pending": None if pending is None or not len(held) else pending.take(pa.array(held)),
        "pending_order": np.argsort(np.argsort(order[held], kind="stable"), kind="stable"),
    }


def _take_slab(slab: Any, rows: np.ndarray) -> Any:
    if slab is None:
        return None
    data, valid, *rest = slab
    return (data[rows], valid[rows], *rest)


def _take_by_id(value: Any, ids: np.ndarray, size: int) -> Any:
    """Select ids from every array indexed by partition id (a shorter array
    covers a prefix of the ids)."""
    if isinstance(value, np.ndarray):
        return value[ids[ids < len(value)]]
    if isinstance(value, dict):
        return {k: _take_by_id(v, ids, size) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_take_by_id(v, ids, size) for v in value)
    return value


def _merge_rows(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    sizes = [int(st["size"]) for st in states]
    used = [sum(int(x) for x in st["tail"]["length"]) for st in states]
    compact = [
        _select_rows_state(st, np.arange(sz), np.arange(_held(st)))
        for st, sz in zip(states, sizes, strict=True)
    ]
    keyed = [st for st in compact if st["size"]]
    width = len(states[0]["tail"]["cols"])
    offsets = np.cumsum([0, *used[:-1]])
    pending = [st["pending"] for st in compact if st["pending"] is not None]
    orders = [st["pending_order"] for st in compact if st["pending"] is not None]
    bases = np.cumsum([0, *(len(o) for o in orders[:-1])])
    return {
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


def _numbered(state: dict[str, Any]) -> dict[str, Any]:
    """A ROWS state whose held-back rows (in arrival order) carry ``__arrival``
    numbers below zero, so they sort before the rows routed after a restore."""
    pending = state["pending"]
    if pending is None or ARRIVAL in pending.schema.names:
        return state
    numbers = np.arange(-pending.num_rows, 0, dtype=np.int64)
    return {**state, "pending": pending.append_column(ARRIVAL, pa.array(numbers))}


def _by_arrival(state: dict[str, Any]) -> dict[str, Any]:
    """A merged ROWS state with held-back rows back in arrival order, without
    ``__arrival`` (V1's format)."""
    pending = state["pending"]
    if pending is None or ARRIVAL not in pending.schema.names:
        return state
    perm = np.argsort(pending.column(ARRIVAL).to_numpy(), kind="stable")
    pending = pending.drop_columns([ARRIVAL]).take(pa.array(perm))
    return {**state, "pending": pending, "pending_order": state["pending_order"][perm]}


def _held(state: dict[str, Any]) -> int:
    pending = state["pending"]
    return 0 if pending is None else pending.num_rows


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
    first = values[0]
    if isinstance(first, np.ndarray):
        return np.concatenate([_pad(v, sz, 0) for v, sz in zip(values, sizes, strict=True)])
    if isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], np.ndarray):
        ident = first[1]
        arrays = [_pad(v[0], sz, ident) for v, sz in zip(values, sizes, strict=True)]
        return (np.concatenate(arrays), ident)
    if isinstance(first, dict):
        return {k: _concat_by_id([v[k] for v in values], sizes) for k in first}
    return first


def _pad(arr: np.ndarray, size: int, fill: Any) -> np.ndarray:
    if len(arr) >= size:
        return arr[:size]
    return np.concatenate([arr, np.full(size - len(arr), fill, dtype=arr.dtype)])


def _ranges(lengths: np.ndarray) -> np.ndarray:
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
