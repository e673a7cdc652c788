"""Savepoints of server jobs: a job stopped and deployed again (same name, same
statement, ``server.checkpoint_dir`` set) continues its state, its source position
and its counts, on V1 and across V1 -> V2; an opt-out or a changed statement
starts from zero and says why.

The generator is read in batches of 100 rows so that a job is still running when
the test stops it; every check is exact (per-symbol counts against the input).
"""

from __future__ import annotations

import json
import queue
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.server import register
from flowsql.connectors.generator import make_generator
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink
from flowsql.server.api import create_app
from flowsql.server.config import ServerSettings
from flowsql.server.job import JobStatus
from flowsql.server.jobserver import StreamJobServer
from flowsql.server.savepoint import statement_fingerprint
from flowsql.sql import parse
from tests import polling
from tests.serving import PROGRAM_HEADERS, live, live_client

wait_until = partial(polling.wait_until, limit_s=60)  # whole generator runs

RECORDS = 400_000
BATCH = 100
STOP_AFTER = 20_000  # records_in at which the first run is stopped (of RECORDS)
V2 = "-- @job_mode: v2\n-- @num_partitions: 2\n"


def counts_sql(out: Path, records: int = RECORDS, extra: str = "") -> str:
    return (
        f"CREATE TABLE counts AS SELECT symbol, COUNT(*) AS n{extra} FROM trades"
        " GROUP BY symbol EMIT CHANGES"
        f" WITH ('trades.type'='generator', 'trades.records'='{records}',"
        f" 'trades.batch_size'='{BATCH}', 'out.type'='file_sink', 'out.path'='{out}')"
    )


def expected_counts(records: int = RECORDS) -> dict[str, int]:
    source = make_generator("trades", records=records)
    table = pa.Table.from_batches(list(source.batches())).select(["symbol"])
    table = table.set_column(0, "symbol", table["symbol"].cast(pa.string()))
    grouped = table.group_by("symbol").aggregate([("symbol", "count")])
    return dict(
        zip(grouped["symbol"].to_pylist(), grouped["symbol_count"].to_pylist(), strict=True)
    )


def output_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def first_and_last(rows: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for row in rows:
        first.setdefault(row["symbol"], row["n"])
        last[row["symbol"]] = row["n"]
    return first, last


def run_and_stop(server: StreamJobServer, sql: str) -> JobStatus:
    server.deploy(sql)
    wait_until(lambda: server.status("counts").records_in >= STOP_AFTER, "the first records")
    status = server.stop("counts", forget=True)
    assert status.state == "STOPPED", status.last_error
    assert status.records_in < RECORDS, "the job ended before the test stopped it"
    return status


def run_to_end(server: StreamJobServer, sql: str, **deploy: Any) -> JobStatus:
    server.deploy(sql, **deploy)
    wait_until(lambda: server.status("counts").state != "RUNNING", "the end of the input")
    status = server.status("counts")
    assert status.state == "FINISHED", status.last_error
    return status


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StreamJobServer]:
    settings = ServerSettings(
        checkpoint_dir=tmp_path / "ckpt", file_roots=(tmp_path,), batch_size=BATCH
    )
    with StreamJobServer(settings) as srv:
        yield srv


def test_a_bad_restore_flag_is_refused(server: StreamJobServer, tmp_path: Path) -> None:
    with live_client(create_app(server), headers=PROGRAM_HEADERS) as client:
        answer = client.post("/jobs?restore=maybe", json={"sql": counts_sql(tmp_path / "o.jsonl")})
    assert answer.status_code == 400 and "true or false" in answer.text
    assert server.jobs() == []


@pytest.mark.parametrize("second", ["", V2], ids=["v1-v1", "v1-v2"])
def test_a_redeployed_job_continues_state_position_and_counts(
    server: StreamJobServer, tmp_path: Path, second: str
) -> None:
    out = tmp_path / "out.jsonl"
    stopped = run_and_stop(server, counts_sql(out))
    _, before = first_and_last(output_rows(out))
    assert sum(before.values()) == stopped.records_in

    status = run_to_end(server, second + counts_sql(out))

    restored = status.restored
    assert restored is not None and restored["restored"] is True
    assert restored["records_in"] == stopped.records_in
    assert restored["source_position"] == stopped.records_in
    assert status.processor_version == ("V2" if second else "V1")
    assert status.records_in == RECORDS  # counted on, not from zero
    rows = output_rows(out)  # the second run's output only
    first, last = first_and_last(rows)
    assert status.records_out == stopped.records_out + len(rows)
    assert all(first[s] > before[s] for s in first if s in before)  # counting on
    assert last == expected_counts()  # no record lost or read twice


def deploy_from_the_cli(url: str, sql: str, *flags: str) -> None:
    """``flowsql deploy [flags] FILE`` against the server at ``url``."""
    app = typer.Typer()
    register(app)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.sql"
        path.write_text(sql)
        result = CliRunner().invoke(app, ["deploy", str(path), "--server", url, *flags])
    assert result.exit_code == 0, result.output


def finished(server: StreamJobServer) -> JobStatus:
    wait_until(lambda: server.status("counts").state != "RUNNING", "the end of the input")
    return server.status("counts")


