"""Runtime processor switching: a job moved V1 -> V2(2) -> V2(3) -> V1 mid-stream
emits exactly the rows of a run that was never switched (none lost, none repeated).

The input is fed batch by batch from a paced source, so each switch happens at a
known point of the stream, with window, group and ROWS state in flight.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pyarrow as pa
import pytest

from flowsql.connectors.generator import make_generator
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink
from flowsql.server.api import create_app
from flowsql.server.config import ServerSettings, V2Settings
from flowsql.server.jobserver import StreamJobServer
from tests import polling
from tests.serving import live

wait_until = partial(polling.wait_until, limit_s=60)  # paced jobs

QUERIES = {
    "tumbling_final": (
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q, MAX(price) AS hi FROM trades"
        " WINDOW TUMBLING(INTERVAL '1' SECOND) GROUP BY symbol"
    ),
    "group_by_changes": "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol",
    "sliding": (
        "SELECT symbol, AVG(price) AS p, MIN(quantity) AS lo FROM trades"
        " WINDOW SLIDING(INTERVAL '2' SECOND, INTERVAL '1' SECOND) GROUP BY symbol"
    ),
    "session": (
        "SELECT symbol, COUNT(*) AS n FROM trades"
        " WINDOW SESSION(INTERVAL '50' MILLISECOND) GROUP BY symbol"
    ),
    "rows_window": (
        "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol"
        " ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3 FROM trades"
    ),
}

#: (batches to feed before the switch, processor, partitions); the rest is fed after.
PLAN = [(6, "v2", 2), (6, "v2", 3), (5, "v1", None)]


def input_batches() -> list[pa.RecordBatch]:
    """20 batches of 1000 trades over 20 s of event time, 10 symbols."""
    source = make_generator("trades", records=20_000, rate=1000, batch_size=1000, symbols=10)
    return list(source.batches())


class PacedSource:
    """A source the test feeds batch by batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dead_lettered = 0
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue()

    def push(self, batches: list[pa.RecordBatch]) -> None:
        for batch in batches:
            self._queue.put(batch)

    def end(self) -> None:
        self._queue.put(None)

    def batches(self) -> Iterator[pa.RecordBatch]:
        while (batch := self._queue.get()) is not None:
            yield batch

    def close(self) -> None:
        return None


class RowsSink:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.to_pylist()

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


class Paced:
    """A job server whose jobs read PacedSources and write RowsSinks."""

    def __init__(self) -> None:
        self.sources: dict[str, PacedSource] = {}
        self.sinks: dict[str, RowsSink] = {}
        self.server = StreamJobServer(
            ServerSettings(v2_config=V2Settings(num_partitions=2)),
            source_factory=self._source,
            sink_factory=self._sink,
        )

    def _source(self, statement: Statement, letters: DeadLetterSink) -> PacedSource:
        return self.sources.setdefault(statement.name, PacedSource(statement.sources[0]))

    def _sink(self, statement: Statement) -> RowsSink:
        return self.sinks.setdefault(statement.name, RowsSink())

    def close(self) -> None:
        for source in self.sources.values():
            source.end()
        self.server.shutdown()


@pytest.fixture
def paced() -> Iterator[Paced]:
    p = Paced()
    yield p
    p.close()


def wait_for_records(paced: Paced, name: str, count: int) -> None:
    wait_until(lambda: paced.server.status(name).records_in >= count, f"{count} records read")


def canonical(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows as a sorted multiset (V2 may emit a batch's rows in another order)."""
    return sorted(tuple(sorted(row.items())) for row in rows)


def run(
    paced: Paced,
    name: str,
    sql: str,
    switch: Callable[[str, str, int | None], dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Feed the input in the chunks of PLAN, switching between chunks when asked."""
    batches = input_batches()
    paced.server.deploy(f"CREATE STREAM {name} AS {sql}")
    source, fed = paced.sources[name], 0
    for count, processor, partitions in PLAN:
        source.push(batches[fed : fed + count])
        fed += count
        wait_for_records(paced, name, sum(b.num_rows for b in batches[:fed]))
        if switch is not None:
            status = switch(name, processor, partitions)
            assert status["processor_version"] == processor.upper()
            if partitions is not None:
                assert status["num_partitions"] in (1, partitions)  # 1: not partitionable
    source.push(batches[fed:])
    source.end()
    wait_until(lambda: paced.server.status(name).state in ("FINISHED", "FAILED"), "the end")
    final = paced.server.status(name)
    assert final.state == "FINISHED", final.last_error
    assert final.records_in == 20_000
    return paced.sinks[name].rows


@pytest.mark.parametrize("query", sorted(QUERIES))
def test_switched_run_equals_unswitched_run(paced: Paced, query: str) -> None:
    sql = QUERIES[query]

    def switch(name: str, processor: str, partitions: int | None) -> dict[str, Any]:
        return paced.server.switch_processor(name, processor, partitions).to_dict()

    unswitched = run(paced, "plain", sql, None)
    switched = run(paced, "moved", sql, switch)
    assert unswitched, "the query emitted nothing: the comparison would prove nothing"
    assert len(switched) == len(unswitched)
    assert canonical(switched) == canonical(unswitched)
    switches = paced.server.status("moved").switches
    assert [step.split(" -> ")[1][:2] for step in switches] == ["V2", "V2", "V1"]


def test_switching_through_the_rest_api(paced: Paced) -> None:
    sql = QUERIES["tumbling_final"]
    with live(create_app(paced.server)) as url, httpx.Client(base_url=url, timeout=60) as http:

        def switch(name: str, processor: str, partitions: int | None) -> dict[str, Any]:
            body: dict[str, Any] = {"processor": processor}
            if partitions is not None:
                body["num_partitions"] = partitions
            response = http.put(f"/jobs/{name}/processor", json=body)
            assert response.status_code == 200, response.text
            return response.json()

        switched = run(paced, "moved", sql, switch)
        unswitched = run(paced, "plain", sql, None)
    assert canonical(switched) == canonical(unswitched)
    assert len(switched) == 200  # 20 one-second windows x 10 symbols
