"""Helpers for the Kafka tests: produce messages and read a topic back."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

import confluent_kafka as ck

names = itertools.count()


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    timestamps: Sequence[int] | None = None,
    partitions: Sequence[int] | None = None,
) -> None:
    """Produce messages and wait until all are acknowledged."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        kwargs: dict[str, Any] = {}
        if keys is not None:
            kwargs["key"] = keys[i]
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        if partitions is not None:
            kwargs["partition"] = partitions[i]
        producer.produce(topic, value, **kwargs)
        if i % 10000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def produce_json(
    bootstrap: str,
    topic: str,
    rows: Sequence[dict[str, Any]],
    key: str | None = None,
    partitions: Sequence[int] | None = None,
) -> None:
    values = [json.dumps(r).encode() for r in rows]
    keys = [str(r[key]).encode() for r in rows] if key else None
    produce(bootstrap, topic, values, keys, partitions=partitions)


def read_all(
    bootstrap: str,
    topic: str,
    *,
    read_committed: bool = True,
    idle: float = 1.5,
    timeout: float = 30.0,
) -> list[Any]:
    """Every message of ``topic`` (all partitions), stopping after ``idle`` s with nothing new."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{next(names)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in md.partitions])
    out: list[Any] = []
    last = time.monotonic()
    deadline = last + timeout
    while time.monotonic() - last < idle and time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(10000, 0.2) if m.error() is None]
        if msgs:
            out.extend(msgs)
            last = time.monotonic()
    consumer.close()
    return out


def json_rows(msgs: Sequence[Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in msgs]


def json_sorted(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows as sorted JSON texts: equal lists mean the same rows, in any order."""
    return sorted(json.dumps(r, sort_keys=True) for r in rows)
