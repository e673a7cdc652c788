"""Event time across Kafka partitions: a watermark per source partition, the
minimum over them, idle partitions released after ``'<src>.idle.timeout'``.

The input is written in event-time order and keyed by a message id, so the job
repartitions by the GROUP BY column and every internal partition receives the
rows of every source partition. Read with default settings (no allowed
lateness), nothing may be late, whatever order the partitions are read in.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from typing import Any

import confluent_kafka as ck
import duckdb
import pyarrow as pa
import pytest

from flowsql.runtime.factory import V1, ProcessorChoice, factory
from flowsql.runtime.kafka_job import KafkaJob
from flowsql.sql import parse_one
from tests.integration.kafka.kafka_helpers import json_rows, produce_json, read_all
from tests.integration.kafka.test_kafka_job import job_sql
from tests.polling import wait_until

pytestmark = pytest.mark.kafka

SELECT = (
    "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q, _window_start AS ws"
    " FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
)
START_MS = 1_700_000_000_000


def _trades(n: int, *, symbols: int = 5, step_ms: int = 7) -> list[dict[str, Any]]:
    """Trades in event-time order, each with its own id (the message key)."""
    return [
        {
            "id": f"m{i}",
            "symbol": f"S{i % symbols}",
            "quantity": 1 + i % 7,
            "ts": START_MS + step_ms * i,
        }
        for i in range(n)
    ]


def _duckdb_counts(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    trades = pa.Table.from_pylist(rows)  # noqa: F841 - read by DuckDB by name
    return sorted(
        duckdb.sql(
            "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q, ts // 1000 * 1000 AS ws"
            " FROM trades GROUP BY ALL"
        ).fetchall()
    )


def _layout(name: str, n: int) -> list[int]:
    """Which of 3 partitions each message goes to (each partition stays in order)."""
    if name == "skewed":  # partition 0 gets 10x each of the others
        return [0 if i % 12 < 10 else 1 + i % 2 for i in range(n)]
    if name == "one_empty":
        return [i % 2 for i in range(n)]
    return [zlib.crc32(f"m{i}".encode()) % 3 for i in range(n)]  # keyed by id


@pytest.mark.parametrize("choice", [V1, ProcessorChoice("v2", 2)], ids=["v1", "v2x2"])
@pytest.mark.parametrize("layout", ["keyed_by_id", "skewed", "one_empty"])
def test_bounded_read_of_an_id_keyed_topic_has_no_late_records(
    bootstrap, new_topic, tmp_path, choice, layout
):
    source, out = new_topic("pt-in", 3), new_topic("pt-out", 1)
    rows = _trades(6000)
    produce_json(bootstrap, source, rows, key="id", partitions=_layout(layout, len(rows)))
    sql = job_sql(
        SELECT,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-pt-{layout}-{choice.version}",
        ckpt=tmp_path,
    )
    job = KafkaJob(parse_one(sql), processor_factory=factory(choice))
    assert job.spec.repartition
    stats = job.run()

    got = sorted(
        (r["symbol"], r["n"], r["q"], r["ws"]) for r in json_rows(read_all(bootstrap, out))
    )
    assert stats.late_records == 0
    assert got == _duckdb_counts(rows)
    assert stats.records_in == len(rows)  # each message once
    assert stats.records_repartitioned == len(rows)
    # every source partition's watermark is shown (one empty partition: nothing seen)
    assert set(stats.partition_watermarks) == {0, 1, 2}
    assert stats.watermark is not None


@pytest.mark.parametrize("choice", [V1, ProcessorChoice("v2", 2)], ids=["v1", "v2x2"])
def test_two_bounded_jobs_in_one_group_share_the_partitions(bootstrap, new_topic, tmp_path, choice):
    """Two processes with one group.id, bounded: together they write each window
    once, exactly DuckDB's aggregate, and read each message once."""
    source, out = new_topic("pt-two-in", 3), new_topic("pt-two-out", 1)
    rows = _trades(6000)
    produce_json(bootstrap, source, rows, key="id", partitions=_layout("keyed_by_id", len(rows)))
    sql = job_sql(
        SELECT,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-pt-two-{choice.version}",
        ckpt=tmp_path,
    )
    jobs = [KafkaJob(parse_one(sql), processor_factory=factory(choice)) for _ in range(2)]
    runners = [threading.Thread(target=job.run) for job in jobs]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(120)
    assert not any(runner.is_alive() for runner in runners)
    assert all(job.input_ended for job in jobs)

    got = sorted(
        (r["symbol"], r["n"], r["q"], r["ws"]) for r in json_rows(read_all(bootstrap, out))
    )
    assert got == _duckdb_counts(rows)  # no window twice, none missing
    assert sum(job.stats.late_records for job in jobs) == 0
    assert sum(job.stats.records_in for job in jobs) == len(rows)


