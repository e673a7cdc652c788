"""The engine's own duties: watermarks seen by the whole input, empty results."""

from __future__ import annotations

import pyarrow as pa
import pytest

import flowsql

ROWS = [
    {"k": "a", "ts": 0},
    {"k": "x", "ts": 5_000},  # filtered out, but it still moves the watermark
    {"k": "a", "ts": 100},  # late: window [0, 1000) closed when ts 5000 arrived
]
SQL = "SELECT k, COUNT(*) AS n FROM t WHERE k = 'a' GROUP BY k WINDOW TUMBLING(ts, 1s)"


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_rows_removed_by_a_filter_still_move_the_watermark(batch_size: int) -> None:
    engine = flowsql.Engine(SQL)
    table = pa.Table.from_pylist(ROWS)
    out = []
    for batch in table.to_batches(max_chunksize=batch_size):
        out += engine.process(batch)
    out += engine.flush()
    rows = pa.Table.from_batches(out).to_pylist()
    assert rows == [{"k": "a", "n": 1}]
    assert engine.metrics.late_records == 1


def test_empty_result_keeps_columns_and_types() -> None:
    result = flowsql.query(
        "SELECT k, ts * 2 AS t2 FROM t WHERE ts > 1000000", {"t": pa.Table.from_pylist(ROWS)}
    )
    assert result.num_rows == 0
    assert result.schema.names == ["k", "t2"]
    assert result.schema.field("t2").type == pa.int64()
