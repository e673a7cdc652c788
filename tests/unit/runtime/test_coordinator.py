"""PartitionedJobCoordinator: routing path, source-parallel path, worker death."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowsql.engine import Engine
from flowsql.errors import ExecutionError
from flowsql.exec.eventtime import prior_max
from flowsql.plan import nodes as n
from flowsql.plan.partial import ROWS, split_plan
from flowsql.records import ListDeadLetters
from flowsql.runtime.coordinator import BatchError, PartitionedJobCoordinator
from flowsql.runtime.ordering import output_order
from flowsql.runtime.processor import JobProcessor
from flowsql.runtime.splits import jsonl_splits, shift_letter
from flowsql.sql import parse_one

T0 = 1_700_000_000_000


def trades(rows: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = (
        T0
        + np.arange(rows, dtype=np.int64) * 7
        - rng.integers(0, 2_000, rows) * (rng.random(rows) < 0.05)
    )
    return pa.table(
        {
            "symbol": pa.array([f"S{i}" for i in rng.integers(0, 13, rows)]),
            "price": rng.integers(100, 10_000, rows) / 100,
            "qty": rng.integers(1, 50, rows),
            "ts": ts,
        }
    )


def run_v1(sql: str, table: pa.Table, batch: int = 500) -> list[dict[str, object]]:
    engine = Engine(parse_one(sql))
    out = [o for b in table.to_batches(batch) for o in engine.process(b)] + engine.flush()
    return _rows(out)


def run_v2(sql: str, table: pa.Table, partitions: int, batch: int = 500) -> list[dict[str, object]]:
    with PartitionedJobCoordinator(parse_one(sql), num_partitions=partitions) as v2:
        out = [o for b in table.to_batches(batch) for o in v2.process_batch(b)] + v2.flush()
    return _rows(out)


def _rows(batches: list[pa.RecordBatch]) -> list[dict[str, object]]:
    return [r for b in batches for r in b.to_pylist()]


def test_is_a_job_processor() -> None:
    with PartitionedJobCoordinator(parse_one("SELECT symbol FROM t"), num_partitions=2) as v2:
        assert isinstance(v2, JobProcessor)
        assert (v2.processor_name, v2.processor_version, v2.num_partitions) == (
            "PartitionedJobCoordinator",
            "V2",
            2,
        )


@pytest.mark.parametrize("partitions", [1, 3])
def test_stateless_query_keeps_input_order(partitions: int) -> None:
    sql = "SELECT symbol, price * 2 AS p2 FROM trades WHERE qty > 20"
    table = trades(3_000)
    assert run_v2(sql, table, partitions) == run_v1(sql, table)


def test_single_strategy_runs_on_one_partition() -> None:
    with PartitionedJobCoordinator(
        parse_one("SELECT symbol FROM t LIMIT 5"), num_partitions=4
    ) as v2:
        assert v2.num_partitions == 1
        assert v2.requested_partitions == 4
        assert v2.routing.strategy == "single"


def test_killed_worker_raises_naming_partition_and_exit_code() -> None:
    table = trades(20_000)
    v2 = PartitionedJobCoordinator(
        parse_one("SELECT symbol FROM t WHERE qty > 1"), num_partitions=2
    )
    try:
        v2.process_batch(table.to_batches(1_000)[0])
        victim = v2.workers[1].process
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        with pytest.raises(ExecutionError, match=r"partition 1 .*exit code -9"):
            for b in table.to_batches(1_000):
                v2.process_batch(b)
            v2.flush()
        assert all(w.closed for w in v2.workers)
    finally:
        v2.close()


def test_failure_is_visible_without_a_call_and_close_reaps() -> None:
    v2 = PartitionedJobCoordinator(parse_one("SELECT symbol FROM t"), num_partitions=2)
    try:
        assert v2.failure is None
        pid = v2.workers[0].process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while v2.failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "partition 0" in str(v2.failure)
    finally:
        v2.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: no zombie left
    with pytest.raises(ExecutionError, match="closed"):
        v2.process_batch(trades(10).to_batches()[0])


def test_a_batch_that_fails_in_a_partition_is_reported_and_the_workers_live_on() -> None:
    sql = "SELECT CAST(symbol AS INT) AS n FROM t"
    ok = pa.record_batch({"symbol": ["1", "2"], "ts": [T0, T0 + 1]})
    bad = pa.record_batch({"symbol": ["3", "x"], "ts": [T0 + 2, T0 + 3]})
    out: list[pa.RecordBatch] = []
    with PartitionedJobCoordinator(parse_one(sql), num_partitions=2) as v2:
        out += v2.process_batch(ok)
        out += v2.process_batch(bad)
        with pytest.raises(BatchError, match="partition 1") as failed:
            out += v2.drain()
        assert failed.value.batch is bad
        out += v2.process_batch(ok)
        out += v2.flush()
        assert v2.failure is None
    assert [r["n"] for r in _rows(out)] == [1, 2, 1, 2]


def test_prior_max_is_the_max_of_all_rows_before() -> None:
    ts = np.array([5, 3, 9, 1, 10], dtype=np.int64)
    assert prior_max(ts, None).tolist() == [5, 5, 5, 9, 9]
    assert prior_max(ts, 7).tolist() == [7, 7, 7, 9, 9]


def test_merged_outputs_follow_window_end_then_key_without_the_order_columns() -> None:
    statement = parse_one(
        "SELECT k AS key, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
    )
    order = output_order(statement, 2)
    # the partitions' projection carries window end, window start and key
    assert order.columns == ("__order_0", "__order_1", "__order_2")

    def batch(keys: list[str | None], ends: list[int]) -> pa.RecordBatch:
        return pa.record_batch(
            {"key": keys, "__order_0": ends, "__order_1": [e - 10 for e in ends], "__order_2": keys}
        )

    merged = order.merge([[batch(["b", None], [20, 20])], [batch(["a", "a"], [10, 20])]])
    assert [r for b in merged for r in b.to_pylist()] == [
        {"key": "a"},
        {"key": "a"},
        {"key": "b"},
        {"key": None},  # NULL keys last, as V1 orders them
    ]


def test_row_outputs_are_merged_in_arrival_order() -> None:
    order = output_order(parse_one("SELECT k, v FROM t WHERE v > 1"), 3)
    assert order.arrival
    tagged = order.tag(pa.record_batch({"k": ["x", "y", "z"], "v": [5, 6, 7]}), 100)
    assert tagged.column("__arrival").to_pylist() == [100, 101, 102]
    parts = [[tagged.slice(1, 1)], [tagged.slice(2, 1)], [tagged.slice(0, 1)]]
    merged = order.merge(parts)
    assert [r for b in merged for r in b.to_pylist()] == [
        {"k": "x", "v": 5},
        {"k": "y", "v": 6},
        {"k": "z", "v": 7},
    ]


def test_one_partition_runs_the_plan_unchanged() -> None:
    statement = parse_one("SELECT k, v FROM t WHERE v > 1")
    order = output_order(statement, 1)
    assert order.statement is statement and not order.columns


def test_split_plan_cuts_decomposable_final_aggregates_into_partials() -> None:
    plan = split_plan(
        parse_one(
            "SELECT symbol, MAX(price) AS hi, COUNT(*) AS c FROM t"
            " GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND) HAVING COUNT(*) > 1"
        )
    )
    assert plan.two_phase
    lower = plan.lower.plan
    assert isinstance(lower, n.Aggregate)
    assert [name for name, _ in lower.aggs][-1] == ROWS
    assert [m.kind for m in plan.merges] == ["max", "sum"]
    assert plan.upper is not None and plan.upper.sources == ("__lower",)


def test_split_plan_leaves_sums_to_the_coordinator_with_only_the_columns_it_reads() -> None:
    """A sum of partial sums adds floats in another order than V1's running sum."""
    plan = split_plan(
        parse_one(
            "SELECT symbol, AVG(price) AS a, COUNT(*) AS c FROM t WHERE qty > 1"
            " GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
        )
    )
    assert not plan.two_phase and "AVG" in plan.reason
    lower = plan.lower.plan
    assert isinstance(lower, n.Project) and isinstance(lower.input, n.Scan)  # no filter: windowed
    assert sorted(name for name, _ in lower.exprs) == ["_timestamp", "price", "qty", "symbol", "ts"]


