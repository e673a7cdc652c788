"""Kafka statements on the job server: run by KafkaJob (checkpoints, commits, per-partition
state), with real status, pause/resume, processor switches, stop and redeploy."""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from flowsql.engine import query
from flowsql.server.job import JobState
from tests import polling
from tests.integration.kafka.kafka_helpers import json_rows, json_sorted, produce_json, read_all
from tests.integration.kafka.test_kafka_job import WINDOWED, job_sql, trades

wait_until = partial(polling.wait_until, limit_s=20)  # small topics

pytestmark = pytest.mark.kafka


def test_bounded_windowed_job_finishes_with_v1_rows_and_real_counters(
    server, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("srv-in", 2), new_topic("srv-out", 2)
    rows = trades(4000, symbols=4)
    produce_json(bootstrap, source, rows, key="symbol")
    sql = "-- @job_mode: v2\n-- @num_partitions: 2\n" + job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        trades__key__columns="symbol",
        trades__batch__size="500",
    )
    (deployed,) = server.deploy(sql)
    assert deployed.kafka is not None and deployed.kafka["group_id"] == f"g-{out}"
    wait_until(lambda: server.status("out").state != JobState.RUNNING, "the job ended")
    status = server.status("out")
    assert status.state == JobState.FINISHED, status.last_error
    got = json_rows(read_all(bootstrap, out))
    want = query(WINDOWED, {"trades": rows}).to_pylist()
    assert json_sorted(got) == json_sorted(want)
    assert status.records_in == len(rows)
    assert status.records_out == len(got) == 4 * 40
    assert (status.processor_version, status.num_partitions) == ("V2", 2)
    assert status.kafka is not None
    assert status.kafka["checkpoints"] > 0
    assert sorted(status.kafka["partitions"]) == [f"{source}:0", f"{source}:1"]
    assert status.watermark_ms == rows[-1]["ts"]  # max event time, no allowed lateness
    assert status.records_per_second > 0 and status.last_error is None


def stream_sql(bootstrap: str, source: str, out: str, group: str, ckpt: Path) -> str:
    return job_sql(
        "SELECT id, symbol, price FROM trades WHERE price >= 0",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=group,
        ckpt=ckpt,
        trades__bounded="none",
        trades__batch__size="200",
    )


def numbered(start: int, count: int) -> list[dict[str, Any]]:
    return [dict(r, id=start + i) for i, r in enumerate(trades(count), start=0)]


