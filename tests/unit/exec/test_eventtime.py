"""Event-time assignment: integers, timestamps, ISO strings with and without zones."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.errors import ExecutionError
from flowsql.exec.eventtime import EventTimeAssigner

BASE = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _assign(values: list[object], typ: pa.DataType | None = None, column: str = "ts"):
    batch = pa.RecordBatch.from_pydict(
        {"ts": pa.array(values, typ), "_offset": list(range(len(values)))}
    )
    return EventTimeAssigner(column, "trades").assign(batch)


def test_integers_are_epoch_ms() -> None:
    out, letters = _assign([BASE, BASE + 5])
    assert out.column("_timestamp").to_pylist() == [BASE, BASE + 5]
    assert letters == []


def test_iso_strings_with_and_without_zone() -> None:
    out, letters = _assign(
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01T02:00:00+02:00",
            "2024-01-01 00:00:01.5",
            "1704067200007",
        ]
    )
    assert out.column("_timestamp").to_pylist() == [BASE, BASE, BASE + 1500, BASE + 7]
    assert letters == []


def test_unparseable_rows_become_dead_letters_and_the_rest_stay() -> None:
    out, letters = _assign(["2024-01-01T00:00:00Z", "yesterday", None])
    assert out.column("_timestamp").to_pylist() == [BASE]
    assert [letter.position for letter in letters] == ["line 1", "line 2"]
    assert "yesterday" in letters[0].error and "ts" in letters[0].error
    assert '"ts": "yesterday"' in str(letters[0].original)


def test_timestamp_type_with_zone() -> None:
    out, _ = _assign([BASE], pa.timestamp("ms", "UTC"))
    assert out.column("_timestamp").to_pylist() == [BASE]


def test_missing_configured_column_is_an_error_naming_it() -> None:
    batch = pa.RecordBatch.from_pydict({"x": [1]})
    with pytest.raises(ExecutionError, match="'when'"):
        EventTimeAssigner("when", "trades").assign(batch)


def test_fallback_to_timestamp_column() -> None:
    batch = pa.RecordBatch.from_pydict({"timestamp": [BASE]})
    out, _ = EventTimeAssigner(None, "t").assign(batch)
    assert out.column("_timestamp").to_pylist() == [BASE]
