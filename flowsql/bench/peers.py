"""Peer engines on the shared workload: Quix Streams and Bytewax.

The workload: keep records with ``quantity > 100``, then a 1 s tumbling window
per symbol computing count and average price (flowsql's
``peers_filter_tumbling`` scenario). Every engine gets the same records, already
in memory as Python dicts (building them is not timed), one process, one core.

This module runs in a separate interpreter (``--peers-python``), so the peers'
dependencies (Quix Streams pins its own confluent-kafka and pydantic) never
touch flowsql's environment: the parent writes the records to an Arrow IPC
file and calls ``python peers.py --engine quix --data FILE --out FILE``. It
imports nothing from flowsql.

What each peer runs, honestly:

- **Quix Streams** needs a Kafka broker for an ``Application`` (its sources
  produce to a topic first). Without one, we build what ``Application`` builds
  for one topic partition (``StreamingDataFrame``, ``ProcessingContext`` with a
  checkpoint, RocksDB state stores through ``StateStoreManager``, no changelog
  topics) with a topic manager answering topic metadata locally, and drive the
  composed pipeline as ``Application._process_message`` does for each record:
  a message context, the pipeline, ``store_offset``, ``commit_checkpoint``.
  Kafka polling, deserialization and producing are skipped, which favours Quix.
  ``.final(closing_strategy="partition")``: windows close on the partition's
  event time, like flowsql's watermark; windows still open at the end of the
  input are not emitted (Quix has no end of input).
- **Bytewax**: a real ``Dataflow`` run by ``bytewax.testing.run_main`` (one
  worker) from ``TestingSource`` (batches of ``--batch-size`` items):
  ``filter`` -> ``key_on`` -> ``fold_window`` (``EventClock`` on the record's
  timestamp with no system-time wait, ``TumblingWindower`` aligned to the
  epoch) -> ``map`` (average) -> a counting sink. End of input closes every
  window.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextvars import copy_context
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow as pa

ENGINES = ("quix", "bytewax")
MIN_QUANTITY = 100
WINDOW_MS = 1000

# ------------------------------------------------------------ parent side


def peer_python(explicit: str | None = None) -> str | None:
    """An interpreter that can import quixstreams and bytewax: ``explicit``,
    ``$FLOWSQL_PEERS_PYTHON``, this one, or ``.venv-peers`` in the working
    directory; None when none can."""
    candidates = [
        explicit,
        os.environ.get("FLOWSQL_PEERS_PYTHON"),
        sys.executable,
        str(Path.cwd() / ".venv-peers" / "bin" / "python"),
    ]
    for python in candidates:
        if python and Path(python).exists() and _imports_peers(python):
            return python
    return None


def _imports_peers(python: str) -> bool:
    probe = "import quixstreams, bytewax"
    try:
        done = subprocess.run(
            [python, "-W", "ignore", "-c", probe], capture_output=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run_peer(
    python: str, engine: str, data: Path, *, repeat: int, batch_size: int, timeout: float
) -> dict[str, Any]:
    """Run ``engine`` over the records in ``data`` in ``python``; return its
    report (``seconds`` per run, ``rows``, ``peak_rss_mb``, ``version``,
    ``notes``) or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="flowsql-peer-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [python, "-W", "ignore", __file__, "--engine", engine, "--data", str(data)]
        cmd += ["--out", str(out), "--repeat", str(repeat), "--batch-size", str(batch_size)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"{engine}: no result within {timeout:.0f}s"}
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"error": f"{engine} failed (exit {done.returncode}): " + " | ".join(tail)}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def write_records(table: Any, path: Path) -> Path:
    """Write the peers' input (a ``pyarrow.Table`` with symbol, price, quantity,
    timestamp) as an Arrow IPC file."""
    columns = {
        "symbol": table.column("symbol").cast(pa.string()),
        "price": table.column("price"),
        "quantity": table.column("quantity"),
        "timestamp": table.column("timestamp"),
    }
    with (
        pa.OSFile(str(path), "wb") as sink,
        pa.ipc.new_file(
            sink, pa.schema([(name, col.type) for name, col in columns.items()])
        ) as writer,
    ):
        writer.write_table(pa.table(columns))
    return path


# ------------------------------------------------------------- child side


def load_records(path: Path) -> list[dict[str, Any]]:
    with pa.memory_map(str(path)) as source:
        records: list[dict[str, Any]] = pa.ipc.open_file(source).read_all().to_pylist()
    return records


