"""Event time survives Kafka: a job's output messages carry each row's event
time (a window's end - 1 ms), so a second job windowing over the output
topic's ``_timestamp`` gets the windows one job over the input would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.plan.message_time import MESSAGE_TIME
from flowsql.runtime.kafka_job import KafkaJob
from flowsql.runtime.kafka_spec import JobStats
from flowsql.sql import parse_one
from tests.integration.kafka.kafka_helpers import (
    json_rows,
    json_sorted,
    produce,
    produce_json,
    read_all,
)
from tests.integration.kafka.test_kafka_job import trades

pytestmark = pytest.mark.kafka

#: Not on a minute boundary, so the first and last minutes are partial.
START_MS = 1_700_000_012_345


def _sql(
    select: str, *, bootstrap: str, source: tuple[str, str], out: str, ckpt: Path, **extra: str
) -> str:
    """``CREATE STREAM out AS <select>`` reading stream ``source[0]`` from topic
    ``source[1]`` (bounded) and writing topic ``out``; ``extra`` keys with ``__`` for ``.``."""
    name, topic = source
    props = {
        f"{name}.type": "kafka_source",
        f"{name}.topic": topic,
        f"{name}.bootstrap.servers": bootstrap,
        f"{name}.group.id": f"g-{out}",
        f"{name}.bounded": "latest",
        f"{name}.key.columns": "symbol",
        "out.type": "kafka_sink",
        "out.topic": out,
        "checkpoint.dir": str(ckpt / out),
        "checkpoint.interval": "200ms",
        # Output of a job's partition tasks interleaves on the next topic; the
        # bounded end closes every window, so lateness only keeps rows from being late.
        "watermark.allowed_lateness": "1h",
    }
    props.update({k.replace("__", "."): v for k, v in extra.items()})
    pairs = ",\n  ".join(f"'{k}' = '{v}'" for k, v in props.items())
    return f"CREATE STREAM out AS {select}\nWITH (\n  {pairs}\n)"


def _run(sql: str) -> JobStats:
    return KafkaJob(parse_one(sql)).run()


def _stamps(msgs: list[Any]) -> list[tuple[int, int]]:
    return [m.timestamp() for m in msgs]


def test_windowed_results_are_stamped_with_window_end_minus_one_ms(bootstrap, new_topic, tmp_path):
    source, out = new_topic("et-in", 2), new_topic("et-out", 1)
    produce_json(bootstrap, source, trades(2000, symbols=3, start_ms=START_MS), key="symbol")
    select = (
        "SELECT symbol, COUNT(*) AS n, _window_end AS we FROM trades"
        " GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
    )
    _run(_sql(select, bootstrap=bootstrap, source=("trades", source), out=out, ckpt=tmp_path))
    msgs = read_all(bootstrap, out)
    rows = json_rows(msgs)
    assert len(rows) == 3 * 21 and sum(r["n"] for r in rows) == 2000
    assert all(MESSAGE_TIME not in r for r in rows)
    assert _stamps(msgs) == [(ck.TIMESTAMP_CREATE_TIME, r["we"] - 1) for r in rows]


def test_rows_are_stamped_with_their_event_time(bootstrap, new_topic, tmp_path):
    source = new_topic("et-rows-in", 1)
    by_ts, by_message = new_topic("et-rows-ts", 1), new_topic("et-rows-msg", 1)
    rows = trades(500, start_ms=START_MS)
    stamps = [START_MS + 7 * i for i in range(len(rows))]  # message timestamps, not ts
    values = [json.dumps(r).encode() for r in rows]
    produce(bootstrap, source, values, [r["symbol"].encode() for r in rows], timestamps=stamps)
    select = "SELECT symbol, price FROM trades WHERE quantity > 3"
    at = {"bootstrap": bootstrap, "source": ("trades", source), "ckpt": tmp_path}
    _run(_sql(select, out=by_ts, trades__event__time__field="ts", **at))
    _run(_sql(select, out=by_message, **at))  # event time: the input's message timestamps
    kept = [i for i, r in enumerate(rows) if r["quantity"] > 3]
    assert [m.timestamp()[1] for m in read_all(bootstrap, by_ts)] == [rows[i]["ts"] for i in kept]
    assert [m.timestamp()[1] for m in read_all(bootstrap, by_message)] == [stamps[i] for i in kept]


def test_two_chained_jobs_give_the_windows_of_one_job(bootstrap, new_topic, tmp_path):
    """Per-second counts per symbol, then per-minute sums of those counts over
    the topic's ``_timestamp``, equal per-minute counts over the input."""
    source = new_topic("chain-in", 2)
    per_second, per_minute, direct = (
        new_topic("chain-1s", 2),
        new_topic("chain-1m", 1),
        new_topic("chain-direct", 1),
    )
    rows = trades(15_000, symbols=3, start_ms=START_MS)  # 150 s of trades, 10 ms apart
    produce_json(bootstrap, source, rows, key="symbol")
    at = {"bootstrap": bootstrap, "ckpt": tmp_path}

    seconds = "SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
    _run(_sql(seconds, source=("trades", source), out=per_second, **at))
    minutes = (
        "SELECT symbol, _window_start AS ws, SUM(n) AS n FROM counts"
        " GROUP BY symbol WINDOW TUMBLING(1m)"  # over _timestamp: the message timestamps
    )
    _run(_sql(minutes, source=("counts", per_second), out=per_minute, **at))
    once = (
        "SELECT symbol, _window_start AS ws, COUNT(*) AS n FROM trades"
        " GROUP BY symbol WINDOW TUMBLING(ts, 1m)"
    )
    _run(_sql(once, source=("trades", source), out=direct, **at))

    chained, single = (
        json_rows(read_all(bootstrap, per_minute)),
        json_rows(read_all(bootstrap, direct)),
    )
    assert len(single) == 3 * 4  # 150 s from 12.345 s past a minute touch 4 minutes
    assert json_sorted(chained) == json_sorted(single)
    assert sum(r["n"] for r in chained) == 15_000


