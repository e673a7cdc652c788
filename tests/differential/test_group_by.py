"""GROUP BY without a window: EMIT CHANGES (the default; a changelog whose last
row per key equals DuckDB's GROUP BY) and EMIT FINAL (one row per key at the
end of input), at batch sizes 1, 7 and 10,000."""

from __future__ import annotations

import pyarrow as pa
import pytest

import flowsql

from .data import trades
from .harness import (
    assert_rows,
    canonical,
    check_differential,
    run_duckdb,
    run_flowsql,
)
from .queries import AGGREGATES, Agg, same, select_list

AGGS: list[Agg] = [
    same("n", "COUNT(*)"),
    same("n_qty", "COUNT(qty)"),
    same("nd", "COUNT(DISTINCT qty % 20)"),
    Agg("q", "SUM(qty)", "SUM(qty)::BIGINT"),
    same("s", "SUM(amount)"),
    same("p", "AVG(price)"),
    same("lo", "MIN(amount)"),
    same("hi", "MAX(venue)"),
    same("sd", "STDDEV_POP(price)"),
    same("vs", "VAR_SAMP(qty)"),
    *AGGREGATES["first_last"][:2],
]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return trades(160, seed=3)


def test_emit_changes_last_row_per_key_equals_group_by(table: pa.Table) -> None:
    sql = f"SELECT symbol, {select_list(AGGS, 'flow')} FROM t GROUP BY symbol"
    duck = f"SELECT symbol, {select_list(AGGS, 'duck')} FROM t GROUP BY symbol"
    check_differential(sql, table, duck, changes_keys=["symbol"])


def test_emit_final_one_row_per_key(table: pa.Table) -> None:
    sql = f"SELECT symbol, {select_list(AGGS, 'flow')} FROM t GROUP BY symbol EMIT FINAL"
    duck = f"SELECT symbol, {select_list(AGGS, 'duck')} FROM t GROUP BY symbol"
    results = check_differential(sql, table, duck)
    for rows in results.values():
        keys = [r["symbol"] for r in rows]
        assert len(keys) == len(set(keys))


@pytest.mark.parametrize("batch_size", [1, 7, 50])
def test_emit_changes_is_a_changelog_of_prefix_aggregates(batch_size: int, table: pa.Table) -> None:
    """After each batch: one row for every key the batch touched, holding the
    aggregate over all input so far (DuckDB's running aggregates at the key's
    last row in the batch)."""
    table = table.slice(0, 100)
    sql = "SELECT venue, COUNT(*) AS n, SUM(amount) AS s, MAX(price) AS hi FROM t GROUP BY venue"
    running = run_duckdb(
        "SELECT id, venue, COUNT(*) OVER w AS n, SUM(amount) OVER w AS s, MAX(price) OVER w AS hi"
        " FROM t WINDOW w AS (PARTITION BY venue ORDER BY id ROWS UNBOUNDED PRECEDING)",
        {"t": table},
    )
    by_id = {r.pop("id"): r for r in running}
    engine = flowsql.Engine(sql)
    for i, batch in enumerate(table.to_batches(max_chunksize=batch_size)):
        out = [r for b in engine.process(batch) for r in b.to_pylist()]
        last: dict[str, int] = {}
        for row in batch.select(["id", "venue"]).to_pylist():
            last[row["venue"]] = row["id"]
        want = [by_id[row_id] for row_id in last.values()]
        assert_rows(canonical(out), canonical(want), what=f"after batch {i}")
    assert [r for b in engine.flush() for r in b.to_pylist()] == []


@pytest.mark.parametrize(
    ("sql", "duck", "keys"),
    [
        pytest.param(
            "SELECT symbol, venue, COUNT(*) AS n, SUM(price) AS p FROM t GROUP BY symbol, venue",
            "SELECT symbol, venue, COUNT(*) AS n, SUM(price) AS p FROM t GROUP BY ALL",
            ["symbol", "venue"],
            id="two-keys",
        ),
        pytest.param(
            "SELECT qty % 7 AS bucket, COUNT(*) AS n, MIN(price) AS lo FROM t GROUP BY qty % 7",
            "SELECT qty % 7 AS bucket, COUNT(*) AS n, MIN(price) AS lo FROM t GROUP BY ALL",
            ["bucket"],
            id="expression-key",
        ),
        pytest.param(
            "SELECT UPPER(TRIM(venue)) AS v, COUNT(*) AS n FROM t GROUP BY v",
            "SELECT upper(trim(venue)) AS v, COUNT(*) AS n FROM t GROUP BY ALL",
            ["v"],
            id="alias-key",
        ),
        pytest.param(
            "SELECT amount > 10000.00 AS big, SUM(amount) AS s, COUNT(amount) AS n"
            " FROM t GROUP BY 1",
            "SELECT amount > 10000.00 AS big, SUM(amount) AS s, COUNT(amount) AS n"
            " FROM t GROUP BY ALL",
            ["big"],
            id="positional-boolean-key",
        ),
        pytest.param(
            "SELECT COUNT(*) AS n, SUM(amount) AS s, AVG(qty) AS a FROM t",
            "SELECT COUNT(*) AS n, SUM(amount) AS s, AVG(qty) AS a FROM t",
            [],
            id="global",
        ),
    ],
)
def test_group_by_forms(sql: str, duck: str, keys: list[str], table: pa.Table) -> None:
    check_differential(sql, table, duck, changes_keys=keys)


def test_having_without_window_emit_final(table: pa.Table) -> None:
    sql = (
        "SELECT symbol, venue, COUNT(*) AS n, AVG(price) AS p FROM t GROUP BY symbol, venue"
        " HAVING COUNT(*) >= 6 AND AVG(price) < 300 EMIT FINAL"
    )
    duck = (
        "SELECT symbol, venue, COUNT(*) AS n, AVG(price) AS p FROM t GROUP BY ALL"
        " HAVING COUNT(*) >= 6 AND AVG(price) < 300"
    )
    results = check_differential(sql, table, duck)
    assert results[10_000]


def test_emit_changes_row_count_at_batch_size_one(table: pa.Table) -> None:
    """At batch size 1 every record emits exactly one changelog row."""
    rows = run_flowsql("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol", table, 1)
    assert len(rows) == table.num_rows
    seen: dict[str | None, int] = {}
    for r in rows:
        seen[r["symbol"]] = seen.get(r["symbol"], 0) + 1
        assert r["n"] == seen[r["symbol"]]