def run_quix(records: list[dict[str, Any]], batch_size: int) -> tuple[float, int]:
    """The workload on Quix Streams' own pipeline and state stores (no broker)."""
    import quixstreams.dataframe.windows.aggregations as agg
    from quixstreams.context import set_message_context
    from quixstreams.models import MessageContext

    with tempfile.TemporaryDirectory(prefix="flowsql-quix-") as state_dir:
        ctx, sdf, registry = _quix_pipeline(state_dir)
        sdf = sdf.filter(lambda v: v["quantity"] > MIN_QUANTITY)
        sdf = (
            sdf.tumbling_window(WINDOW_MS)
            .agg(count=agg.Count(), avg_price=agg.Mean("price"))
            .final(closing_strategy="partition")
        )
        out: list[Any] = []
        composed = registry.compose_all(sink=lambda v, k, t, h: out.append(v))["trades"]
        ctx.state_manager.on_partition_assign(
            stream_id=sdf.stream_id, partition=0, committed_offsets={"trades": -1001}
        )
        start = time.perf_counter()
        for offset, value in enumerate(records):
            context = copy_context()
            context.run(set_message_context, MessageContext("trades", 0, offset, 0))
            context.run(composed, value, value["symbol"].encode(), value["timestamp"], None)
            ctx.store_offset("trades", 0, offset)
            ctx.commit_checkpoint()
        ctx.commit_checkpoint(force=True)
        seconds = time.perf_counter() - start
        ctx.state_manager.close()
    return seconds, len(out)


class _Nothing:
    """Stands in for the Kafka producer and consumer: every call does nothing."""

    def __getattr__(self, name: str) -> Callable[..., int]:
        return lambda *args, **kwargs: 0


def _quix_pipeline(state_dir: str) -> tuple[Any, Any, Any]:
    """What ``Application`` builds for one topic, with local topic metadata."""
    from quixstreams.dataframe.dataframe import StreamingDataFrame
    from quixstreams.dataframe.registry import DataFrameRegistry
    from quixstreams.models.topics import TopicConfig, TopicManager
    from quixstreams.processing import ProcessingContext
    from quixstreams.sinks import SinkManager
    from quixstreams.state import StateStoreManager

    class LocalTopics:
        """Answers topic metadata as a one-partition broker topic would."""

        def inspect_topics(self, names: list[str], timeout: float = 0) -> dict[str, Any]:
            extra = {"retention.ms": "604800000", "retention.bytes": "-1"}
            return {n: TopicConfig(1, 1, extra_config=extra) for n in names}

    topics = TopicManager(topic_admin=LocalTopics(), consumer_group="flowsql-bench")  # type: ignore[arg-type]
    topic = topics.topic("trades")
    registry = DataFrameRegistry()
    ctx = ProcessingContext(
        producer=_Nothing(),  # type: ignore[arg-type]
        consumer=_Nothing(),  # type: ignore[arg-type]
        commit_interval=5.0,  # Application's default
        state_manager=StateStoreManager(state_dir=state_dir),
        sink_manager=SinkManager(),
        dataframe_registry=registry,
    )
    ctx.init_checkpoint()
    sdf = StreamingDataFrame(topic, topic_manager=topics, registry=registry, processing_context=ctx)
    registry.register_root(sdf)
    return ctx, sdf, registry


def run_bytewax(records: list[dict[str, Any]], batch_size: int) -> tuple[float, int]:
    """The workload as a Bytewax dataflow on one worker."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = [0]

    class Counter(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            rows[0] += len(items)

    class CountingSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Counter:
            return Counter()

    def fold(acc: list[float], r: dict[str, Any]) -> list[float]:
        acc[0] += 1
        acc[1] += r["price"]
        return acc

    flow = Dataflow("flowsql_bench")
    s = op.input("in", flow, TestingSource(records, batch_size=batch_size))
    s = op.filter("filter", s, lambda r: r["quantity"] > MIN_QUANTITY)
    keyed = op.key_on("key", s, lambda r: r["symbol"])
    clock = EventClock(
        lambda r: epoch + timedelta(milliseconds=r["timestamp"]),
        wait_for_system_duration=timedelta(0),
        now_getter=lambda: epoch,  # event time only: no system-time drift
        to_system_utc=lambda t: None,
    )
    windower = TumblingWindower(length=timedelta(milliseconds=WINDOW_MS), align_to=epoch)
    win = fold_window(
        "agg",
        keyed,
        clock,
        windower,
        lambda: [0, 0.0],
        fold,
        lambda a, b: [a[0] + b[0], a[1] + b[1]],
    )
    avg = op.map(
        "avg", win.down, lambda kv: (kv[0], kv[1][0], kv[1][1][0], kv[1][1][1] / kv[1][1][0])
    )
    op.output("out", avg, CountingSink())
    start = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - start, rows[0]


def _versions(engine: str) -> str:
    name = {"quix": "quixstreams", "bytewax": "bytewax"}[engine]
    return f"{name} {version(name)}"


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one peer engine on the shared workload.")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=10_000)
    opts = parser.parse_args(argv)
    records = load_records(opts.data)
    run = {"quix": run_quix, "bytewax": run_bytewax}[opts.engine]
    seconds: list[float] = []
    rows = peak = 0.0
    for _ in range(max(1, opts.repeat)):
        _reset_peak()
        s, rows = run(records, opts.batch_size)
        seconds.append(s)
        peak = max(peak, _peak_mb())
    report = {
        "engine": opts.engine,
        "version": _versions(opts.engine),
        "records": len(records),
        "seconds": seconds,
        "rows": int(rows),
        "peak_rss_mb": peak,
    }
    opts.out.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