def test_a_plain_kafka_job_stamps_window_end_minus_one_ms(bootstrap, new_topic, tmp_path):
    source, out = new_topic("et-plain-in", 1), new_topic("et-plain-out", 1)
    produce_json(bootstrap, source, trades(300, start_ms=START_MS), key="symbol")
    select = (
        "SELECT symbol, COUNT(*) AS n, _window_end AS we FROM trades"
        " GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
    )
    sql = _sql(select, bootstrap=bootstrap, source=("trades", source), out=out, ckpt=tmp_path)
    KafkaJob(parse_one(sql)).run()
    msgs = read_all(bootstrap, out)
    assert msgs and [m.timestamp()[1] for m in msgs] == [
        json.loads(m.value())["we"] - 1 for m in msgs
    ]


def test_a_file_run_into_a_kafka_sink_stamps_event_times(bootstrap, new_topic, tmp_path):
    """``flowsql run`` of a file into a ``kafka_sink``: the same message times as a Kafka job."""
    out = new_topic("et-file-out", 1)
    data = tmp_path / "trades.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in trades(300, start_ms=START_MS)))
    sql = (
        "CREATE STREAM out AS SELECT symbol, COUNT(*) AS n, _window_end AS we FROM trades"
        " GROUP BY symbol WINDOW TUMBLING(ts, 1s) WITH ("
        f" 'trades.type' = 'file_source', 'trades.path' = '{data}',"
        f" 'out.type' = 'kafka_sink', 'out.topic' = '{out}',"
        f" 'out.bootstrap.servers' = '{bootstrap}', 'out.format' = 'json')"
    )
    path = tmp_path / "job.sql"
    path.write_text(sql)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    msgs = read_all(bootstrap, out)
    assert msgs and all(m.timestamp()[1] == json.loads(m.value())["we"] - 1 for m in msgs)
    assert all(MESSAGE_TIME not in json.loads(m.value()) for m in msgs)
