"""``flowsql run`` on Kafka SQL files: KafkaJob with checkpoints, a summary line, clean
stop on SIGTERM, clear errors without a traceback; and a Kafka job behind the REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.engine import query
from flowsql.server.api import create_app
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer
from tests.integration.kafka.kafka_helpers import json_rows, json_sorted, produce_json, read_all
from tests.integration.kafka.test_kafka_job import WINDOWED, job_sql, trades
from tests.serving import live

pytestmark = pytest.mark.kafka


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_run_bounded_kafka_file_on_v2_writes_v1_rows_and_a_summary(
    app, bootstrap, new_topic, tmp_path
):
    source, out = new_topic("run-in", 2), new_topic("run-out", 1)
    rows = trades(3000, symbols=3)
    produce_json(bootstrap, source, rows, key="symbol")
    sql = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        trades__key__columns="symbol",
    )
    path = tmp_path / "job.sql"
    path.write_text(sql)
    result = CliRunner().invoke(app, ["run", str(path), "--processor", "v2", "--partitions", "2"])
    assert result.exit_code == 0, result.output
    got = json_rows(read_all(bootstrap, out))
    assert json_sorted(got) == json_sorted(query(WINDOWED, {"trades": rows}).to_pylist())
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"out: 3,000 records in, {len(got):,} out, 0 late, 0 dead-lettered")
    assert "V2 x2" in summary and "input ended" in summary
    assert int(summary.split("; ")[1].split(" checkpoints")[0]) > 0


def test_run_refuses_a_bad_kafka_setting_with_the_key_and_no_traceback(app, tmp_path):
    sql = job_sql(
        "SELECT symbol FROM trades",
        bootstrap="127.0.0.1:1",
        source="in",
        out="o",
        group="g",
        ckpt=tmp_path,
        processing__guarantee="twice",
    )
    path = tmp_path / "bad.sql"
    path.write_text(sql)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "processing.guarantee" in result.stderr and "exactly_once" in result.stderr
    assert "Traceback" not in result.output


def test_run_reports_an_unreachable_broker_with_no_traceback(app, tmp_path):
    sql = job_sql(
        "SELECT symbol FROM trades",
        bootstrap="127.0.0.1:1",
        source="in",
        out="o",
        group="g",
        ckpt=tmp_path,
    )
    path = tmp_path / "nobroker.sql"
    path.write_text(sql)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: job 'out': ")
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.output


def test_run_unbounded_kafka_job_stops_cleanly_on_sigterm(bootstrap, new_topic, tmp_path):
    source, out = new_topic("run-live", 1), new_topic("run-live-out", 1)
    produce_json(bootstrap, source, [dict(r, id=i) for i, r in enumerate(trades(300))])
    sql = job_sql(
        "SELECT id, symbol FROM trades",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        trades__bounded="none",
        checkpoint__interval="60s",  # only the final checkpoint commits the offsets
    )
    path = tmp_path / "live.sql"
    path.write_text(sql)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flowsql.cli import main; main()", "run", str(path)],
        env={**os.environ, "FLOWSQL_LOG": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while len(read_all(bootstrap, out, read_committed=False, idle=0.3)) < 300:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = err.decode().strip().splitlines()[-1]
    assert summary.startswith("out: 300 records in, 300 out") and "stopped" in summary
    assert "1 checkpoints" in summary  # the final one, on SIGTERM
    ids = Counter(r["id"] for r in json_rows(read_all(bootstrap, out)))
    assert sorted(ids) == list(range(300)) and set(ids.values()) == {1}


def test_rest_status_and_metrics_of_a_kafka_job(bootstrap, new_topic, tmp_path):
    source, out = new_topic("api-in", 2), new_topic("api-out", 1)
    produce_json(bootstrap, source, [dict(r, id=i) for i, r in enumerate(trades(400))])
    sql = job_sql(
        "SELECT id, symbol FROM trades",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-{out}",
        ckpt=tmp_path / "ckpt",
        trades__bounded="none",
    )
    server = StreamJobServer(ServerSettings(file_roots=[str(tmp_path)]))
    # starlette's TestClient needs httpx2 here; a live uvicorn serves the same app
    program = {"X-FlowSQL-Request": "1"}  # what the CLI sends (docs/security.md)
    with (
        live(create_app(server)) as url,
        httpx.Client(base_url=url, timeout=60, headers=program) as client,
    ):
        deployed = client.post("/jobs", content=sql, headers={"content-type": "text/plain"})
        assert deployed.status_code == 201, deployed.text
        deadline = time.monotonic() + 20
        while (body := client.get("/jobs/out").json())["records_out"] < 400:
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["state"] == "RUNNING" and body["records_in"] == 400
        assert body["kafka"]["group_id"] == f"g-{out}"
        assert sorted(body["kafka"]["partitions"]) == [f"{source}:0", f"{source}:1"]
        assert body["processor_version"] == "V1" and body["failure_strategy"] == "fail_job"
        metrics = client.get("/metrics").text
        assert 'flowsql_job_records_in_total{job="out"} 400.0' in metrics
        assert f'flowsql_job_kafka_partitions{{group_id="g-{out}",job="out"}} 2.0' in metrics
        assert 'flowsql_job_rebalances_total{job="out"}' in metrics
        # a watermark per input partition, and how far the slowest one lags
        assert set(body["partition_watermarks"]) == {"0", "1"}
        assert body["slowest_partition"] in (0, 1) and body["slowest_partition_lag_ms"] >= 0
        assert body["watermark_ms"] == min(body["partition_watermarks"].values())
        for part in ("0", "1"):
            assert f'flowsql_job_partition_watermark_ms{{job="out",partition="{part}"}}' in metrics
        assert 'flowsql_job_slowest_partition_lag_ms{job="out",partition=' in metrics
        assert client.post("/jobs/out/pause").json()["state"] == "PAUSED"
        assert client.post("/jobs/out/resume").json()["state"] == "RUNNING"
        stopped = client.delete("/jobs/out").json()
        assert stopped["state"] == "STOPPED" and stopped["kafka"]["checkpoints"] >= 1
        assert client.get("/jobs/out").status_code == 404