def test_split_plan_only_decodes_for_changes_and_keeps_batches() -> None:
    plan = split_plan(
        parse_one("SELECT symbol, COUNT(*) AS c FROM t WHERE qty > 1 GROUP BY symbol EMIT CHANGES")
    )
    assert not plan.two_phase
    assert plan.batch_exact  # the changelog follows V1's micro-batches
    lower = plan.lower.plan  # decode, keep the columns read; the filter runs on V1's batches
    assert isinstance(lower, n.Project) and isinstance(lower.input, n.Scan)
    assert sorted(name for name, _ in lower.exprs) == ["_timestamp", "qty", "symbol"]
    assert "EMIT CHANGES" in plan.reason


def test_split_plan_pushes_filters_only_without_windows() -> None:
    rows = split_plan(
        parse_one(
            "SELECT symbol, SUM(qty) OVER (PARTITION BY symbol ROWS BETWEEN 2 PRECEDING"
            " AND CURRENT ROW) AS s FROM t WHERE qty > 1"
        )
    )
    assert isinstance(rows.lower.plan, n.Project) and isinstance(rows.lower.plan.input, n.Filter)
    session = split_plan(
        parse_one(
            "SELECT symbol, COUNT(*) AS c FROM t WHERE qty > 1 GROUP BY symbol"
            " WINDOW SESSION(ts, INTERVAL '1' SECOND)"
        )
    )
    # V1 decides lateness from every row's event time, filtered out or not
    assert not session.two_phase and not session.batch_exact
    assert isinstance(session.lower.plan, n.Project)
    assert isinstance(session.lower.plan.input, n.Scan)


