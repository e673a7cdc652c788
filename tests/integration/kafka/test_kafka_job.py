"""Kafka jobs on the real broker: bounded runs, checkpoints, restarts, DLQ, slow sinks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from flowsql.runtime.kafka_job import KafkaJob, KafkaJobSpec
from flowsql.sql import parse_one
from tests.integration.kafka.kafka_helpers import json_rows, produce, produce_json, read_all

pytestmark = pytest.mark.kafka


def trades(n: int, symbols: int = 5, start_ms: int = 1_700_000_000_000) -> list[dict[str, Any]]:
    """Deterministic trades, 10 ms apart."""
    return [
        {
            "symbol": f"S{i % symbols}",
            "price": float(i % 100),
            "quantity": 1 + i % 7,
            "ts": start_ms + 10 * i,
        }
        for i in range(n)
    ]


def job_sql(
    select: str, *, bootstrap: str, source: str, out: str, group: str, ckpt: Path, **extra: str
) -> str:
    props = {
        "trades.type": "kafka_source",
        "trades.topic": source,
        "trades.format": "json",
        "trades.bootstrap.servers": bootstrap,
        "trades.group.id": group,
        "trades.auto.offset.reset": "earliest",
        "trades.bounded": "latest",
        "out.type": "kafka_sink",
        "out.topic": out,
        "out.format": "json",
        "checkpoint.dir": str(ckpt),
        "checkpoint.interval": "200ms",
    }
    props.update({k.replace("__", "."): v for k, v in extra.items()})
    with_clause = ",\n  ".join(f"'{k}' = '{v}'" for k, v in props.items())
    return f"CREATE STREAM out AS {select}\nWITH (\n  {with_clause}\n)"


def test_stateless_bounded_job_writes_every_matching_row(bootstrap, new_topic, tmp_path):
    source, out = new_topic("trades", 3), new_topic("out", 2)
    rows = trades(3000)
    produce_json(bootstrap, source, rows, key="symbol")
    sql = job_sql(
        "SELECT symbol, price, quantity FROM trades WHERE price >= 50",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group="g-stateless",
        ckpt=tmp_path,
    )
    stats = KafkaJob(parse_one(sql)).run()
    got = json_rows(read_all(bootstrap, out))
    want = [
        {"symbol": r["symbol"], "price": r["price"], "quantity": r["quantity"]}
        for r in rows
        if r["price"] >= 50
    ]
    assert sorted(got, key=json.dumps) == sorted(want, key=json.dumps)
    assert stats.records_in == 3000 and stats.records_out == len(want)
    assert stats.checkpoints >= 1


def test_spec_reads_the_reference_engine_keys(tmp_path):
    sql = job_sql(
        "SELECT symbol FROM trades",
        bootstrap="127.0.0.1:1",
        source="in",
        out="o",
        group="g",
        ckpt=tmp_path,
        processing__guarantee="exactly_once",
        dlq__topic="bad",
    )
    spec = KafkaJobSpec.from_statement(parse_one(sql))
    assert (spec.source.topic, spec.source.format, spec.source.bounded) == ("in", "json", True)
    assert spec.output is not None and spec.output.topic == "o"
    assert (spec.group_id, spec.exactly_once, spec.dlq_topic) == ("g", True, "bad")
    assert spec.checkpoint_interval_ms == 200 and not spec.repartition


WINDOWED = (
    "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q, _window_start"
    " FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
)


def _rows_of(bootstrap: str, topic: str) -> list[str]:
    """Output rows as canonical JSON strings (a multiset, order-free)."""
    return sorted(json.dumps(r, sort_keys=True) for r in json_rows(read_all(bootstrap, topic)))


#: Runs a job that SIGKILLs itself at a checkpoint (the crash is injected from the test side).
CRASH_JOB = Path(__file__).with_name("crash_job.py")


def _run_subprocess(sql: str, tmp_path: Path, crash_at: str = "") -> subprocess.Popen[bytes]:
    """``python -m flowsql.runtime.kafka_job`` on ``sql``; with ``crash_at`` ("N" or
    "N:before-commit"), the same job killed by ``crash_job.py`` at checkpoint N."""
    path = tmp_path / f"job-{time.monotonic_ns()}.sql"
    path.write_text(sql)
    job = (
        [str(CRASH_JOB), str(path), crash_at]
        if crash_at
        else ["-m", "flowsql.runtime.kafka_job", str(path)]
    )
    return subprocess.Popen(
        [sys.executable, *job],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def _committed_checkpoints(ckpt: Path) -> int:
    return len(list(ckpt.rglob("committed.ckpt")))


@pytest.fixture(scope="module")
def windowed_input(bootstrap, new_topic):
    """A 3-partition topic of 30,000 trades keyed by symbol."""
    source = new_topic("win-in", 3)
    produce_json(bootstrap, source, trades(30_000, symbols=6), key="symbol")
    return source


@pytest.fixture(scope="module")
def baseline(bootstrap, new_topic, tmp_path_factory, windowed_input) -> list[str]:
    """The output of an uninterrupted run of WINDOWED over ``windowed_input``."""
    out = new_topic("baseline", 2)
    sql = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=windowed_input,
        out=out,
        group=f"base-{out}",
        ckpt=tmp_path_factory.mktemp("base"),
        trades__key__columns="symbol",
    )
    KafkaJob(parse_one(sql)).run()
    rows = _rows_of(bootstrap, out)
    assert len(rows) == 6 * 300  # 6 symbols x 300 one-second windows
    return rows


def test_kill_9_then_restart_loses_nothing_at_least_once(
    bootstrap, new_topic, tmp_path, windowed_input, baseline
):
    want = baseline
    out, ckpt = new_topic("alo-out", 2), tmp_path / "alo"
    common = dict(trades__key__columns="symbol", trades__batch__size="500")
    slow = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=windowed_input,
        out=out,
        group="g-alo",
        ckpt=ckpt,
        trades__max__rate="15000",
        **common,
    )
    proc = _run_subprocess(slow, tmp_path)
    deadline = time.monotonic() + 30
    while _committed_checkpoints(ckpt) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # kill -9 in the middle of the job
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    partial = _rows_of(bootstrap, out)
    assert 0 < len(partial) < len(want)
    checkpointed = _committed_checkpoints(ckpt)
    full = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=windowed_input,
        out=out,
        group="g-alo",
        ckpt=ckpt,
        **common,
    )
    stats = json.loads(_finish(_run_subprocess(full, tmp_path)).splitlines()[-1])
    assert stats["restored_partitions"] == checkpointed >= 1
    got = _rows_of(bootstrap, out)
    assert set(got) == set(want)  # at-least-once: every row, possibly some twice
    assert len(got) >= len(want)


def test_exactly_once_restart_after_a_checkpoint_has_no_duplicates(
    bootstrap, new_topic, tmp_path, windowed_input, baseline
):
    want = baseline
    out, ckpt = new_topic("eos-out", 2), tmp_path / "eos"
    sql = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=windowed_input,
        out=out,
        group="g-eos",
        ckpt=ckpt,
        trades__key__columns="symbol",
        trades__batch__size="500",
        trades__max__rate="30000",
        processing__guarantee="exactly_once",
    )
    proc = _run_subprocess(sql, tmp_path, crash_at="3")  # killed right after checkpoint 3
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < len(_rows_of(bootstrap, out)) < len(want)
    _finish(_run_subprocess(sql, tmp_path))
    assert _rows_of(bootstrap, out) == want  # exactly once: same multiset as the uninterrupted run


def test_exactly_once_kill_inside_a_transaction_has_no_duplicates(
    bootstrap, new_topic, tmp_path, windowed_input, baseline
):
    want = baseline
    out, ckpt = new_topic("eos-kill-out", 2), tmp_path / "eos-kill"
    sql = job_sql(
        WINDOWED,
        bootstrap=bootstrap,
        source=windowed_input,
        out=out,
        group="g-eos-kill",
        ckpt=ckpt,
        trades__key__columns="symbol",
        trades__batch__size="500",
        trades__max__rate="30000",
        processing__guarantee="exactly_once",
    )
    # dies with output produced in an open transaction and state staged, offsets not committed
    proc = _run_subprocess(sql, tmp_path, crash_at="3:before-commit")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _finish(_run_subprocess(sql, tmp_path))
    got = _rows_of(bootstrap, out)
    assert set(got) == set(want)  # nothing lost and nothing foreign
    twice = Counter(got) - Counter(want)
    if twice:  # this suite runs on Tansu (conftest); on Apache Kafka nothing comes twice
        pytest.xfail(
            f"{sum(twice.values())} rows of the aborted transaction are visible: Tansu 0.6"
            " hands records of aborted transactions to read_committed consumers (its Fetch"
            " responses carry no aborted-transaction list)"
        )
    assert got == want  # nothing twice


def test_bad_records_go_to_the_dlq_topic_and_the_job_continues(bootstrap, new_topic, tmp_path):
    source, out, dlq = new_topic("dirty-in"), new_topic("dirty-out"), new_topic("dirty-dlq")
    good = trades(100)
    produce_json(bootstrap, source, good[:50])
    produce(
        bootstrap,
        source,
        [b"not json at all", b'{"symbol": "X", "price": 1.0, "quantity": 1, "ts": "yesterday"}'],
    )
    produce_json(bootstrap, source, good[50:])
    sql = job_sql(
        "SELECT symbol, price FROM trades",
        bootstrap=bootstrap,
        source=source,
        out=out,
        group="g-dlq",
        ckpt=tmp_path,
        dlq__topic=dlq,
        event__time__field="ts",
    )
    stats = KafkaJob(parse_one(sql)).run()
    assert stats.records_out == 100 and stats.dead_lettered == 2
    letters = read_all(bootstrap, dlq)
    assert len(letters) == 2 and b"not json at all" in {m.value() for m in letters}
    errors = {m.value(): dict(m.headers())["flowsql.error"].decode() for m in letters}
    assert "invalid JSON" in errors[b"not json at all"]
    assert any("'ts'" in e and "yesterday" in e for v, e in errors.items() if v.startswith(b"{"))
    assert all(b"partition=0" in dict(m.headers())["flowsql.position"] for m in letters)


class SlowSink:
    """A sink that takes 20 ms per batch: the job must slow down, not buffer."""

    def __init__(self) -> None:
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        time.sleep(0.02)
        self.rows += batch.num_rows

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


def test_slow_sink_slows_consumption_and_keeps_memory_bounded(
    bootstrap, new_topic, tmp_path, monkeypatch
):
    source = new_topic("slow-in", 2)
    produce_json(bootstrap, source, trades(100_000))  # ~7 MB of JSON
    sql = job_sql(
        "SELECT symbol, price FROM trades",
        bootstrap=bootstrap,
        source=source,
        out="unused",
        group="g-slow",
        ckpt=tmp_path,
        trades__batch__size="1000",
        trades__properties__queued__max__messages__kbytes="256",
        trades__properties__fetch__max__bytes="1048576",
        trades__properties__max__partition__fetch__bytes="65536",
    )
    queued: list[int] = []

    def stats_cb(text: str) -> None:
        parts = json.loads(text)["topics"].get(source, {}).get("partitions", {})
        queued.append(sum(p["fetchq_size"] for k, p in parts.items() if k != "-1"))

    real_conf = KafkaJob._consumer_conf
    monkeypatch.setattr(
        KafkaJob,
        "_consumer_conf",
        lambda self: {**real_conf(self), "statistics.interval.ms": 100, "stats_cb": stats_cb},
    )
    sink = SlowSink()
    stats = KafkaJob(parse_one(sql), sink=sink).run()
    assert sink.rows == 100_000 and stats.records_out == 100_000
    assert stats.max_in_flight <= 1000  # never more than one micro-batch in the job's hands
    # the client's prefetch queues stay near their cap (per partition: 256 KB + one
    # fetch of at most 1 MB, which librdkafka may overshoot by one partition fetch
    # of 64 KB, and on a loaded machine by about one more) instead of holding the
    # whole topic (~7 MB)
    assert queued and max(queued) <= 3 * (256 + 1024 + 64) * 1024