@pytest.mark.parametrize("how", ["annotation", "deploy", "http", "cli"])
def test_opting_out_starts_from_zero(server: StreamJobServer, tmp_path: Path, how: str) -> None:
    out = tmp_path / "out.jsonl"
    run_and_stop(server, counts_sql(out))
    if how == "annotation":
        status = run_to_end(server, "-- @restore: false\n" + counts_sql(out))
    elif how == "deploy":
        status = run_to_end(server, counts_sql(out), restore=False)
    elif how == "http":  # the app's shutdown stops its jobs: wait inside
        with live_client(create_app(server), headers=PROGRAM_HEADERS) as client:
            answer = client.post("/jobs?restore=false", json={"sql": counts_sql(out)})
            assert answer.status_code == 201, answer.text
            status = finished(server)
    else:
        with live(create_app(server)) as url:
            deploy_from_the_cli(url, counts_sql(out), "--no-restore")
            status = finished(server)

    assert status.restored is not None and status.restored["restored"] is False
    assert status.restored["reason"].startswith("restore turned off")
    assert status.records_in == RECORDS
    assert first_and_last(output_rows(out))[1] == expected_counts()


def test_a_changed_statement_starts_from_zero_and_says_why(
    server: StreamJobServer, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    run_and_stop(server, counts_sql(out))
    status = run_to_end(server, counts_sql(out, extra=", SUM(quantity) AS q"))

    assert status.restored is not None and status.restored["restored"] is False
    assert "the statement changed (fingerprint" in status.restored["reason"]
    assert status.records_in == RECORDS
    assert first_and_last(output_rows(out))[1] == expected_counts()


def test_a_finished_job_runs_again_from_zero(server: StreamJobServer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sql = counts_sql(out, records=5_000)
    assert run_to_end(server, sql).records_in == 5_000
    status = run_to_end(server, sql)
    assert status.restored == {"restored": False, "reason": "the last run finished its input"}
    assert status.records_in == 5_000
    assert first_and_last(output_rows(out))[1] == expected_counts(5_000)


def test_a_file_job_continues_and_counts_its_dead_letters_once(
    server: StreamJobServer, tmp_path: Path
) -> None:
    data, out = tmp_path / "trades.jsonl", tmp_path / "out.jsonl"
    lines = ["not json", '{"symbol": "A", "quantity": ']
    lines += [json.dumps({"symbol": f"S{i % 7}", "quantity": i}) for i in range(RECORDS // 4)]
    data.write_text("\n".join(lines) + "\n")
    sql = (
        "CREATE TABLE counts AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol"
        f" WITH ('trades.type'='file_source', 'trades.path'='{data}',"
        f" 'out.type'='file_sink', 'out.path'='{out}')"
    )
    stopped = run_and_stop(server, sql)
    assert stopped.dead_lettered == 2
    status = run_to_end(server, sql)
    assert status.restored is not None and status.restored["restored"] is True
    assert status.records_in == RECORDS // 4
    assert status.dead_lettered == 2
    last = first_and_last(output_rows(out))[1]
    assert last == {f"S{k}": len(range(k, RECORDS // 4, 7)) for k in range(7)}


class QueueSource:
    """A source that cannot resume: it yields what the test puts in, heartbeats when idle."""

    def __init__(self, feed: queue.Queue[pa.RecordBatch]) -> None:
        self.name = "trades"
        self.dead_lettered = 0
        self.feed = feed

    def batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                yield self.feed.get(timeout=0.02)
            except queue.Empty:
                yield pa.record_batch({"symbol": pa.array([], pa.string())})

    def close(self) -> None:
        return None


def test_a_source_that_cannot_resume_restores_operator_state_only(tmp_path: Path) -> None:
    feed: queue.Queue[pa.RecordBatch] = queue.Queue()

    def source(statement: Statement, letters: DeadLetterSink) -> QueueSource:
        return QueueSource(feed)

    settings = ServerSettings(checkpoint_dir=tmp_path / "ckpt")
    sql = "CREATE TABLE counts AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol"
    batch = pa.record_batch({"symbol": pa.array(["a", "b", "a"])})
    with StreamJobServer(settings, source_factory=source) as server:
        server.deploy(sql)
        feed.put(batch)
        wait_until(lambda: server.status("counts").records_in == 3, "the first batch")
        server.stop("counts", forget=True)

        status = server.deploy(V2 + sql)[0]
        assert status.restored is not None
        assert status.restored["restored"] is True and status.restored["source_position"] is None
        assert "cannot resume" in status.restored["note"]
        feed.put(batch)
        wait_until(lambda: server.status("counts").records_in == 6, "the second batch")
        server.pause("counts")  # V2 emits what it has in flight
        rows = server.output("counts")
        assert rows is not None and rows[-2:] == [{"symbol": "a", "n": 4}, {"symbol": "b", "n": 2}]
        assert server.status("counts").records_out == 4


def test_the_fingerprint_ignores_annotations_and_layout_but_not_the_query() -> None:
    sql = "CREATE TABLE t AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol"
    plain = statement_fingerprint(parse(sql)[0])
    assert statement_fingerprint(parse(V2 + "-- @restore: true\n\n" + sql)[0]) == plain
    assert statement_fingerprint(parse(sql.replace(" GROUP", "\n   GROUP"))[0]) == plain
    assert statement_fingerprint(parse(sql.replace("COUNT(*)", "COUNT(symbol)"))[0]) != plain