def _jsonl(path: Path, table: pa.Table, bad_every: int = 0) -> Path:
    with path.open("w") as f:
        for i, row in enumerate(table.to_pylist()):
            if bad_every and i % bad_every == 7:
                f.write("{not json\n")
            f.write(json.dumps(row) + "\n")
    return path


def test_run_splits_equals_v1_over_the_file_and_numbers_dead_letters(tmp_path: Path) -> None:
    from flowsql.connectors.files import JsonlSource

    path = _jsonl(tmp_path / "t.jsonl", trades(4_000), bad_every=1_500)
    sql = "SELECT symbol, qty FROM trades WHERE qty > 10"
    v1_letters = ListDeadLetters()
    source = JsonlSource(path, name="trades", dead_letters=v1_letters)
    engine = Engine(parse_one(sql))
    expected = _rows([o for b in source.batches() for o in engine.process(b)] + engine.flush())
    splits = jsonl_splits(path, source="trades", split_bytes=20_000)
    assert splits is not None and len(splits) > 5
    letters = ListDeadLetters()
    with PartitionedJobCoordinator(parse_one(sql), num_partitions=2, dead_letters=letters) as v2:
        got = _rows(list(v2.run_splits(splits)))
        assert v2.flush() == []
        assert v2.metrics.records_in == 4_000
        assert v2.metrics.dead_lettered == 3
    assert got == expected
    assert [x.position for x in letters.letters] == [x.position for x in v1_letters.letters]


def test_shift_letter_renumbers_file_lines() -> None:
    from flowsql.records import DeadLetter

    letter = DeadLetter("bad", "x", "t", "/data/t.jsonl:3")
    assert shift_letter(letter, 10).position == "/data/t.jsonl:13"


def test_late_rows_go_to_the_dead_letter_sink_like_v1() -> None:
    sql = (
        "SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol"
        " WINDOW TUMBLING(ts, INTERVAL '100' MILLISECOND) WITH ('late.data.strategy' = 'dlq')"
    )
    table = trades(4_000)
    v1_letters = ListDeadLetters()
    v1 = Engine(parse_one(sql), dead_letters=v1_letters)
    for b in table.to_batches(300):
        v1.process(b)
    v1.flush()
    letters = ListDeadLetters()
    with PartitionedJobCoordinator(parse_one(sql), num_partitions=3, dead_letters=letters) as v2:
        for b in table.to_batches(300):
            v2.process_batch(b)
        v2.flush()
        assert v2.metrics.late_records == v1.metrics.late_records > 0
        assert v2.metrics.dead_lettered == len(v1_letters.letters)
    assert sorted(str(x.original) for x in letters.letters) == sorted(
        str(x.original) for x in v1_letters.letters
    )


def test_run_splits_numbers_event_time_dead_letters_like_v1(tmp_path: Path) -> None:
    from flowsql.connectors.files import JsonlSource

    rows = trades(3_000).to_pylist()
    for i in (5, 1_700, 2_900):
        rows[i]["ts"] = "not a time"
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sql = "SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
    v1_letters = ListDeadLetters()  # decode errors (the source) and event-time errors (the engine)
    engine = Engine(parse_one(sql), dead_letters=v1_letters)
    for b in JsonlSource(path, name="trades", dead_letters=v1_letters).batches():
        engine.process(b)
    engine.flush()
    letters = ListDeadLetters()
    splits = jsonl_splits(path, source="trades", split_bytes=20_000)
    with PartitionedJobCoordinator(parse_one(sql), num_partitions=2, dead_letters=letters) as v2:
        list(v2.run_splits(splits or []))
    assert len(v1_letters.letters) == 3
    assert [x.position for x in letters.letters] == [x.position for x in v1_letters.letters]
    assert [x.error for x in letters.letters] == [x.error for x in v1_letters.letters]
