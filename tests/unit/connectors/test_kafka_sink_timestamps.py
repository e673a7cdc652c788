"""KafkaSink stamps each message with its row's event time (``__message_time``),
which never reaches the message value; without it, the wall clock."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("confluent_kafka")

from flowsql.connectors.kafka.client import (  # noqa: E402
    KafkaSink,
    TopicSpec,
    message_timestamps,
    produce_all,
)
from flowsql.engine import Engine  # noqa: E402
from flowsql.plan.message_time import MESSAGE_TIME, with_message_time  # noqa: E402
from flowsql.sql import parse_one  # noqa: E402


class FakeProducer:
    """Records every produce call; raises BufferError once when ``full`` is set."""

    def __init__(self, full: bool = False) -> None:
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []
        self.full = full

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Any = None,
        partition: int = -1,
        on_delivery: Any = None,
        callback: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        """confluent-kafka's parameters, in its order."""
        if self.full:
            self.full = False
            raise BufferError("queue full")
        sent = {"key": key, "partition": partition, "timestamp": timestamp, "headers": headers}
        assert on_delivery is None and callback is None
        self.sent.append((topic, value, sent))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _sink(producer: FakeProducer) -> KafkaSink:
    spec = TopicSpec(name="out", topic="results", bootstrap="127.0.0.1:1")
    return KafkaSink(spec, ("symbol",), producer=producer)


def test_messages_carry_the_window_end_minus_one_ms_and_values_do_not() -> None:
    statement = with_message_time(
        parse_one(
            "SELECT symbol, _window_start AS ws, COUNT(*) AS n FROM t"
            " GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
        )
    )
    engine = Engine(statement)
    rows = [{"symbol": "AB"[i % 2], "ts": 1_700_000_000_000 + 250 * i} for i in range(20)]
    producer = FakeProducer()
    sink = _sink(producer)
    for batch in engine.process(pa.Table.from_pylist(rows)) + engine.flush():
        sink.write(batch)
    values = [json.loads(value) for _, value, _ in producer.sent]
    stamps = [kwargs["timestamp"] for _, _, kwargs in producer.sent]
    assert len(values) == 10 and all(MESSAGE_TIME not in v for v in values)
    assert stamps == [v["ws"] + 999 for v in values]
    assert [kwargs["key"] for _, _, kwargs in producer.sent] == [
        v["symbol"].encode() for v in values
    ]


def test_without_event_times_messages_get_the_wall_clock() -> None:
    producer = FakeProducer()
    _sink(producer).write(pa.RecordBatch.from_pylist([{"symbol": "A", "n": 1}]))
    ((_, value, kwargs),) = producer.sent
    assert kwargs["timestamp"] == 0 and json.loads(value) == {"symbol": "A", "n": 1}


def test_an_event_time_at_or_before_the_epoch_gets_the_wall_clock() -> None:
    batch = pa.RecordBatch.from_pydict({"x": [1, 2, 3, 4], MESSAGE_TIME: [5, 0, -7, None]})
    rest, stamps = message_timestamps(batch)
    assert rest.schema.names == ["x"] and stamps == [5, 0, 0, 0]


def test_a_full_queue_is_retried_with_the_same_timestamp() -> None:
    producer = FakeProducer(full=True)
    produce_all(producer, "t", [b"a", b"b"], [b"k", None], timestamps=[11, 12])
    assert [(v, kw["key"], kw["timestamp"]) for _, v, kw in producer.sent] == [
        (b"a", b"k", 11),
        (b"b", None, 12),
    ]


def test_timestamps_also_go_with_a_partition_and_headers() -> None:
    producer = FakeProducer()
    produce_all(producer, "t", [b"a"], partition=3, headers=[("h", b"v")], timestamps=[42])
    ((_, _, kwargs),) = producer.sent
    assert (kwargs["partition"], kwargs["headers"], kwargs["timestamp"]) == (3, [("h", b"v")], 42)
