"""Kafka source, sink and dead-letter topic against the real broker, per format."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from flowsql.connectors.kafka.client import (
    DLQ_ERROR,
    DLQ_POSITION,
    KafkaDeadLetters,
    kafka_sink_from_properties,
    kafka_source_from_properties,
)
from flowsql.records import ListDeadLetters
from tests.integration.kafka.kafka_helpers import json_rows, produce, produce_json, read_all

pytestmark = pytest.mark.kafka

TRADE_AVRO = {
    "type": "record",
    "name": "Trade",
    "fields": [
        {"name": "symbol", "type": "string"},
        {"name": "price", "type": "double"},
        {"name": "quantity", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}

TRADE_PROTO = """
syntax = "proto3";
package demo;
message Trade {
  string symbol = 1;
  double price = 2;
  int64 quantity = 3;
  string note = 4;
}
"""


def _rows(n: int) -> list[dict]:
    return [
        {"symbol": f"S{i % 5}", "price": 100.0 + i * 0.5, "quantity": i, "note": f"n{i}"}
        for i in range(n)
    ]


def _read_source(props: dict[str, str], name: str = "src") -> tuple[pa.Table, ListDeadLetters]:
    letters = ListDeadLetters()
    source = kafka_source_from_properties(name, props, letters)
    try:
        batches = list(source.batches())
    finally:
        source.close()
    return pa.Table.from_batches(batches) if batches else pa.table({}), letters


def _props(bootstrap: str, topic: str, fmt: str, name: str = "src", **extra: str) -> dict[str, str]:
    props = {
        f"{name}.type": "kafka_source",
        f"{name}.topic": topic,
        f"{name}.format": fmt,
        f"{name}.bootstrap.servers": bootstrap,
        f"{name}.bounded": "latest",
    }
    props.update({f"{name}.{k.replace('_', '.')}": v for k, v in extra.items()})
    return props


def _sink_props(bootstrap: str, topic: str, fmt: str, **extra: str) -> dict[str, str]:
    props = _props(bootstrap, topic, fmt, "o", **extra)
    props["o.type"] = "kafka_sink"
    del props["o.bounded"]
    return props


def test_json_source_reads_fields_and_system_columns(bootstrap, new_topic):
    topic = new_topic("json-in", partitions=3)
    rows = _rows(3000)
    produce(
        bootstrap,
        topic,
        [json.dumps(r).encode() for r in rows],
        keys=[r["symbol"].encode() for r in rows],
        timestamps=[1_700_000_000_000 + i for i in range(len(rows))],
    )
    table, letters = _read_source(_props(bootstrap, topic, "json"))
    assert table.num_rows == 3000 and not letters.letters
    got = sorted(table.to_pylist(), key=lambda r: r["quantity"])
    assert [r["symbol"] for r in got] == [r["symbol"] for r in rows]
    assert all(r["_key"] == r["symbol"] for r in got)
    assert [r["_timestamp"] for r in got] == [1_700_000_000_000 + i for i in range(3000)]
    assert {r["_partition"] for r in got} <= {0, 1, 2}
    per_partition: dict[int, list[int]] = {}
    for r in table.to_pylist():
        per_partition.setdefault(r["_partition"], []).append(r["_offset"])
    assert all(offs == list(range(len(offs))) for offs in per_partition.values())


def test_json_sink_keys_by_group_columns_and_round_trips(bootstrap, new_topic):
    out = new_topic("json-out", partitions=2)
    props = {
        "o.type": "kafka_sink",
        "o.topic": out,
        "o.format": "json",
        "o.bootstrap.servers": bootstrap,
    }
    sink = kafka_sink_from_properties("o", props, ["symbol"])
    batch = pa.record_batch(
        {
            "symbol": ["A", "B", "A"],
            "total": pa.array([Decimal("1.10"), Decimal("2.25"), None], pa.decimal128(10, 2)),
            "n": [1, 2, 3],
        }
    )
    sink.write(batch)
    sink.flush()
    msgs = read_all(bootstrap, out)
    assert sorted((m.key(), m.value()) for m in msgs) == sorted(
        [
            (b"A", b'{"symbol":"A","total":"1.10","n":1}'),
            (b"B", b'{"symbol":"B","total":"2.25","n":2}'),
            (b"A", b'{"symbol":"A","total":null,"n":3}'),
        ]
    )
    # one key -> one partition
    assert len({m.partition() for m in msgs if m.key() == b"A"}) == 1


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "raw"])
def test_round_trip_per_format(bootstrap, new_topic, tmp_path: Path, fmt: str):
    in_topic, out_topic = new_topic(f"{fmt}-a"), new_topic(f"{fmt}-b")
    extra: dict[str, str] = {}
    if fmt == "avro":
        schema_file = tmp_path / "trade.avsc"
        schema_file.write_text(json.dumps(TRADE_AVRO))
        extra["avro_schema_file"] = str(schema_file)
    elif fmt == "protobuf":
        proto = tmp_path / "trade.proto"
        proto.write_text(TRADE_PROTO)
        extra["proto_file"] = str(proto)
    rows = _rows(500)
    data = pa.Table.from_pylist(rows)
    if fmt == "raw":
        data = pa.table({"value": [json.dumps(r) for r in rows]})
    sink_props = _sink_props(bootstrap, in_topic, fmt, **extra)
    sink = kafka_sink_from_properties("o", sink_props)
    for b in data.to_batches(max_chunksize=128):
        sink.write(b)
    sink.flush()
    table, letters = _read_source(_props(bootstrap, in_topic, fmt, **extra))
    assert not letters.letters
    user = table.select([c for c in data.column_names])
    assert sorted(user.to_pylist(), key=str) == sorted(data.to_pylist(), key=str)
    # and back out through a second topic in the same format
    sink2 = kafka_sink_from_properties("o", _sink_props(bootstrap, out_topic, fmt, **extra))
    sink2.write(user.combine_chunks().to_batches()[0])
    sink2.flush()
    again, _ = _read_source(_props(bootstrap, out_topic, fmt, **extra))
    assert again.select(data.column_names).num_rows == 500


def test_undecodable_messages_go_to_the_dead_letter_topic(bootstrap, new_topic):
    topic, dlq = new_topic("dirty"), new_topic("dlq")
    produce_json(bootstrap, topic, [{"symbol": "A", "price": 1.0}])
    produce(bootstrap, topic, [b"{not json", b'["a list"]', None])
    produce_json(bootstrap, topic, [{"symbol": "B", "price": 2.0}])
    letters = KafkaDeadLetters(bootstrap, dlq)
    source = kafka_source_from_properties("src", _props(bootstrap, topic, "json"), letters)
    table = pa.Table.from_batches(list(source.batches()))
    source.close()
    letters.flush()
    assert sorted(table.column("symbol").to_pylist()) == ["A", "B"]
    assert source.dead_lettered == 3
    dead = read_all(bootstrap, dlq)
    assert sorted(m.value() or b"" for m in dead) == sorted([b"{not json", b'["a list"]', b""])
    headers = [dict(m.headers()) for m in dead]
    assert all(
        DLQ_ERROR in h and h[DLQ_POSITION].startswith(b"partition=0 offset=") for h in headers
    )
    reasons = sorted(h[DLQ_ERROR].decode() for h in headers)
    assert any("invalid JSON" in r for r in reasons)
    assert any("tombstone" in r for r in reasons)


def test_json_rows_helper_reads_values(bootstrap, new_topic):
    topic = new_topic("plain")
    produce_json(bootstrap, topic, [{"a": 1}, {"a": 2}])
    assert sorted(r["a"] for r in json_rows(read_all(bootstrap, topic, idle=0.5))) == [1, 2]


def test_flowsql_run_reads_and_writes_kafka_declared_in_with(bootstrap, new_topic, tmp_path):
    """The reference engine's WITH keys through ``flowsql run`` (bounded source)."""
    import subprocess
    import sys

    source, out = new_topic("cli-in", 3), new_topic("cli-out")
    rows = [{"symbol": f"S{i % 3}", "ts": 1_700_000_000_000 + 10 * i} for i in range(3000)]
    produce_json(bootstrap, source, rows, key="symbol")
    sql = tmp_path / "job.sql"
    sql.write_text(
        "CREATE STREAM counts AS SELECT symbol, COUNT(*) AS n, _window_start FROM trades\n"
        "GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '10' SECOND)\n"
        "WITH ('trades.type'='kafka_source', 'trades.topic'='" + source + "',"
        " 'trades.format'='json', 'trades.bootstrap.servers'='" + bootstrap + "',"
        " 'trades.group.id'='cli-job', 'trades.auto.offset.reset'='earliest',"
        " 'trades.bounded'='latest', 'watermark.allowed_lateness'='1h',"
        " 'counts.type'='kafka_sink', 'counts.topic'='" + out + "', 'counts.format'='json',"
        " 'checkpoint.dir'='" + str(tmp_path / "ckpt") + "')"
    )
    done = subprocess.run(
        [sys.executable, "-c", "from flowsql.cli import main; main()", "run", str(sql), "-q"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert list((tmp_path / "ckpt").rglob("committed.ckpt"))  # run as a checkpointed Kafka job
    msgs = read_all(bootstrap, out)
    got = sorted((m.key(), json.loads(m.value())["n"]) for m in msgs)
    assert len(got) == 3 * 3 and sum(n for _, n in got) == 3000  # 3 symbols x 3 windows
    assert {k for k, _ in got} == {b"S0", b"S1", b"S2"}  # keyed by the GROUP BY column
