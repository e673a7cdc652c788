"""Kafka jobs on the job server fail cleanly (issue 9).

- A deploy the Kafka client refuses (an unreachable broker, an unknown client
  property, an unsupported ``sasl.mechanism``) answers 400 with the client's
  reason, secrets masked, within seconds, and leaves no client behind: 50 of
  them in a row leave the threads (librdkafka's are native) and the file
  descriptors of the process where they were.
- A V2 worker of a running Kafka job that dies, or stops, fails the job as soon
  as a plain job would.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowsql.server.api import create_app
from flowsql.server.job import JobState
from flowsql.server.jobserver import StreamJobServer
from tests.broker import free_port
from tests.integration.kafka.kafka_helpers import produce_json
from tests.integration.kafka.test_kafka_job import job_sql
from tests.polling import wait_until
from tests.serving import PROGRAM_HEADERS, live_client

pytestmark = pytest.mark.kafka

SECRET = "hunter2-secret"


def bad_deploys(bootstrap: str, source: str, out: str, ckpt: Path) -> dict[str, str]:
    """SQL the Kafka client refuses, by case."""

    def sql(broker: str, **extra: str) -> str:
        return job_sql(
            "SELECT id, price FROM trades",
            bootstrap=broker,
            source=source,
            out=out,
            group=f"g-{out}",
            ckpt=ckpt,
            trades__bounded="none",
            **extra,
        )

    return {
        "unreachable": sql(f"127.0.0.1:{free_port()}"),
        "unknown property": sql(bootstrap, trades__properties__bogus__key="x"),
        "bad sasl.mechanism": sql(
            bootstrap,
            trades__properties__security__protocol="SASL_PLAINTEXT",
            trades__properties__sasl__mechanism="BOGUS",
            trades__properties__sasl__username="flowsql",
            trades__properties__sasl__password=SECRET,
        ),
    }


@contextmanager
def live(server: StreamJobServer) -> Iterator[httpx.Client]:
    """The server's API on a free loopback port, and a client of it."""
    with live_client(create_app(server), headers=PROGRAM_HEADERS) as client:
        yield client


# -- deploy errors --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_refused_deploys_answer_400_with_the_reason_and_secrets_masked(
    server, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("bad-in"), new_topic("bad-out")
    cases = bad_deploys(bootstrap, source, out, tmp_path / "ckpt")
    with live(server) as client:
        answers = {}
        for case, sql in cases.items():
            started = time.monotonic()
            answers[case] = client.post("/jobs", json={"sql": sql})
            assert time.monotonic() - started < 10, f"{case}: a deploy must fail fast"
    for case, answer in answers.items():
        assert answer.status_code == 400, (case, answer.text)
        assert SECRET not in answer.text
        assert "Traceback" not in answer.text
    assert "cannot be reached" in answers["unreachable"].json()["error"]
    assert "Connection refused" in answers["unreachable"].json()["error"]
    unknown = answers["unknown property"].json()
    assert unknown["key"] == "trades.properties.bogus.key"
    assert "No such configuration property" in unknown["allowed"]
    sasl = answers["bad sasl.mechanism"].json()
    assert sasl["key"] == "trades.properties.sasl.mechanism"
    assert "Unsupported SASL mechanism" in sasl["allowed"]
    assert server.jobs() == []


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(300)
def test_fifty_refused_deploys_leave_no_client_threads_nor_descriptors(
    server, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("leak-in"), new_topic("leak-out")
    cases = list(bad_deploys(bootstrap, source, out, tmp_path / "ckpt").values())
    with live(server) as client:

        def deploy(i: int) -> None:
            answer = client.post("/jobs", json={"sql": cases[i % len(cases)]})
            assert answer.status_code == 400, answer.text

        for i in range(2 * len(cases)):  # warm up: pools and allocator threads start once
            deploy(i)
        gc.collect()
        before = (threading.active_count(), native_threads(), open_fds())
        gc.disable()  # released by the error path itself, not when a collection finds a cycle
        try:
            for i in range(50):
                deploy(i)
            after = (threading.active_count(), native_threads(), open_fds())
        finally:
            gc.enable()
    assert after[0] <= before[0] + 2, f"Python threads {before[0]} -> {after[0]}"
    assert after[1] <= before[1] + 2, f"native threads {before[1]} -> {after[1]}"
    assert after[2] <= before[2] + 2, f"file descriptors {before[2]} -> {after[2]}"


# -- a worker that dies or stops --------------------------------------------------------


Feed = Callable[[int, int], None]


def running_job(server: StreamJobServer, bootstrap: str, new_topic: Any, ckpt: Path) -> Feed:
    """A V2 Kafka job that has read its first records; returns what feeds it more."""
    source, out = new_topic("w-in", 2), new_topic("w-out")
    sql = "-- @job_mode: v2\n-- @num_partitions: 2\n" + job_sql(
        "SELECT id, symbol, price FROM trades WHERE price >= 0",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=ckpt,
        trades__bounded="none",
        v2__heartbeat__timeout="1s",
    )
    server.deploy(sql)

    def feed(first: int, count: int) -> None:
        rows = [
            {"id": i, "symbol": f"S{i % 16}", "price": 1.0, "ts": 1000 + i}
            for i in range(first, first + count)
        ]
        produce_json(bootstrap, source, rows, key="symbol")

    feed(0, 200)
    wait_until(lambda: server.status("out").records_in >= 200, "first records read", 30)
    return feed


def processors(server: StreamJobServer) -> list[Any]:
    tasks = server.job("out").kafka.tasks.values()  # type: ignore[union-attr]
    return [t.processor for t in tasks if t.processor is not None]


@pytest.mark.timeout(120)
def test_a_killed_worker_fails_the_kafka_job_at_once(server, bootstrap, new_topic, tmp_path):
    running_job(server, bootstrap, new_topic, tmp_path / "ckpt")
    pid = processors(server)[0].workers[0].process.pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: server.status("out").state == JobState.FAILED, "FAILED", 3)
    error = server.status("out").last_error
    assert error is not None and f"(pid {pid}) died" in error


@pytest.mark.timeout(120)
def test_a_stopped_worker_fails_the_kafka_job(server, bootstrap, new_topic, tmp_path):
    feed = running_job(server, bootstrap, new_topic, tmp_path / "ckpt")
    pids = [p.workers[1].process.pid for p in processors(server)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        feed(200, 200)  # work for the stopped workers
        wait_until(lambda: server.status("out").state == JobState.FAILED, "FAILED", 15)
        error = server.status("out").last_error
        assert error is not None and "stalled" in error
        assert any(f"partition 1 (pid {pid}) stalled" in error for pid in pids), error
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
