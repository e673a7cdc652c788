"""run_job end to end: sources -> processor -> sink, with dead letters and LIMIT."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from flowsql.connectors.files import open_sink, open_source
from flowsql.connectors.generator import make_generator
from flowsql.connectors.memory import MemorySink, MemorySource
from flowsql.errors import ExecutionError
from flowsql.records import ListDeadLetters
from flowsql.runtime.processor import SimpleJobProcessor
from flowsql.runtime.runner import run_job
from flowsql.sql import parse_one

DEMO = (
    "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price, _window_start "
    "FROM trades GROUP BY symbol WINDOW TUMBLING(1s)"
)


def _trades(records: int = 20_000, **opts: object) -> pa.Table:
    source = make_generator("trades", records=records, rate=2000, symbols=7, **opts)
    return pa.Table.from_batches(list(source.batches()))


def _rows(sink: MemorySink) -> list[tuple[object, ...]]:
    return sorted(tuple(r.values()) for r in sink.rows())


def _expected_demo(table: pa.Table) -> list[tuple[object, ...]]:
    plain = table.set_column(0, "symbol", table.column("symbol").cast(pa.string()))
    con = duckdb.connect()
    con.register("trades", plain)
    return sorted(
        con.execute(
            "SELECT symbol, COUNT(*), AVG(price), timestamp // 1000 * 1000 FROM trades"
            " GROUP BY symbol, timestamp // 1000 * 1000"
        ).fetchall()
    )


@pytest.mark.parametrize("batch_size", [7, 10_000])
def test_tumbling_window_over_generated_trades_matches_duckdb(batch_size: int) -> None:
    table = _trades(5_000 if batch_size == 7 else 20_000)
    sink = MemorySink()
    report = run_job(parse_one(DEMO), {"trades": MemorySource(table)}, sink, batch_size=batch_size)
    got = _rows(sink)
    want = _expected_demo(table)
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in want]
    assert all(abs(g[2] - w[2]) < 1e-9 for g, w in zip(got, want, strict=True))  # type: ignore[operator]
    assert report.records_in == table.num_rows
    assert report.records_out == len(want)
    assert report.processor == "V1" and report.late_records == 0 and sink.closed


def test_filter_query_and_progress() -> None:
    seen: list[int] = []
    sink = MemorySink()
    statement = parse_one(
        "SELECT order_id, customer_id, total_amount FROM orders WHERE total_amount > 100"
    )
    source = make_generator("orders", records=30_000, batch_size=10_000)
    report = run_job(statement, {"orders": source}, sink, progress=seen.append)
    out = sink.table()
    assert out.schema.names == ["order_id", "customer_id", "total_amount"]
    assert 0 < out.num_rows < 30_000
    assert min(out.column("total_amount").to_pylist()) > 100
    assert seen == [10_000, 20_000, 30_000]
    assert report.records_out == out.num_rows
    assert report.to_dict()["records_in"] == 30_000 and "records_per_s" in report.to_dict()


@pytest.mark.skipif(
    importlib.util.find_spec("flowsql.exec.relational") is None, reason="no LIMIT operator yet"
)
def test_limit_stops_reading_early() -> None:
    pulled = 0

    class Counting(MemorySource):
        def batches(self) -> Iterator[pa.RecordBatch]:
            nonlocal pulled
            for batch in super().batches():
                pulled += 1
                yield batch

    sink = MemorySink()
    source = Counting(_trades(50_000), name="trades", batch_size=1_000)
    report = run_job(parse_one("SELECT symbol, price FROM trades LIMIT 5"), source, sink)
    assert sink.table().num_rows == 5
    assert report.stopped_early
    assert pulled < 50


def test_bad_lines_are_dead_lettered_and_the_job_goes_on(tmp_path: Path) -> None:
    lines = [
        f'{{"symbol": "S{i % 3}", "price": {i}.5, "timestamp": {1000 + i}}}' for i in range(100)
    ]
    lines[10] = '{"symbol": "S1", "price": "oops", "timestamp": 1010}'
    lines[20] = "garbage"
    lines[30] = '{"symbol": "S0", "price": 1.0, "timestamp": "not a time"}'
    path = tmp_path / "trades.jsonl"
    path.write_text("\n".join(lines) + "\n")
    letters = ListDeadLetters()
    source = open_source(path, name="trades", dead_letters=letters)
    out = tmp_path / "out.jsonl"
    report = run_job(
        parse_one("SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol EMIT FINAL"),
        source,
        open_sink(out),
        dead_letters=letters,
    )
    assert report.records_in == 97
    assert report.dead_lettered == 3
    assert sorted(x.position for x in letters.letters) == sorted(
        f"{path}:{n}" for n in (11, 21, 31)
    )
    assert out.exists()


def test_failing_processor_leaves_no_output(tmp_path: Path) -> None:
    class Broken(SimpleJobProcessor):
        def process_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
            out = super().process_batch(batch)
            if self.metrics.records_in > 2_000:
                raise ExecutionError("boom")
            return out

    statement = parse_one("SELECT symbol, price FROM trades")
    out = tmp_path / "out.jsonl"
    with pytest.raises(ExecutionError, match="boom"):
        run_job(
            statement,
            MemorySource(_trades(5_000), name="trades", batch_size=1_000),
            open_sink(out),
            processor=lambda stmt, dl: Broken(stmt, dead_letters=dl),
        )
    assert list(tmp_path.iterdir()) == []


def test_v2_processor_gives_the_same_rows(tmp_path: Path) -> None:
    from flowsql.runtime.coordinator import PartitionedJobCoordinator

    table = _trades(20_000)
    statement = parse_one(DEMO)
    v1, v2 = MemorySink(), MemorySink()
    run_job(statement, MemorySource(table, name="trades"), v1)
    report = run_job(
        statement,
        MemorySource(table, name="trades"),
        v2,
        processor=lambda stmt, dl: PartitionedJobCoordinator(
            stmt, num_partitions=2, dead_letters=dl
        ),
    )
    assert report.processor == "V2"
    assert len(_rows(v1)) == len(_rows(v2))
    for a, b in zip(_rows(v1), _rows(v2), strict=True):
        assert a[:2] == b[:2] and a[3:] == b[3:] and a[2] == pytest.approx(b[2])