def test_unbounded_job_pauses_resumes_switches_stops_and_redeploys_without_repeats(
    server, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("srv-live", 2), new_topic("srv-live-out", 1)
    sql = stream_sql(bootstrap, source, out, f"g-{out}", tmp_path / "ckpt")
    server.deploy(sql)
    produce_json(bootstrap, source, numbered(0, 500), key="symbol")
    wait_until(lambda: server.status("out").records_in == 500, "first 500 read")

    paused = server.pause("out")
    assert paused.state == JobState.PAUSED
    produce_json(bootstrap, source, numbered(500, 300), key="symbol")
    time.sleep(1.5)
    assert server.status("out").records_in == 500  # nothing consumed while paused
    assert server.status("out").state == JobState.PAUSED

    assert server.resume("out").state == JobState.RUNNING
    wait_until(lambda: server.status("out").records_in == 800, "resumed: 800 read")

    switched = server.switch_processor("out", "v2", 2)
    assert (switched.processor_version, switched.num_partitions) == ("V2", 2)
    assert switched.switches == ["V1(1) -> V2(2)"]
    produce_json(bootstrap, source, numbered(800, 200), key="symbol")
    wait_until(lambda: server.status("out").records_out == 1000, "1000 written after the switch")

    stopped = server.stop("out", forget=True)
    assert stopped.state == JobState.STOPPED
    assert stopped.kafka is not None and stopped.kafka["checkpoints"] > 0
    assert stopped.kafka["rebalances"] >= 1

    produce_json(bootstrap, source, numbered(1000, 100), key="symbol")
    server.deploy(sql)  # same group: continues from the committed offsets
    wait_until(lambda: server.status("out").records_in == 100, "only the 100 new records read")
    time.sleep(0.5)
    assert server.status("out").records_in == 100
    assert server.stop("out").state == JobState.STOPPED
    ids = Counter(r["id"] for r in json_rows(read_all(bootstrap, out)))
    assert sorted(ids) == list(range(1100)) and set(ids.values()) == {1}


def test_a_failing_kafka_job_is_failed_with_its_reason_and_the_server_goes_on(
    server, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("srv-fail", 1), new_topic("srv-fail-out", 1)
    ckpt, group = tmp_path / "ckpt", f"g-{out}"
    produce_json(bootstrap, source, numbered(0, 50))
    server.deploy(stream_sql(bootstrap, source, out, group, ckpt))
    wait_until(lambda: server.status("out").kafka["checkpoints"] > 0, "a checkpoint")
    server.stop("out", forget=True)
    other = job_sql(  # another query over the same group and checkpoints
        "SELECT id FROM trades",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=group,
        ckpt=ckpt,
        trades__bounded="none",
    )
    server.deploy(other)
    wait_until(lambda: server.status("out").state == JobState.FAILED, "the job failed")
    assert "different query" in (server.status("out").last_error or "")
    (again,) = server.deploy(stream_sql(bootstrap, source, new_topic("o2", 1), "g-new", ckpt))
    assert again.state == JobState.RUNNING
    assert server.stop("out").state == JobState.STOPPED


def test_switching_a_windowed_kafka_job_to_v2_keeps_its_state(
    server, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("srv-sw", 2), new_topic("srv-sw-out", 1)
    rows = trades(4000, symbols=5)
    sql = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        trades__key__columns="symbol",
        trades__bounded="none",
        trades__batch__size="500",
    )
    server.deploy(sql)
    produce_json(bootstrap, source, rows[:2050], key="symbol")
    wait_until(lambda: server.status("out").records_in == 2050, "first part read on V1")
    switched = server.switch_processor("out", "v2", 2)
    assert switched.switches == ["V1(1) -> V2(2)"] and switched.state == JobState.RUNNING
    produce_json(bootstrap, source, rows[2050:], key="symbol")
    wait_until(lambda: server.status("out").records_in == 4000, "the rest read on V2")
    stopped = server.stop("out")
    assert stopped.state == JobState.STOPPED and stopped.processor_version == "V2"
    got = json_rows(read_all(bootstrap, out))
    last_open = max(r["_window_start"] for r in query(WINDOWED, {"trades": rows}).to_pylist())
    want = [
        r for r in query(WINDOWED, {"trades": rows}).to_pylist() if r["_window_start"] < last_open
    ]
    assert json_sorted(got) == json_sorted(want)  # every closed window once, counted in full
    assert stopped.records_out == len(got) == 5 * 39


def test_a_killed_worker_restarts_the_job_from_its_checkpoint_without_loss(
    server, bootstrap, new_topic, tmp_path
):
    """'restart.attempts': a V2 worker killed with SIGKILL fails the Kafka job;
    the server restarts it from its last checkpoint and every record gets out
    (at-least-once: a replayed record may come out twice, none is lost)."""
    import os
    import signal

    source, out = new_topic("srv-kill", 2), new_topic("srv-kill-out", 1)
    sql = "-- @job_mode: v2\n-- @num_partitions: 2\n" + job_sql(
        "SELECT id, symbol, price FROM trades WHERE price >= 0",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        trades__bounded="none",
        trades__batch__size="200",
        restart__attempts="2",
        restart__backoff="200ms",
    )
    server.deploy(sql)
    produce_json(bootstrap, source, numbered(0, 600), key="symbol")
    wait_until(lambda: server.status("out").records_in >= 600, "first 600 read")

    job = server.job("out")
    task = next(t for t in job.kafka.tasks.values() if t.processor is not None)
    os.kill(task.processor.workers[0].process.pid, signal.SIGKILL)
    produce_json(bootstrap, source, numbered(600, 400), key="symbol")
    wait_until(lambda: server.status("out").kafka["restarts"] == 1, "restarted once", limit_s=30)
    status = server.status("out")
    assert status.state == JobState.RUNNING
    assert status.last_error is not None and "partition" in status.last_error
    wait_until(
        lambda: (
            {r["id"] for r in json_rows(read_all(bootstrap, out, idle=0.5))} >= set(range(1000))
        ),
        "every record out after the restart",
        limit_s=30,
    )
    assert server.stop("out").state == JobState.STOPPED
    assert server.status("out").kafka["restarts"] == 1


def test_restart_settings_are_checked_at_deploy(server, bootstrap, new_topic, tmp_path):
    from flowsql.errors import ConfigError

    source, out = new_topic("srv-cfg", 1), new_topic("srv-cfg-out", 1)
    sql = job_sql(
        "SELECT id FROM trades",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        restart__attempts="often",
    )
    with pytest.raises(ConfigError, match="restart.attempts"):
        server.deploy(sql)
