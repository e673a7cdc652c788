"""Kafka benchmark: JSON trades -> tumbling window -> Kafka, against the client ceiling.

All contenders read the same topic of JSON trades in the same run:

- ``bare consume``: a confluent-kafka consume loop that touches every message
  value and does nothing else: the broker/client ceiling;
- ``flowsql V1``: one Kafka job process (per-partition V1 processors);
- ``flowsql V2``: N job processes, each reading its share of the partitions
  (``'trades.partitions'``), in parallel on N cores;
- ``quixstreams``: the same windowed count/sum, when Quix Streams is installed
  (on the first ``--quix-records`` records only: it is much slower).

Rates are input records per second of wall time: for the bare loop from
creating the consumer to the last record; for flowsql jobs from the start of
``KafkaJob.run()`` (consumer created, partitions assigned) to the end of the
final checkpoint, with the worker processes' interpreter start-up and imports
reported separately. Prints a table and writes JSON.

Usage: ``python -m flowsql.bench.kafka [--records N] [--partitions P]
[--workers N] [--bootstrap HOST:PORT] [--peers-python PY] [--json PATH]``. Without
``--bootstrap`` it starts an in-memory Tansu broker (``tests/broker.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowsql.bench import quix_kafka
from flowsql.bench.peers import peer_python
from flowsql.runtime.kafka_job import KafkaJob
from flowsql.sql import parse_one

QUERY = (
    "SELECT symbol, COUNT(*) AS trades, SUM(quantity) AS volume, _window_start"
    " FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
)


@dataclass
class Result:
    """One contender's run."""

    name: str
    records: int
    seconds: float
    rows_out: int = 0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


# -- data ------------------------------------------------------------------------


def produce_trades(
    bootstrap: str, topic: str, records: int, partitions: int, symbols: int = 100
) -> None:
    """Create ``topic`` and fill it with JSON trades keyed by symbol, 1 ms apart."""
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic

    # Quix Streams derives its changelog topics from these (Tansu reports only
    # what a topic was created with).
    config = {"retention.ms": "604800000", "retention.bytes": "-1"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1, config=config)]).values():
        fut.result(30)
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000}
    )
    start = 1_700_000_000_000
    for i in range(records):
        sym = f"SYM{i % symbols:03d}"
        value = (
            f'{{"symbol":"{sym}","price":{100 + (i % 997) / 100:.2f},'
            f'"quantity":{1 + i % 50},"ts":{start + i}}}'
        )
        while True:
            try:
                producer.produce(topic, value.encode(), key=sym.encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 50_000 == 0:
            producer.poll(0)
    producer.flush(120)


# -- contenders --------------------------------------------------------------------


def bare_consume(bootstrap: str, topic: str, records: int) -> Result:
    """The ceiling: consume every message and read its value, nothing more."""
    import confluent_kafka as ck

    started = time.perf_counter()
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{time.time_ns()}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 8 * 1024 * 1024,
        }
    )
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in md.partitions])
    seen = total_bytes = 0
    while seen < records:
        for m in consumer.consume(10_000, 1.0):
            if m.error() is None:
                total_bytes += len(m.value() or b"")
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return Result("bare consume (confluent-kafka)", seen, elapsed, note=f"{total_bytes >> 20} MiB")


def _job_sql(bootstrap: str, topic: str, out: str, group: str, ckpt: str, parts: str = "") -> str:
    props = {
        "trades.type": "kafka_source",
        "trades.topic": topic,
        "trades.format": "json",
        "trades.bootstrap.servers": bootstrap,
        "trades.group.id": group,
        "trades.bounded": "latest",
        "trades.key.columns": "symbol",
        "out.type": "kafka_sink",
        "out.topic": out,
        "out.format": "json",
        "checkpoint.dir": ckpt,
        "checkpoint.interval": "5s",
    }
    if parts:
        props["trades.partitions"] = parts
    pairs = ", ".join(f"'{k}'='{v}'" for k, v in props.items())
    return f"CREATE STREAM out AS {QUERY} WITH ({pairs})"


def _run_job(sql: str, conn: Any) -> None:
    job = KafkaJob(parse_one(sql))
    began = time.time()
    stats = job.run()
    conn.send((stats.records_in, stats.records_out, began, time.time()))
    conn.close()


