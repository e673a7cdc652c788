"""Quix Streams on the Kafka benchmark's topic: the same tumbling count/sum.

Runs in the interpreter that has Quix Streams (``--peers-python``; it pins its
own confluent-kafka), so it imports nothing from flowsql:
``python quix_kafka.py --bootstrap HOST:PORT --topic T --records N --out FILE``
reads the first N records of the topic with a real ``Application`` (consumer
group, RocksDB window state, results produced to a new topic) and writes
``{"records", "seconds", "version"}`` as JSON. The time includes the
Application's start-up (consumer group join), as for the other contenders'
first poll.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run(bootstrap: str, topic: str, records: int) -> tuple[int, float]:
    """Records read and seconds taken by Quix Streams for the windowed count/sum."""
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Sum

    seen = [0]
    started = time.perf_counter()
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        consumer_extra_config={
            "session.timeout.ms": 6000,
            "partition.assignment.strategy": "range",
        },
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
    )
    source = app.topic(
        topic, value_deserializer="json", timestamp_extractor=lambda v, h, t, ty: v["ts"]
    )
    output = app.topic(f"quix-out-{time.time_ns()}", value_serializer="json")

    def count(value: Any) -> Any:
        seen[0] += 1
        if seen[0] >= records:
            app.stop()
        return value

    sdf = app.dataframe(source).update(count)  # counts every record, stops at the last
    sdf = sdf.tumbling_window(1000).agg(trades=Count(), volume=Sum("quantity")).final()
    sdf.to_topic(output)
    app.run()
    return seen[0], time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Quix Streams on the Kafka benchmark topic.")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args(argv)
    import quixstreams

    n, seconds = run(opts.bootstrap, opts.topic, opts.records)
    report = {"records": n, "seconds": seconds, "version": quixstreams.__version__}
    opts.out.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
