"""StreamJobServer: deploy, concurrent jobs, status, pause/resume/stop, failure
strategies, processor choice, a worker that dies."""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from flowsql.connectors.files import JsonlSink, JsonlSource
from flowsql.errors import ConfigError, ExecutionError
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink
from flowsql.runtime.factory import make_processor
from flowsql.runtime.processor import JobProcessor, SimpleJobProcessor
from flowsql.server.config import FileAccessError, ProcessorChoice, ServerSettings
from flowsql.server.job import JobState
from flowsql.server.jobserver import JobConflictError, StreamJobServer, UnknownJobError
from tests.polling import wait_until

START = 1_704_067_200_000


class PacedSource:
    """A source the test feeds batch by batch; idle, it yields empty heartbeats."""

    def __init__(self, name: str = "trades", heartbeat: bool = True) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.dead_lettered = 0
        self.closed = False
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue()

    def push(self, *batches: pa.RecordBatch) -> PacedSource:
        for batch in batches:
            self._queue.put(batch)
        return self

    def end(self) -> PacedSource:
        self._queue.put(None)
        return self

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._queue.get(timeout=0.02 if self.heartbeat else None)
            except queue.Empty:
                yield pa.record_batch({"x": pa.array([], pa.int64())})
                continue
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        self.closed = True


class ListSink:
    """Keeps every batch written."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.flushes = 0
        self.closed = False

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True  # what was written stays: the tests read it

    def rows(self) -> list[dict[str, Any]]:
        return [row for b in self.batches for row in b.to_pylist()]


def trades(first: int, n: int) -> pa.RecordBatch:
    ids = list(range(first, first + n))
    return pa.record_batch(
        {
            "id": pa.array(ids, pa.int64()),
            "symbol": pa.array([f"S{i % 3}" for i in ids]),
            "price": pa.array([float(i) for i in ids]),
            "_timestamp": pa.array([START + i for i in ids], pa.int64()),
        }
    )


class Harness:
    """A server whose jobs read PacedSources and write ListSinks, by job name."""

    def __init__(
        self, processor_factory: Any = make_processor, heartbeat: bool = True, **settings: Any
    ) -> None:
        self.heartbeat = heartbeat
        self.sources: dict[str, PacedSource] = {}
        self.sinks: dict[str, ListSink] = {}
        self.server = StreamJobServer(
            ServerSettings(**settings),
            source_factory=self._source,
            sink_factory=self._sink,
            processor_factory=processor_factory,
        )

    def _source(self, statement: Statement, letters: DeadLetterSink) -> PacedSource:
        source = PacedSource(statement.sources[0], self.heartbeat)
        return self.sources.setdefault(statement.name, source)

    def _sink(self, statement: Statement) -> ListSink:
        return self.sinks.setdefault(statement.name, ListSink())

    def wait_state(self, name: str, *states: JobState) -> dict[str, Any]:
        wanted = {s.value for s in states}
        wait_until(lambda: self.server.status(name).state in wanted, f"{name} in {wanted}")
        return self.server.status(name).to_dict()

    def wait_records(self, name: str, records_in: int) -> None:
        wait_until(
            lambda: self.server.status(name).records_in >= records_in,
            f"{name} read {records_in} records",
        )


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    for source in h.sources.values():
        source.end()
    h.server.shutdown()


APP = """
CREATE STREAM cheap AS SELECT id, symbol, price FROM trades WHERE price < 5
  WITH ('trades.properties.sasl.password' = 'hunter2', 'cheap.topic' = 'out');