def flowsql_job(bootstrap: str, topic: str, workers: int, partitions: int) -> Result:
    """``workers`` job processes, each with its share of the partitions."""
    ctx = mp.get_context("spawn")
    group, out = f"bench-{time.time_ns()}", f"bench-out-{time.time_ns()}"
    ckpt = tempfile.mkdtemp(prefix="flowsql-bench-")
    shares = [[p for p in range(partitions) if p % workers == w] for w in range(workers)]
    started = time.perf_counter()
    procs, pipes = [], []
    for share in shares:
        parts = ",".join(map(str, share)) if workers > 1 else ""
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_run_job, args=(_job_sql(bootstrap, topic, out, group, ckpt, parts), child)
        )
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    counts = [pipe.recv() for pipe in pipes]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join(30)
    name = "flowsql V1 (1 process)" if workers == 1 else f"flowsql V2 ({workers} processes)"
    window = max(c[3] for c in counts) - min(c[2] for c in counts)
    return Result(
        name,
        sum(c[0] for c in counts),
        window,
        sum(c[1] for c in counts),
        note=f"{elapsed:.1f}s with process start-up",
    )


def quix(bootstrap: str, topic: str, records: int, python: str | None = None) -> Result | None:
    """Quix Streams: the same tumbling count/sum (``flowsql.bench.quix_kafka``),
    in this interpreter when it has Quix Streams, else in ``python`` (the peers'
    interpreter, see ``flowsql.bench.peers.peer_python``); None when neither."""
    if importlib.util.find_spec("quixstreams") is not None:
        import quixstreams

        n, seconds = quix_kafka.run(bootstrap, topic, records)
        return Result("quixstreams", n, seconds, note=f"quixstreams {quixstreams.__version__}")
    python = peer_python(python)
    if python is None:
        print("Quix Streams not installed (see --peers-python): skipped", flush=True)
        return None
    with tempfile.TemporaryDirectory(prefix="flowsql-quix-") as tmp:
        out = Path(tmp) / "quix.json"
        cmd = [python, "-W", "ignore", quix_kafka.__file__, "--bootstrap", bootstrap]
        cmd += ["--topic", topic, "--records", str(records), "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not out.exists():
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return Result("quixstreams", 0, 0.0, note=f"failed (exit {done.returncode}): {tail}")
        report = json.loads(out.read_text())
    note = f"quixstreams {report['version']} in {python}"
    return Result("quixstreams", report["records"], report["seconds"], note=note)


# -- driver ----------------------------------------------------------------------------


def _broker(bootstrap: str | None) -> tuple[str, Callable[[], None]]:
    if bootstrap:
        return bootstrap, lambda: None
    helper = Path(__file__).resolve().parents[2] / "tests" / "broker.py"
    if not helper.is_file():
        raise SystemExit("no broker: pass --bootstrap HOST:PORT (tests/broker.py not found)")
    spec = importlib.util.spec_from_file_location("flowsql_test_broker", helper)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    broker = module.start_broker()
    return broker.bootstrap, broker.stop


def run(
    records: int,
    partitions: int,
    workers: int,
    bootstrap: str | None,
    quix_records: int = 100_000,
    peers_python: str | None = None,
) -> list[Result]:
    """Fill a topic, then run every contender on it; return their results."""
    address, stop = _broker(bootstrap)
    try:
        topic = f"bench-trades-{time.time_ns()}"
        t0 = time.perf_counter()
        produce_trades(address, topic, records, partitions)
        print(
            f"produced {records:,} JSON trades into {partitions} partitions in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        results = [bare_consume(address, topic, records)]
        results.append(flowsql_job(address, topic, 1, partitions))
        if workers > 1:
            results.append(flowsql_job(address, topic, workers, partitions))
        peer = quix(address, topic, min(records, quix_records), peers_python)
        if peer is not None:
            results.append(peer)
        return results
    finally:
        stop()


def table(results: list[Result]) -> str:
    """The results as a text table, rates relative to the bare consume loop."""
    ceiling = results[0].rate or 1.0
    lines = [f"{'contender':<34}{'records':>12}{'seconds':>10}{'rec/s':>14}{'vs bare':>10}  note"]
    for r in results:
        lines.append(
            f"{r.name:<34}{r.records:>12,}{r.seconds:>10.2f}{r.rate:>14,.0f}"
            f"{r.rate / ceiling:>9.0%}  {r.note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument(
        "--quix-records", type=int, default=100_000, help="Quix Streams reads only this many"
    )
    parser.add_argument(
        "--peers-python",
        default=None,
        help="interpreter with Quix Streams (default: as flowsql bench)",
    )
    parser.add_argument("--json", default="bench-kafka.json")
    args = parser.parse_args(argv)
    results = run(
        args.records,
        args.partitions,
        args.workers,
        args.bootstrap,
        args.quix_records,
        args.peers_python,
    )
    print(table(results))
    payload = [{**asdict(r), "rate": r.rate} for r in results]
    Path(args.json).write_text(json.dumps({"query": QUERY, "results": payload}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
