"""Prometheus metrics of the job server, read from the jobs at scrape time.

Each app gets its own ``CollectorRegistry`` (nothing global), with one
collector that turns every job's status into metric families:

- ``flowsql_job_partition_watermark_ms{job,partition}`` and
  ``flowsql_job_slowest_partition_lag_ms{job,partition}``: watermarks per input partition
- ``flowsql_job_records_in_total`` / ``flowsql_job_records_out_total``
- ``flowsql_job_late_records_total``, ``flowsql_job_dead_lettered_total``,
  ``flowsql_job_failed_batches_total``
- ``flowsql_job_records_per_second``, ``flowsql_job_watermark_ms``,
  ``flowsql_job_partitions``
- ``flowsql_job_state{state=...}``: 1 for the job's current state, 0 for the others
- ``flowsql_job_info{processor, processor_version, failure_strategy}``: always 1
- ``flowsql_jobs{state=...}``: jobs per state
- Kafka jobs only: ``flowsql_job_checkpoints_total``, ``flowsql_job_rebalances_total``,
  ``flowsql_job_restored_partitions_total`` and ``flowsql_job_kafka_partitions``
  (the Kafka partitions this process owns)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowsql.server.job import JobState, JobStatus

if TYPE_CHECKING:
    from flowsql.server.jobserver import StreamJobServer

CONTENT_TYPE = CONTENT_TYPE_LATEST

_COUNTERS = (
    ("records_in", "Records read by the job."),
    ("records_out", "Records the job wrote to its sink."),
    ("late_records", "Records that arrived after their window closed."),
    ("dead_lettered", "Records sent to the dead-letter sink."),
    ("failed_batches", "Batches that raised while being processed."),
)
_KAFKA_COUNTERS = (
    ("checkpoints", "Checkpoints a Kafka job committed."),
    ("rebalances", "Consumer-group rebalances that assigned partitions to a Kafka job."),
    ("restored_partitions", "Partitions whose state a Kafka job restored from a checkpoint."),
)


class JobCollector(Collector):
    """Collects the metrics of every job of one server."""

    def __init__(self, server: StreamJobServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        statuses = self.server.jobs()
        yield from _counters(statuses)
        yield from _kafka(statuses)
        yield from _gauges(statuses)
        yield _states(statuses)
        yield _info(statuses)
        yield _job_counts(statuses)


def _counters(statuses: list[JobStatus]) -> Iterator[Metric]:
    for field, doc in _COUNTERS:
        family = CounterMetricFamily(f"flowsql_job_{field}", doc, labels=["job"])
        for status in statuses:
            family.add_metric([status.name], getattr(status, field))
        yield family


def _kafka(statuses: list[JobStatus]) -> Iterator[Metric]:
    kafka = [(s.name, s.kafka) for s in statuses if s.kafka is not None]
    for field, doc in _KAFKA_COUNTERS:
        family = CounterMetricFamily(f"flowsql_job_{field}", doc, labels=["job"])
        for name, values in kafka:
            family.add_metric([name], values[field])
        yield family
    owned = GaugeMetricFamily(
        "flowsql_job_kafka_partitions",
        "Kafka partitions (input and repartition topics) this process owns for the job.",
        labels=["job", "group_id"],
    )
    for name, values in kafka:
        owned.add_metric([name, values["group_id"]], len(values["partitions"]))
    yield owned


def _gauges(statuses: list[JobStatus]) -> Iterator[Metric]:
    rate = GaugeMetricFamily(
        "flowsql_job_records_per_second",
        "Input records per second of processing time.",
        labels=["job"],
    )
    watermark = GaugeMetricFamily(
        "flowsql_job_watermark_ms", "The job's event-time watermark (epoch ms).", labels=["job"]
    )
    partitions = GaugeMetricFamily(
        "flowsql_job_partitions", "Partitions the job's processor runs.", labels=["job"]
    )
    by_partition = GaugeMetricFamily(
        "flowsql_job_partition_watermark_ms",
        "Each input partition's watermark (epoch ms); the job's is the minimum.",
        labels=["job", "partition"],
    )
    lag = GaugeMetricFamily(
        "flowsql_job_slowest_partition_lag_ms",
        "How far the slowest input partition's watermark is behind the most advanced one.",
        labels=["job", "partition"],
    )
    for status in statuses:
        rate.add_metric([status.name], status.records_per_second)
        if status.watermark_ms is not None:
            watermark.add_metric([status.name], status.watermark_ms)
        partitions.add_metric([status.name], status.num_partitions)
        for part, mark in status.partition_watermarks.items():
            if mark is not None:
                by_partition.add_metric([status.name, part], mark)
        if status.slowest_partition_lag_ms is not None:
            slowest = str(status.slowest_partition)
            lag.add_metric([status.name, slowest], status.slowest_partition_lag_ms)
    yield from (rate, watermark, partitions, by_partition, lag)


def _states(statuses: list[JobStatus]) -> Metric:
    family = GaugeMetricFamily(
        "flowsql_job_state", "1 for the job's current state.", labels=["job", "state"]
    )
    for status in statuses:
        for state in JobState:
            family.add_metric([status.name, state.value], 1.0 if status.state == state else 0.0)
    return family


def _info(statuses: list[JobStatus]) -> Metric:
    family = GaugeMetricFamily(
        "flowsql_job_info",
        "The job's processor and failure strategy (always 1).",
        labels=["job", "processor", "processor_version", "failure_strategy"],
    )
    for s in statuses:
        family.add_metric([s.name, s.processor, s.processor_version, s.failure_strategy], 1.0)
    return family


def _job_counts(statuses: list[JobStatus]) -> Metric:
    family = GaugeMetricFamily("flowsql_jobs", "Jobs per state.", labels=["state"])
    for state in JobState:
        family.add_metric([state.value], sum(1 for s in statuses if s.state == state))
    return family


def server_registry(server: StreamJobServer) -> CollectorRegistry:
    """A registry holding only this server's job metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(server))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
