"""A V2 worker that stops making progress fails its job instead of hanging it (issue 9).

A worker stopped with SIGSTOP keeps its pipe open and its process alive, so
neither EOF nor the process sentinel ever wakes the coordinator. Its heartbeat
thread stops with it: once it has been silent for ``'v2.heartbeat.timeout'``
with work outstanding, the job fails naming the partition and the pid, and the
worker is killed. A worker that is only busy keeps beating and is left alone.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flowsql.errors import ConfigError, ExecutionError
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink
from flowsql.runtime.coordinator import PartitionedJobCoordinator
from flowsql.runtime.splits import SplitData, jsonl_splits
from flowsql.runtime.worker import DEFAULT_HEARTBEAT_TIMEOUT_S, heartbeat_timeout
from flowsql.server.config import ServerSettings
from flowsql.server.job import JobState
from flowsql.server.jobserver import StreamJobServer
from flowsql.sql import parse_one
from tests.polling import wait_until

# Workers unpickle BusySplit by its module name (``security.test_stalled_worker``
# under --import-mode=importlib): they inherit sys.path, so put tests/ on it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = 1_700_000_000_000
#: Heartbeat timeout of these tests: low, so a stall shows quickly.
TIMEOUT_S = 1.0
#: Longest a stall may take to fail the job: the timeout, one check interval, and
#: room for a loaded machine (the point is "bounded", not "fast").
LIMIT_S = TIMEOUT_S + 10


def trades(rows: int, first: int = 0) -> pa.RecordBatch:
    ids = np.arange(first, first + rows)
    return pa.record_batch(
        {
            "symbol": pa.array([f"S{i % 7}" for i in ids]),
            "price": pa.array(ids % 100, pa.float64()),
            "ts": pa.array(T0 + ids, pa.int64()),
        }
    )


def stop(pid: int | None) -> int:
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return pid


def assert_reaped(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: neither stopped nor a zombie


def resume(pid: int) -> None:
    """Cleanup for a failed test: let a stopped worker run (and die) again."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


# -- the coordinator ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_stopped_worker_fails_the_routing_path_naming_partition_and_pid() -> None:
    statement = parse_one("SELECT symbol, price FROM t WHERE price > 1")
    v2 = PartitionedJobCoordinator(statement, num_partitions=2, heartbeat_timeout_s=TIMEOUT_S)
    pid = 0
    try:
        v2.process_batch(trades(500))
        v2.drain()
        pid = stop(v2.workers[1].process.pid)
        started = time.monotonic()
        with pytest.raises(ExecutionError) as failed:
            for i in range(1, 1_000):  # the credit runs out: the coordinator waits on it
                v2.process_batch(trades(500, i * 500))
            v2.drain()
        elapsed = time.monotonic() - started
        assert f"partition 1 (pid {pid}) stalled" in str(failed.value)
        assert "'v2.heartbeat.timeout' = 1s" in str(failed.value)
        assert elapsed < LIMIT_S
        assert all(w.closed for w in v2.workers)
        assert_reaped(pid)
    finally:
        resume(pid)
        v2.close()


@pytest.mark.timeout(60)
def test_a_stopped_worker_fails_a_source_parallel_run(tmp_path: Path) -> None:
    path = tmp_path / "trades.jsonl"
    with path.open("w") as f:
        for i in range(20_000):
            f.write(f'{{"symbol": "S{i % 7}", "price": {i % 100}, "ts": {T0 + i}}}\n')
    splits = jsonl_splits(path, source="t", split_bytes=4_096)
    assert splits is not None and len(splits) > 50
    statement = parse_one("SELECT symbol, price FROM t WHERE price > 1")
    v2 = PartitionedJobCoordinator(statement, num_partitions=2, heartbeat_timeout_s=TIMEOUT_S)
    pid = 0
    try:
        outputs = v2.run_splits(splits)
        next(outputs)
        pid = stop(v2.workers[0].process.pid)
        with pytest.raises(ExecutionError, match=rf"partition 0 \(pid {pid}\) stalled"):
            for _ in outputs:
                pass
        assert_reaped(pid)
    finally:
        resume(pid)
        v2.close()


@dataclass(frozen=True)
class BusySplit:
    """A split whose reading keeps the worker busy (in Python, holding the GIL
    but for the interpreter's switch interval) for ``seconds``."""

    seconds: float
    first: int
    batches: tuple[int, int] | None = None  # rows need no cutting like a batch run

    def read(self) -> SplitData:
        deadline = time.monotonic() + self.seconds
        spins = 0
        while time.monotonic() < deadline:
            spins += 1
        return SplitData([trades(10, self.first)], [])

    def lines(self) -> int:
        return 10


@pytest.mark.timeout(60)
def test_a_worker_busy_for_longer_than_the_timeout_is_not_stalled() -> None:
    statement = parse_one("SELECT symbol, price FROM t")
    with PartitionedJobCoordinator(
        statement, num_partitions=2, heartbeat_timeout_s=TIMEOUT_S
    ) as v2:
        splits = [BusySplit(3 * TIMEOUT_S, 0), BusySplit(3 * TIMEOUT_S, 10)]
        rows = [r for b in v2.run_splits(splits) for r in b.to_pylist()]
    assert len(rows) == 20


