"""Kafka jobs on the job server, without a broker: what is refused at deploy, and
how their counters reach Prometheus."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from flowsql.errors import ConfigError
from flowsql.server.jobserver import StreamJobServer
from flowsql.server.metrics import render, server_registry

KAFKA_SQL = (
    "CREATE STREAM out AS SELECT symbol FROM trades WITH ("
    " 'trades.type' = 'kafka_source', 'trades.topic' = 'in', 'trades.format' = 'json',"
    " 'trades.bootstrap.servers' = '127.0.0.1:1', 'out.type' = 'kafka_sink',"
    " 'out.topic' = 'o', 'failure_strategy' = 'log_and_continue')"
)


def test_a_failure_strategy_on_a_kafka_job_is_refused_with_the_key():
    server = StreamJobServer(confine_files=False)
    with pytest.raises(ConfigError) as err:
        server.deploy(KAFKA_SQL)
    assert err.value.key == "out.failure_strategy"
    assert "group.id" in str(err.value.allowed)
    assert server.jobs() == []


class _Statuses:
    def __init__(self, statuses: list[Any]) -> None:
        self.statuses = statuses

    def jobs(self) -> list[Any]:
        return self.statuses


def test_kafka_counters_are_exported_for_kafka_jobs_only():
    from flowsql.server.job import JobStatus

    base = JobStatus(
        name="plain", kind="stream", state="RUNNING", processor="SimpleJobProcessor",
        processor_version="V1", num_partitions=1, records_in=10, records_out=5,
        records_per_second=1.0, watermark_ms=None, watermark=None, late_records=0,
        dead_lettered=0, failed_batches=0, retries=0, last_error=None,
        failure_strategy="send_to_dlq", started_at="", finished_at=None, sources=["t"],
        properties={}, annotations={}, sql="",
    )  # fmt: skip
    kafka = replace(
        base,
        name="k",
        records_in=7,
        kafka={
            "group_id": "g",
            "topic": "in",
            "guarantee": "at_least_once",
            "partitions": ["in:0", "in:2"],
            "checkpoints": 4,
            "rebalances": 2,
            "restored_partitions": 1,
        },
    )
    text = render(server_registry(_Statuses([base, kafka]))).decode()  # type: ignore[arg-type]
    assert 'flowsql_job_records_in_total{job="k"} 7.0' in text
    assert 'flowsql_job_checkpoints_total{job="k"} 4.0' in text
    assert 'flowsql_job_rebalances_total{job="k"} 2.0' in text
    assert 'flowsql_job_restored_partitions_total{job="k"} 1.0' in text
    assert 'flowsql_job_kafka_partitions{group_id="g",job="k"} 2.0' in text
    assert 'flowsql_job_checkpoints_total{job="plain"}' not in text


def test_flowsql_status_shows_the_kafka_fields():
    from rich.console import Console

    from flowsql.cli.server import _status_table

    status = {
        "name": "k",
        "state": "RUNNING",
        "kafka": {"group_id": "g1", "partitions": ["in:0", "in:2"], "checkpoints": 12},
    }
    console = Console(width=200, record=True)
    console.print(_status_table(status))
    text = console.export_text()
    assert "kafka group id" in text and "g1" in text
    assert "in:0, in:2" in text and "kafka checkpoints" in text and "12" in text
