"""Scale-out: two job instances in one consumer group split the partitions and a
rebalance hands each moved partition's state to its new owner."""

from __future__ import annotations

import threading
import time
from collections import Counter

import confluent_kafka as ck
import pyarrow as pa
import pytest

from flowsql.engine import query
from flowsql.runtime.kafka_job import KafkaJob
from flowsql.sql import parse_one
from tests.integration.kafka.kafka_helpers import (
    json_rows,
    produce_json,
    read_all,
)
from tests.integration.kafka.test_kafka_job import job_sql, trades

pytestmark = pytest.mark.kafka


def _start(job: KafkaJob) -> threading.Thread:
    thread = threading.Thread(target=job.run, daemon=True)
    thread.start()
    return thread


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_instances_split_partitions_and_hand_over_state(bootstrap, new_topic, tmp_path):
    source, out = new_topic("grp-in", 4), new_topic("grp-out", 4)
    sql = job_sql(
        "SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group=f"g-rebalance-{source}",
        ckpt=tmp_path,
        trades__bounded="none",
        trades__key__columns="symbol",
    )
    first_half, second_half = (
        trades(4000, symbols=8),
        trades(4000, symbols=8, start_ms=1_800_000_000_000),
    )
    produce_json(bootstrap, source, first_half, key="symbol")
    a = KafkaJob(parse_one(sql))
    thread_a = _start(a)
    _wait(lambda: a.stats.records_in == 4000)
    b = KafkaJob(parse_one(sql))
    thread_b = _start(b)
    # the rebalance: A gives up partitions, B restores their state from the shared store
    _wait(lambda: b.tasks and a.tasks and len(a.tasks) + len(b.tasks) == 4)
    assert b.stats.restored_partitions >= 1
    produce_json(bootstrap, source, second_half, key="symbol")
    _wait(lambda: a.stats.records_in + b.stats.records_in >= 8000)
    a.stop(), b.stop()
    thread_a.join(30), thread_b.join(30)
    assert not thread_a.is_alive() and not thread_b.is_alive()
    assert b.stats.records_in > 0 and a.stats.records_in > 4000 - 1
    # The last running count per symbol equals the total: no state was lost on the move.
    final: dict[str, int] = {}
    for row in json_rows(read_all(bootstrap, out)):
        final[row["symbol"]] = max(final.get(row["symbol"], 0), row["n"])
    assert final == dict(Counter(r["symbol"] for r in first_half + second_half))


def test_unkeyed_input_is_repartitioned_by_the_group_key(bootstrap, new_topic, tmp_path):
    """Messages spread over partitions without a key: the job routes rows by symbol
    through its internal topic and the result equals the SQL engine over all rows."""
    source, out = new_topic("unkeyed-in", 3), new_topic("unkeyed-out", 2)
    rows = trades(6000, symbols=7)
    produce_json(bootstrap, source, rows, partitions=[i % 3 for i in range(len(rows))])
    select = (
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q, _window_start"
        " FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '5' SECOND)"
    )
    sql = job_sql(
        select,
        bootstrap=bootstrap,
        source=source,
        out=out,
        group="g-repartition",
        ckpt=tmp_path,
        watermark__allowed_lateness="1h",
    )
    job = KafkaJob(parse_one(sql))
    assert job.spec.repartition and job.spec.route_columns == ("symbol",)
    stats = job.run()
    want = query(
        select + " WITH ('watermark.allowed_lateness'='1h')", {"trades": pa.Table.from_pylist(rows)}
    )
    got = json_rows(read_all(bootstrap, out))
    key = lambda r: (r["symbol"], r["_window_start"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want.to_pylist(), key=key)
    assert stats.records_in == 6000  # each input record once
    assert stats.records_repartitioned == 6000  # and each read back from the internal topic
    # the internal topic holds each row once, routed: one symbol -> one partition
    internal = read_all(bootstrap, job.spec.repartition_topic)
    assert sum(1 for m in internal if not m.headers()) >= 1


def test_exactly_once_in_a_consumer_group_commits_offsets_in_the_transaction(
    bootstrap, new_topic, tmp_path
):
    source, out = new_topic("eos-grp-in", 2), new_topic("eos-grp-out", 2)
    rows = trades(2000)
    produce_json(bootstrap, source, rows, key="symbol")
    sql = job_sql(
        "SELECT symbol, quantity FROM trades WHERE quantity > 3",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group="g-eos-group",
        ckpt=tmp_path,
        trades__bounded="none",
        processing__guarantee="exactly_once",
    )
    job = KafkaJob(parse_one(sql))
    thread = _start(job)
    _wait(lambda: job.stats.records_in == 2000)
    job.stop()
    thread.join(30)
    got = json_rows(read_all(bootstrap, out))
    assert len(got) == sum(1 for r in rows if r["quantity"] > 3)
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "g-eos-group"})
    committed = consumer.committed([ck.TopicPartition(source, p) for p in (0, 1)], timeout=10)
    consumer.close()
    assert sum(c.offset for c in committed) == 2000  # every input offset, sent in the transactions
    assert all(c.offset > 0 for c in committed)


def test_plain_source_joins_the_group_when_unbounded(bootstrap, new_topic):
    from flowsql.connectors.kafka.client import kafka_source_from_properties

    topic = new_topic("plain-unbounded", 2)
    produce_json(bootstrap, topic, trades(500), key="symbol")
    props = {
        "s.topic": topic,
        "s.bootstrap.servers": bootstrap,
        "s.group.id": "g-plain",
        "s.batch.max.wait.ms": "200",
    }
    source = kafka_source_from_properties("s", props)
    seen = 0
    for batch in source.batches():
        seen += batch.num_rows
        if seen >= 500:
            break
    source.close()
    assert seen == 500
