"""Late data with EMIT FINAL against a record-at-a-time Python model of
DESIGN.md §4, at batch sizes 1, 7 and 10,000.

The model: records arrive in order; before record i the watermark is
``max(ts of records before i) - allowed lateness``. Windows (and sessions)
whose end is at or below the watermark are closed. A record is late when
every window it belongs to is closed (a session record: when ``ts + gap`` is
at or below the watermark); late records are dropped and counted. A sliding
record that is not late still skips those of its windows that are closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest

from .data import out_of_order
from .harness import BATCH_SIZES, assert_rows, canonical, run_engine

NO_TIME = -(1 << 62)


@dataclass
class Acc:
    """COUNT(*), SUM(qty), MAX(price) and the ids of one group."""

    n: int = 0
    q: int | None = None
    hi: float | None = None
    ids: list[int] = field(default_factory=list)

    def add(self, rec: dict[str, Any]) -> None:
        self.n += 1
        if rec["qty"] is not None:
            self.q = rec["qty"] + (self.q or 0)
        if rec["price"] is not None:
            self.hi = rec["price"] if self.hi is None else max(self.hi, rec["price"])
        self.ids.append(rec["id"])

    def merge(self, other: Acc) -> None:
        self.n += other.n
        if other.q is not None:
            self.q = other.q + (self.q or 0)
        if other.hi is not None:
            self.hi = other.hi if self.hi is None else max(self.hi, other.hi)
        self.ids += other.ids


def fixed_windows_model(
    records: list[dict[str, Any]], windows: Callable[[int], list[tuple[int, int]]], lateness: int
) -> tuple[list[dict[str, Any]], int]:
    """Expected rows and late count for tumbling/sliding windows."""
    groups: dict[tuple[Any, int, int], Acc] = {}
    prior_max, late = NO_TIME, 0
    for rec in records:
        wm = prior_max - lateness
        open_windows = [(s, e) for s, e in windows(rec["ts"]) if e > wm]
        if not open_windows:
            late += 1
        for s, e in open_windows:
            groups.setdefault((rec["symbol"], s, e), Acc()).add(rec)
        prior_max = max(prior_max, rec["ts"])
    return [_row(k, s, e, acc) for (k, s, e), acc in groups.items()], late


def session_model(
    records: list[dict[str, Any]], gap: int, lateness: int
) -> tuple[list[dict[str, Any]], int]:
    """Expected rows and late count for SESSION(gap) per symbol."""
    open_: dict[Any, list[list[Any]]] = {}  # key -> [[start, end, Acc], ...]
    closed: list[dict[str, Any]] = []
    prior_max, late = NO_TIME, 0
    for rec in records:
        wm = prior_max - lateness
        for key, sessions in open_.items():
            closed += [_row(key, s, e, acc) for s, e, acc in sessions if e <= wm]
            sessions[:] = [x for x in sessions if x[1] > wm]
        ts = rec["ts"]
        if ts + gap <= wm:
            late += 1
        else:
            sessions = open_.setdefault(rec["symbol"], [])
            touching = [x for x in sessions if ts < x[1] and x[0] < ts + gap]
            merged = [ts, ts + gap, Acc()]
            merged[2].add(rec)
            for x in touching:
                merged[0], merged[1] = min(merged[0], x[0]), max(merged[1], x[1])
                merged[2].merge(x[2])
                sessions.remove(x)
            sessions.append(merged)
        prior_max = max(prior_max, ts)
    for key, sessions in open_.items():
        closed += [_row(key, s, e, acc) for s, e, acc in sessions]
    return closed, late


def _row(key: Any, start: int, end: int, acc: Acc) -> dict[str, Any]:
    return {
        "symbol": key,
        "_window_start": start,
        "_window_end": end,
        "n": acc.n,
        "q": acc.q,
        "hi": acc.hi,
    }


def tumbling(size: int) -> Callable[[int], list[tuple[int, int]]]:
    return lambda ts: [(ts // size * size, ts // size * size + size)]


def sliding(size: int, advance: int) -> Callable[[int], list[tuple[int, int]]]:
    def windows(ts: int) -> list[tuple[int, int]]:
        first = (ts - size) // advance + 1
        return [(k * advance, k * advance + size) for k in range(first, ts // advance + 1)]

    return windows


SELECT = "SELECT symbol, _window_start, _window_end, COUNT(*) AS n, SUM(qty) AS q, MAX(price) AS hi"


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return out_of_order(300)


@pytest.fixture(scope="module")
def records(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


CASES = [
    pytest.param("TUMBLING(ts, 1s)", 0, tumbling(1000), id="tumbling"),
    pytest.param("TUMBLING(ts, 500ms)", 300, tumbling(500), id="tumbling-lateness-300ms"),
    pytest.param("SLIDING(ts, 1s, 250ms)", 0, sliding(1000, 250), id="sliding"),
    pytest.param("HOPPING(ts, 800ms, 400ms)", 1000, sliding(800, 400), id="hopping-lateness-1s"),
]


@pytest.mark.parametrize(("window", "lateness", "windows"), CASES)
def test_late_records_are_dropped_and_counted(
    window: str,
    lateness: int,
    windows: Callable[[int], list[tuple[int, int]]],
    table: pa.Table,
    records: list[dict[str, Any]],
) -> None:
    want, late = fixed_windows_model(records, windows, lateness)
    assert late > 0, "the data should have late records"
    sql = (
        f"{SELECT} FROM t GROUP BY symbol WINDOW {window}"
        f" EMIT FINAL WITH ('watermark.allowed_lateness' = '{lateness}ms')"
    )
    for size in BATCH_SIZES:
        rows, engine = run_engine(sql, table, size)
        assert_rows(canonical(rows), canonical(want), what=f"batch size {size}: {sql}")
        assert engine.metrics.late_records == late, f"batch size {size}"


@pytest.mark.parametrize(("gap", "lateness"), [(100, 0), (250, 400)])
def test_late_records_in_sessions(
    gap: int, lateness: int, table: pa.Table, records: list[dict[str, Any]]
) -> None:
    want, late = session_model(records, gap, lateness)
    assert late > 0
    sql = (
        f"{SELECT} FROM t GROUP BY symbol WINDOW SESSION(ts, {gap}ms)"
        f" WITH ('watermark.allowed_lateness' = '{lateness}ms')"
    )
    for size in BATCH_SIZES:
        rows, engine = run_engine(sql, table, size)
        assert_rows(canonical(rows), canonical(want), what=f"batch size {size}: {sql}")
        assert engine.metrics.late_records == late, f"batch size {size}"


def test_late_records_go_to_the_dead_letters_with_dlq_strategy(
    table: pa.Table, records: list[dict[str, Any]]
) -> None:
    _, late = fixed_windows_model(records, tumbling(1000), 0)
    late_ids = _late_ids(records, tumbling(1000), 0)
    sql = (
        f"{SELECT} FROM t GROUP BY symbol WINDOW TUMBLING(ts, 1s)"
        " WITH ('late.data.strategy' = 'dlq')"
    )
    for size in (7, 10_000):
        _, engine = run_engine(sql, table, size)
        letters = engine.dead_letters.letters  # type: ignore[attr-defined]
        assert engine.metrics.late_records == late
        assert engine.metrics.dead_lettered == late
        assert len(letters) == late
        assert all("late" in letter.error for letter in letters)
        assert sorted(_id_of(letter.original) for letter in letters) == late_ids


def test_windows_close_as_the_watermark_passes(table: pa.Table) -> None:
    """A tumbling window is emitted by the first batch whose max event time
    reaches window end + lateness, not only at end of input."""
    import flowsql

    sql = (
        "SELECT _window_end, COUNT(*) AS n FROM t WINDOW TUMBLING(ts, 1s)"
        " WITH ('watermark.allowed_lateness' = '200ms')"
    )
    engine = flowsql.Engine(sql)
    high = None
    for batch in table.to_batches(max_chunksize=13):
        out = [r for b in engine.process(batch) for r in b.to_pylist()]
        batch_high = max(batch.column("ts").to_pylist())
        high = batch_high if high is None else max(high, batch_high)
        for r in out:
            assert r["_window_end"] <= high - 200
    tail = [r for b in engine.flush() for r in b.to_pylist()]
    assert tail, "the last windows are emitted at end of input"
    assert all(r["_window_end"] > high - 200 for r in tail)


def _late_ids(
    records: list[dict[str, Any]], windows: Callable[[int], list[tuple[int, int]]], lateness: int
) -> list[int]:
    prior_max, out = NO_TIME, []
    for rec in records:
        if all(e <= prior_max - lateness for _, e in windows(rec["ts"])):
            out.append(rec["id"])
        prior_max = max(prior_max, rec["ts"])
    return out


def _id_of(original: str | bytes) -> int:
    import json

    return int(json.loads(original)["id"])


def _tiny(ts: list[int]) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "id": list(range(n)),
            "symbol": ["A"] * n,
            "price": [1.0] * n,
            "qty": [1] * n,
            "ts": ts,
        }
    )


@pytest.mark.parametrize(
    ("window", "ts", "lateness"),
    [
        pytest.param("TUMBLING(ts, 1s)", [0, 1000, 999], 0, id="end-equals-watermark-is-late"),
        pytest.param("TUMBLING(ts, 1s)", [0, 1000, 999], 1, id="lateness-1ms-keeps-it"),
        pytest.param("TUMBLING(ts, 1s)", [0, 1999, 1000, 999, 2000, 1000], 0, id="tumbling-mix"),
        pytest.param("SLIDING(ts, 1s, 500ms)", [0, 1000, 999, 1499, 1500, 999], 0, id="sliding"),
        pytest.param("SESSION(ts, 100ms)", [0, 300, 200], 0, id="session-late-at-boundary"),
        pytest.param("SESSION(ts, 100ms)", [0, 300, 201, 100], 0, id="session-bridge-at-boundary"),
        pytest.param(
            "SESSION(ts, 100ms)", [0, 100, 200, 50], 50, id="touching-sessions-stay-apart"
        ),
    ],
)
def test_lateness_boundaries(window: str, ts: list[int], lateness: int) -> None:
    records = _tiny(ts).to_pylist()
    if window.startswith("SESSION"):
        want, late = session_model(records, 100, lateness)
    elif window.startswith("SLIDING"):
        want, late = fixed_windows_model(records, sliding(1000, 500), lateness)
    else:
        want, late = fixed_windows_model(records, tumbling(1000), lateness)
    sql = (
        f"{SELECT} FROM t GROUP BY symbol WINDOW {window}"
        f" WITH ('watermark.allowed_lateness' = '{lateness}ms')"
    )
    for size in (1, 2, 10_000):
        rows, engine = run_engine(sql, _tiny(ts), size)
        assert_rows(canonical(rows), canonical(want), what=f"batch size {size}: {sql} over {ts}")
        assert engine.metrics.late_records == late, f"batch size {size}"