CREATE STREAM dear AS SELECT id, price * 2 AS double_price FROM trades WHERE price >= 5;
SELECT id FROM trades WHERE id = 7;
"""


def test_deploy_runs_each_statement_as_a_job(harness: Harness) -> None:
    statuses = harness.server.deploy(APP)
    assert [s.name for s in statuses] == ["cheap", "dear", "query_1"]
    for name in ("cheap", "dear", "query_1"):
        harness.sources[name].push(trades(0, 6), trades(6, 4)).end()
    for name in ("cheap", "dear", "query_1"):
        harness.wait_state(name, JobState.FINISHED)
    assert [r["id"] for r in harness.sinks["cheap"].rows()] == [0, 1, 2, 3, 4]
    assert harness.sinks["dear"].rows()[0] == {"id": 5, "double_price": 10.0}
    assert harness.sinks["query_1"].rows() == [{"id": 7}]
    assert all(harness.sources[name].closed for name in harness.sources)


def test_status_fields(harness: Harness) -> None:
    harness.server.deploy(APP)
    harness.sources["cheap"].push(trades(0, 10))
    harness.wait_records("cheap", 10)
    status = harness.server.status("cheap").to_dict()
    assert status["state"] == "RUNNING"
    assert status["processor"] == "SimpleJobProcessor"
    assert (status["processor_version"], status["num_partitions"]) == ("V1", 1)
    assert (status["records_in"], status["records_out"]) == (10, 5)
    assert status["watermark_ms"] == START + 9
    assert status["watermark"].startswith("2024-01-01T00:00:00.009")
    assert status["late_records"] == 0 and status["dead_lettered"] == 0
    assert status["last_error"] is None
    assert status["failure_strategy"] == "send_to_dlq"
    assert status["records_per_second"] > 0
    assert status["properties"]["trades.properties.sasl.password"] == "****"
    assert "hunter2" not in str(status)
    names = [s.name for s in harness.server.jobs()]
    assert names == ["cheap", "dear", "query_1"]


def test_pause_holds_batches_until_resume(harness: Harness) -> None:
    harness.server.deploy("CREATE STREAM s AS SELECT id FROM trades")
    source = harness.sources["s"]
    source.push(trades(0, 3))
    harness.wait_records("s", 3)
    assert harness.server.pause("s").state == "PAUSED"
    source.push(trades(3, 3))
    wait_until(lambda: source.pending == 0, "the job took the batch")
    assert harness.server.status("s").records_in == 3  # held at the boundary
    assert harness.server.resume("s").state == "RUNNING"
    harness.wait_records("s", 6)
    source.end()
    harness.wait_state("s", JobState.FINISHED)
    assert [r["id"] for r in harness.sinks["s"].rows()] == list(range(6))


def test_stop_and_forget(harness: Harness) -> None:
    harness.server.deploy("CREATE STREAM s AS SELECT id FROM trades")
    harness.sources["s"].push(trades(0, 3))
    harness.wait_records("s", 3)
    status = harness.server.stop("s")
    assert status.state == "STOPPED"
    assert harness.server.job("s").join(10)
    assert harness.sources["s"].closed and harness.sinks["s"].closed
    with pytest.raises(JobConflictError, match="STOPPED"):
        harness.server.pause("s")
    harness.server.stop("s", forget=True)
    with pytest.raises(UnknownJobError, match="no job named 's'"):
        harness.server.status("s")


def test_names_must_be_unique_while_running(harness: Harness) -> None:
    harness.server.deploy("CREATE STREAM s AS SELECT id FROM trades")
    with pytest.raises(JobConflictError, match="stop it first"):
        harness.server.deploy("CREATE STREAM s AS SELECT id FROM trades")
    with pytest.raises(JobConflictError, match="twice"):
        harness.server.deploy(
            "CREATE STREAM t AS SELECT id FROM a; CREATE STREAM t AS SELECT id FROM b"
        )
    harness.server.stop("s")
    harness.sources.pop("s")
    harness.server.deploy("CREATE STREAM s AS SELECT id FROM trades")  # a stopped job is replaced
    assert harness.server.status("s").state == "RUNNING"


def test_deploy_is_all_or_nothing(harness: Harness) -> None:
    app = "CREATE STREAM ok AS SELECT id FROM trades;\n-- @job_mode: v9\nCREATE STREAM bad AS SELECT id FROM trades"
    with pytest.raises(ConfigError) as info:
        harness.server.deploy(app)
    assert info.value.key == "bad.@job_mode"
    assert harness.server.jobs() == []
    assert harness.sources["ok"].closed  # opened, then released


class RecordingFactory:
    """Builds V1 processors but records the choice it was asked for."""

    def __init__(self) -> None:
        self.choices: list[ProcessorChoice] = []

    def __call__(
        self, statement: Statement, choice: ProcessorChoice, dead_letters: DeadLetterSink
    ) -> JobProcessor:
        self.choices.append(choice)
        return SimpleJobProcessor(statement, dead_letters=dead_letters)


def test_annotations_and_runtime_default() -> None:
    factory = RecordingFactory()
    h = Harness(processor_factory=factory, v2_config={"num_partitions": 4})
    try:
        h.server.deploy(
            "CREATE STREAM a AS SELECT id FROM t;\n"
            "-- @job_mode: v2\nCREATE STREAM b AS SELECT id FROM t;\n"
            "-- @num_partitions: 3\nCREATE STREAM c AS SELECT id FROM t;"
        )
        assert factory.choices == [
            ProcessorChoice("v1", 4),
            ProcessorChoice("v2", 4),
            ProcessorChoice("v2", 3),
        ]
        assert h.server.set_default_processor("v2", 2) == ProcessorChoice("v2", 2)
        h.server.deploy("CREATE STREAM d AS SELECT id FROM t;\n-- @job_mode: v1\nSELECT id FROM t")
        assert factory.choices[3:] == [ProcessorChoice("v2", 2), ProcessorChoice("v1", 2)]
        with pytest.raises(ConfigError) as info:
            h.server.set_default_processor("v7")
        assert info.value.key == "server.job_mode"
    finally:
        for source in h.sources.values():
            source.end()
        h.server.shutdown()


class FlakyProcessor(SimpleJobProcessor):
    """Raises on batches whose first id is negative; ``heal_after`` attempts fix it."""

    def __init__(self, statement: Statement, dead_letters: DeadLetterSink, heal_after: int) -> None:
        super().__init__(statement, dead_letters=dead_letters)
        self.heal_after = heal_after
        self.attempts = 0

    def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        if batch.num_rows and batch.column("id")[0].as_py() < 0:
            self.attempts += 1
            if self.attempts <= self.heal_after:
                raise ValueError(f"cannot process id {batch.column('id')[0].as_py()}")
        return super().process_batch(batch)


def flaky(heal_after: int = 1_000_000) -> Callable[..., JobProcessor]:
    def factory(statement: Statement, choice: ProcessorChoice, letters: DeadLetterSink) -> Any:
        return FlakyProcessor(statement, letters, heal_after)

    return factory


def run_flaky(strategy: str, heal_after: int = 1_000_000, extra: str = "") -> tuple[Harness, dict]:
    h = Harness(processor_factory=flaky(heal_after))
    sql = (
        f"CREATE STREAM f AS SELECT id FROM trades WITH ('failure_strategy' = '{strategy}'{extra})"
    )
    h.server.deploy(sql)
    bad = pa.record_batch({"id": pa.array([-1, -2], pa.int64())})
    h.sources["f"].push(trades(0, 2), bad, trades(2, 2)).end()
    status = h.wait_state("f", JobState.FINISHED, JobState.FAILED)
    h.server.shutdown()
    return h, status


def test_send_to_dlq_is_the_default_and_keeps_going() -> None:
    h, status = run_flaky("send_to_dlq")
    assert status["state"] == "FINISHED"
    assert [r["id"] for r in h.sinks["f"].rows()] == [0, 1, 2, 3]
    assert (status["dead_lettered"], status["failed_batches"]) == (2, 1)
    letters = h.server.dead_letters("f")
    assert [letter.original for letter in letters] == ['{"id": -1}', '{"id": -2}']
    assert "cannot process id -1" in letters[0].error
    assert "cannot process id -1" in status["last_error"]


def test_log_and_continue_skips_the_batch() -> None:
    h, status = run_flaky("log_and_continue")
    assert status["state"] == "FINISHED"
    assert [r["id"] for r in h.sinks["f"].rows()] == [0, 1, 2, 3]
    assert (status["dead_lettered"], status["failed_batches"]) == (0, 1)
    assert h.server.dead_letters("f") == []


def test_fail_batch_fails_the_job() -> None:
    h, status = run_flaky("fail_batch")
    assert status["state"] == "FAILED"
    assert "cannot process id -1" in status["last_error"]
    assert [r["id"] for r in h.sinks["f"].rows()] == [0, 1]
    assert h.sources["f"].closed


def test_retry_with_backoff_recovers() -> None:
    extra = ", 'max_retries' = '3', 'retry_backoff' = '1ms'"
    h, status = run_flaky("retry_with_backoff", heal_after=2, extra=extra)
    assert status["state"] == "FINISHED"
    assert (status["retries"], status["failed_batches"]) == (2, 0)
    assert [r["id"] for r in h.sinks["f"].rows()] == [0, 1, -1, -2, 2, 3]


def test_retry_with_backoff_gives_up() -> None:
    extra = ", 'max_retries' = '2', 'retry_backoff' = '1ms'"
    h, status = run_flaky("retry_with_backoff", extra=extra)
    assert status["state"] == "FAILED"
    assert status["retries"] == 2
    assert "cannot process id -1" in status["last_error"]


def test_bad_failure_strategy_is_refused(harness: Harness) -> None:
    with pytest.raises(ConfigError) as info:
        harness.server.deploy(
            "CREATE STREAM f AS SELECT id FROM t WITH ('failure_strategy' = 'pray')"
        )
    assert info.value.key == "f.failure_strategy"
    assert "retry_with_backoff" in str(info.value)


def test_file_paths_outside_roots_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    h = Harness(file_roots=[str(root)])
    try:
        with pytest.raises(FileAccessError) as info:
            h.server.deploy(
                f"CREATE STREAM f AS SELECT id FROM t WITH ('t.path' = '{root}/../x.jsonl')"
            )
        assert str(root) in str(info.value)
        h.server.deploy(f"CREATE STREAM f AS SELECT id FROM t WITH ('t.path' = '{root}/x')")
    finally:
        for source in h.sources.values():
            source.end()
        h.server.shutdown()


def test_an_injected_file_source_or_sink_outside_the_roots_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (outside / "in.jsonl").write_text('{"id": 1}\n')
    (root / "in.jsonl").write_text('{"id": 1}\n')

    def deploy(source_path: Path, sink_path: Path) -> None:
        server = StreamJobServer(
            ServerSettings(file_roots=[str(root)]),
            source_factory=lambda statement, letters: JsonlSource(source_path, name="t"),
            sink_factory=lambda statement: JsonlSink(sink_path),
        )
        try:
            server.deploy("CREATE STREAM f AS SELECT id FROM t")
        finally:
            server.shutdown()

    with pytest.raises(FileAccessError, match="source path"):
        deploy(outside / "in.jsonl", root / "out.jsonl")
    with pytest.raises(FileAccessError, match="sink path"):
        deploy(root / "in.jsonl", outside / "out.jsonl")
    deploy(root / "in.jsonl", root / "out.jsonl")


def test_a_failing_processor_does_not_take_the_server_down(harness: Harness) -> None:
    harness.server.deploy(
        "CREATE STREAM boom AS SELECT id FROM trades WITH ('failure_strategy'='fail_batch');"
        "CREATE STREAM fine AS SELECT id FROM trades"
    )
    harness.sources["boom"].push(pa.record_batch({"nope": pa.array([1])}))
    status = harness.wait_state("boom", JobState.FAILED)
    assert status["last_error"]
    harness.sources["fine"].push(trades(0, 2)).end()
    harness.wait_state("fine", JobState.FINISHED)


# -- V2: a worker process that dies -----------------------------------------------------


@pytest.mark.parametrize("heartbeat", [True, False], ids=["busy-source", "idle-source"])
def test_killed_worker_fails_the_job_and_the_server_stays_up(heartbeat: bool) -> None:
    harness = Harness(heartbeat=heartbeat)
    try:
        check_worker_kill(harness, more_input=heartbeat)
    finally:
        for source in harness.sources.values():
            source.end()
        harness.server.shutdown()


def check_worker_kill(harness: Harness, *, more_input: bool) -> None:
    harness.server.deploy(
        "-- @job_mode: v2\n-- @num_partitions: 2\n"
        "CREATE STREAM v2job AS SELECT symbol, price FROM trades WHERE price >= 0"
    )
    source = harness.sources["v2job"]
    source.push(trades(0, 30))
    harness.wait_records("v2job", 30)
    job = harness.server.job("v2job")
    before = harness.server.status("v2job")
    assert (before.state, before.last_error, before.processor_version) == ("RUNNING", None, "V2")
    victim = job.processor.workers[0].process.pid  # type: ignore[attr-defined]
    os.kill(victim, signal.SIGKILL)
    if more_input:
        source.push(trades(30, 30), trades(60, 30))
    status = harness.wait_state("v2job", JobState.FAILED)
    assert "died" in status["last_error"] and str(victim) in status["last_error"]
    assert status["finished_at"] is not None
    harness.server.deploy("CREATE STREAM after AS SELECT id FROM trades")
    harness.sources["after"].push(trades(0, 2)).end()
    assert harness.wait_state("after", JobState.FINISHED)["records_out"] == 2


def test_switch_errors_keep_the_old_processor(harness: Harness) -> None:
    harness.server.deploy("CREATE STREAM s AS SELECT id FROM trades")
    with pytest.raises(ConfigError):
        harness.server.switch_processor("s", "v5")

    def broken(statement: Statement, choice: ProcessorChoice, letters: DeadLetterSink) -> Any:
        raise ExecutionError("cannot start workers")

    harness.server.job("s")._factory = broken
    with pytest.raises(ExecutionError, match="cannot start workers"):
        harness.server.switch_processor("s", "v2", 2)
    harness.sources["s"].push(trades(0, 2)).end()
    status = harness.wait_state("s", JobState.FINISHED)
    assert status["processor_version"] == "V1" and status["records_out"] == 2


def test_a_stopped_job_leaves_its_savepoint(tmp_path: Path) -> None:
    from flowsql.state.checkpoint import FileCheckpointStore

    h = Harness(checkpoint_dir=str(tmp_path / "ckpt"))
    try:
        h.server.deploy(
            "CREATE STREAM s AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol"
        )
        h.sources["s"].push(trades(0, 9))
        h.wait_records("s", 9)
        assert h.server.stop("s").state == "STOPPED"
        committed, staged = FileCheckpointStore(tmp_path / "ckpt" / "jobs", "s").load("job")
        assert committed is not None and staged is None
        assert committed.state["max_event_time"] == START + 8
        assert committed.state["operators"]
        assert committed.extra["records_in"] == 9
        assert committed.offsets == {}  # the test's source cannot resume
    finally:
        for source in h.sources.values():
            source.end()
        h.server.shutdown()


@pytest.mark.parametrize("mode", ["v1", "v2"])
def test_a_batch_that_raises_in_sql_is_dead_lettered(harness: Harness, mode: str) -> None:
    harness.server.deploy(
        f"-- @job_mode: {mode}\n-- @num_partitions: 2\n"
        "CREATE STREAM c AS SELECT CAST(symbol AS INT) AS n FROM trades"
    )
    ok = pa.record_batch({"symbol": ["1", "2"], "_timestamp": pa.array([START, START + 1])})
    bad = pa.record_batch({"symbol": ["3", "x"], "_timestamp": pa.array([START + 2, START + 3])})
    harness.sources["c"].push(ok, bad, ok).end()
    status = harness.wait_state("c", JobState.FINISHED, JobState.FAILED)
    assert status["state"] == "FINISHED", status["last_error"]
    assert status["dead_lettered"] == 2
    assert sorted(r["n"] for r in harness.sinks["c"].rows()) == [1, 1, 2, 2]