@pytest.mark.timeout(60)
def test_an_idle_worker_may_be_stopped_until_work_is_given_to_it() -> None:
    """No work outstanding: nothing to wait for, so nothing fails (a worker
    paused by a debugger is not a stall); the first batch it gets then fails."""
    statement = parse_one("SELECT symbol FROM t")
    v2 = PartitionedJobCoordinator(statement, num_partitions=2, heartbeat_timeout_s=TIMEOUT_S)
    pid = 0
    try:
        v2.process_batch(trades(100))
        v2.drain()
        pid = stop(v2.workers[0].process.pid)
        time.sleep(2 * TIMEOUT_S)
        assert v2.failure is None
        v2.process_batch(trades(100, 100))
        with pytest.raises(ExecutionError, match=rf"partition 0 \(pid {pid}\) stalled"):
            v2.drain()
        assert_reaped(pid)
    finally:
        resume(pid)
        v2.close()


def test_the_timeout_is_a_with_key_with_a_documented_default() -> None:
    assert heartbeat_timeout({}) == DEFAULT_HEARTBEAT_TIMEOUT_S == 10.0
    assert heartbeat_timeout({"v2.heartbeat.timeout": "1500ms"}) == 1.5
    assert heartbeat_timeout({"v2.heartbeat.timeout": "2s"}) == 2.0
    assert heartbeat_timeout({"v2.heartbeat.timeout": "0"}) == 0.0  # off
    with pytest.raises(ConfigError, match="v2.heartbeat.timeout"):
        heartbeat_timeout({"v2.heartbeat.timeout": "soon"})
    statement = parse_one("SELECT symbol FROM t WITH ('v2.heartbeat.timeout' = '3s')")
    with PartitionedJobCoordinator(statement, num_partitions=1) as v2:
        assert v2.heartbeat_timeout_s == 3.0
        assert v2.workers[0].heartbeat_timeout == 3.0


# -- the job server -----------------------------------------------------------------


class FedSource:
    """A source the test feeds; idle, it yields empty batches (so the job loops)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dead_lettered = 0
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue()

    def push(self, batch: pa.RecordBatch) -> None:
        self._queue.put(batch)

    def end(self) -> None:
        self._queue.put(None)

    def batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._queue.get(timeout=0.02)
            except queue.Empty:
                yield trades(0)
                continue
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        self.end()


class NullSink:
    def write(self, batch: pa.RecordBatch) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.fixture
def served() -> Iterator[tuple[StreamJobServer, dict[str, FedSource]]]:
    sources: dict[str, FedSource] = {}

    def source(statement: Statement, letters: DeadLetterSink) -> Any:
        return sources.setdefault(statement.name, FedSource(statement.sources[0]))

    server = StreamJobServer(
        ServerSettings(), source_factory=source, sink_factory=lambda statement: NullSink()
    )
    try:
        yield server, sources
    finally:
        for fed in sources.values():
            fed.end()
        server.shutdown()


@pytest.mark.timeout(60)
def test_a_server_job_fails_when_a_worker_is_stopped_and_the_server_goes_on(served) -> None:
    server, sources = served
    server.deploy(
        "-- @job_mode: v2\n-- @num_partitions: 2\n"
        "CREATE STREAM watched AS SELECT symbol, price FROM trades"
        " WITH ('v2.heartbeat.timeout' = '1s')"
    )
    sources["watched"].push(trades(200))
    wait_until(lambda: server.status("watched").records_in >= 200, "first rows in", 30)
    pid = 0
    try:
        pid = stop(server.job("watched").processor.workers[1].process.pid)  # type: ignore[union-attr]
        started = time.monotonic()
        for i in range(1, 20):
            sources["watched"].push(trades(200, i * 200))
        wait_until(lambda: server.status("watched").state == JobState.FAILED, "FAILED", LIMIT_S)
        assert time.monotonic() - started < LIMIT_S
        error = server.status("watched").last_error
        assert error is not None and f"partition 1 (pid {pid}) stalled" in error
        wait_until(lambda: not _alive(pid), "the stopped worker killed", 10)
    finally:
        resume(pid)
    server.deploy("CREATE STREAM after AS SELECT symbol FROM trades")
    sources["after"].push(trades(5))
    sources["after"].end()
    wait_until(lambda: server.status("after").state == JobState.FINISHED, "FINISHED", 30)


def test_a_bad_heartbeat_timeout_fails_the_deploy(served) -> None:
    server, _ = served
    with pytest.raises(ConfigError, match="v2.heartbeat.timeout"):
        server.deploy(
            "CREATE STREAM s AS SELECT symbol FROM trades WITH ('v2.heartbeat.timeout' = 'x')"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
