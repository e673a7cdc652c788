"""Event time from every accepted input type (epoch-ms integers, floats,
Arrow timestamps, ISO-8601 strings with and without a zone) gives the same
windows as DuckDB over the epoch-ms values, at batch sizes 1, 7 and 10,000;
and windowed EMIT CHANGES ends on the final aggregate of each window."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from .data import trades
from .harness import check_differential
from .queries import LATENESS

SQL = (
    "SELECT symbol, _window_start, COUNT(*) AS n, SUM(qty) AS q FROM t GROUP BY symbol"
    f" WINDOW TUMBLING(ts, 1s) {LATENESS}"
)
DUCK = (
    "SELECT symbol, ts // 1000 * 1000 AS _window_start, COUNT(*) AS n, SUM(qty)::BIGINT AS q"
    " FROM t GROUP BY ALL"
)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(120, seed=61)


def _with_ts(table: pa.Table, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index("ts"), "ts", column)


def _iso(table: pa.Table, suffix: str) -> pa.Array:
    stamps = pc.cast(table.column("ts"), pa.timestamp("ms"))
    text = pc.utf8_slice_codeunits(pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%S"), 0, 23)
    return pc.binary_join_element_wise(text, pa.scalar(suffix), "")


@pytest.mark.parametrize(
    "kind", ["float-ms", "timestamp-ms", "timestamp-us-utc", "iso", "iso-z", "iso-offset"]
)
def test_event_time_types(kind: str, table: pa.Table) -> None:
    ts = table.column("ts")
    column = {
        "float-ms": lambda: pc.add(pc.cast(ts, pa.float64()), 0.25),
        "timestamp-ms": lambda: pc.cast(ts, pa.timestamp("ms")),
        "timestamp-us-utc": lambda: pc.cast(
            pc.cast(ts, pa.timestamp("ms", "UTC")), pa.timestamp("us", "UTC")
        ),
        "iso": lambda: _iso(table, ""),
        "iso-z": lambda: _iso(table, "Z"),
        "iso-offset": lambda: _iso(table, "+00:00"),
    }[kind]()
    check_differential(SQL, _with_ts(table, column), DUCK, duck_tables={"t": table})


def test_windowed_emit_changes_ends_on_the_final_value(table: pa.Table) -> None:
    sql = (
        "SELECT symbol, _window_start, COUNT(*) AS n, SUM(amount) AS s FROM t GROUP BY symbol"
        f" WINDOW TUMBLING(ts, 1s) EMIT CHANGES {LATENESS}"
    )
    duck = (
        "SELECT symbol, ts // 1000 * 1000 AS _window_start, COUNT(*) AS n, SUM(amount) AS s"
        " FROM t GROUP BY ALL"
    )
    check_differential(sql, table, duck, changes_keys=["symbol", "_window_start"])