def test_an_idle_partition_stops_holding_windows_back_and_rejoins(bootstrap, new_topic, tmp_path):
    """Partitions 0 and 1 send all along; partition 2 goes quiet. After the idle
    timeout windows close without it; when it sends again, its records within
    the allowed lateness are counted. One tick = 100 ms of wall and event time."""
    source, out = new_topic("pt-idle-in", 3), new_topic("pt-idle-out", 1)
    sql = job_sql(
        SELECT,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group="g-pt-idle",
        ckpt=tmp_path,
        trades__bounded="none",
        trades__idle__timeout="1s",
        watermark__allowed_lateness="2s",
    )
    job = KafkaJob(parse_one(sql))
    runner = threading.Thread(target=job.run)
    runner.start()
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent: list[dict[str, Any]] = []

    def send(t_ms: int, parts: tuple[int, ...], n: int = 2) -> None:
        for part in parts:
            for k in range(n):
                row = {"symbol": f"S{(t_ms // 100 + k) % 3}", "quantity": 1, "ts": START_MS + t_ms}
                sent.append(row)
                producer.produce(source, json.dumps(row).encode(), partition=part)
        producer.poll(0)

    def ticks(first: int, last: int, parts: tuple[int, ...]) -> None:
        for tick in range(first, last):
            send(100 * tick, parts)
            time.sleep(0.1)
        producer.flush(10)

    def window_starts() -> set[int]:
        return {r["ws"] - START_MS for r in json_rows(read_all(bootstrap, out, idle=0.5))}

    try:
        wait_until(lambda: len(job.assigned) == 6, "the job got its partitions", 60)
        ticks(0, 10, (0, 1, 2))  # 0 .. 0.9 s: every partition
        ticks(10, 50, (0, 1))  # 1.0 .. 4.9 s: partition 2 is quiet
        # held by partition 2 (0.9 s) no window could close; idle, it holds nothing
        assert window_starts() & {1000, 2000}, "windows closed past the idle partition"
        send(3500, (2,), n=20)  # 3.5 s: older than the others, within the 2 s lateness
        ticks(51, 71, (0, 1, 2))  # 5.1 .. 7.0 s: every partition again
        wait_until(lambda: 4000 in window_starts(), "all idle: windows up to 5 s close", 30)
    finally:
        job.stop()
        runner.join(60)
    assert not runner.is_alive()
    assert job.stats.late_records == 0
    assert set(job.stats.partition_watermarks) == {0, 1, 2}
    got = {
        (r["symbol"], r["ws"]): (r["n"], r["q"])
        for r in json_rows(read_all(bootstrap, out))
        if r["ws"] - START_MS <= 4000
    }
    want = {(s, ws): (n, q) for s, n, q, ws in _duckdb_counts(sent) if ws - START_MS <= 4000}
    assert got == want
    assert sum(n for (_, ws), (n, _) in got.items() if ws - START_MS == 3000) == 2 * 2 * 10 + 20
