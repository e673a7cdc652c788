"""Run a query through flowsql at several batch sizes and through DuckDB, and
compare the rows.

Rows are compared as dicts keyed by column name, in a canonical order (sorted
by their values) unless a test asks for the emitted order. Floats match
within a relative tolerance; decimals, integers and strings match exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

import flowsql

#: Every differential case runs at these batch sizes.
BATCH_SIZES = (1, 7, 10_000)
#: ...and on V2 with this many partitions at batch size ``V2_BATCH``: its rows
#: must be V1's, in V1's order, to the bit.
V2_PARTITIONS = 3
V2_BATCH = 7
REL_TOL = 1e-9
ABS_TOL = 1e-9

Row = dict[str, Any]


def run_flowsql(sql: str, table: pa.Table, batch_size: int, name: str = "t") -> list[Row]:
    """All rows ``flowsql.query`` emits, in emitted order."""
    return flowsql.query(sql, {name: table}, batch_size=batch_size).to_pylist()


def run_v2(
    sql: str, table: pa.Table, batch_size: int, partitions: int = V2_PARTITIONS
) -> list[Row]:
    """All rows of ``sql`` on the partitioned processor (V2), in emitted order."""
    from flowsql.runtime.coordinator import PartitionedJobCoordinator

    v2 = PartitionedJobCoordinator(flowsql.Engine(sql).statement, num_partitions=partitions)
    return run_processor(v2, table, batch_size)


def run_processor(processor: Any, table: pa.Table, batch_size: int) -> list[Row]:
    """All rows a job processor (V1 or V2) emits for ``table`` fed ``batch_size``
    rows at a time, then flushed; the processor is closed."""
    out: list[pa.RecordBatch] = []
    try:
        for batch in table.to_batches(max_chunksize=batch_size):
            out += processor.process_batch(batch)
            if processor.done:
                break
        out += processor.flush()
    finally:
        processor.close()
    return [r for b in out for r in b.to_pylist()]


def run_engine(sql: str, table: pa.Table, batch_size: int) -> tuple[list[Row], flowsql.Engine]:
    """Rows from an ``Engine`` fed ``batch_size`` rows at a time, and the engine."""
    engine = flowsql.Engine(sql)
    out: list[pa.RecordBatch] = []
    for batch in table.to_batches(max_chunksize=batch_size):
        out += engine.process(batch)
    out += engine.flush()
    return [r for b in out for r in b.to_pylist()], engine


def run_duckdb(sql: str, tables: dict[str, pa.Table]) -> list[Row]:
    """Rows of ``sql`` in DuckDB over the given Arrow tables."""
    con = duckdb.connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()


def sort_key(value: Any) -> tuple[Any, ...]:
    """A total order over row values (None first, then by type name, then value)."""
    if value is None:
        return (0, "", 0)
    if isinstance(value, float) and math.isnan(value):
        return (1, "nan", 0)
    if isinstance(value, bool | int | float | Decimal):
        return (1, "number", value)
    return (2, type(value).__name__, value)


def canonical(rows: Iterable[Row], columns: Sequence[str] | None = None) -> list[Row]:
    """Rows restricted to ``columns`` (all when None), sorted by their values."""
    picked = [dict(r) if columns is None else {c: r[c] for c in columns} for r in rows]
    return sorted(picked, key=lambda r: [sort_key(r[c]) for c in sorted(r)])


def values_match(got: Any, want: Any, rel: float = REL_TOL, abs_: float = ABS_TOL) -> bool:
    """One value: floats within tolerance (NaN matches NaN), decimals exact."""
    if got is None or want is None:
        return got is None and want is None
    if isinstance(want, float) or isinstance(got, float):
        if not (isinstance(got, float) and isinstance(want, float)):
            return False  # a float where an exact value was expected, or the reverse
        if math.isnan(got) or math.isnan(want):
            return math.isnan(got) and math.isnan(want)
        return math.isclose(got, want, rel_tol=rel, abs_tol=abs_)
    if isinstance(want, Decimal) or isinstance(got, Decimal):
        return isinstance(got, Decimal) and isinstance(want, Decimal) and got == want
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    return bool(got == want)


def first_mismatch(
    got: list[Row], want: list[Row], rel: float = REL_TOL, abs_: float = ABS_TOL
) -> str | None:
    """A description of the first difference between two row lists, or None."""
    if len(got) != len(want):
        extra = _difference(got, want)
        return f"{len(got)} rows, expected {len(want)}; e.g. {extra}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if set(g) != set(w):
            return f"row {i}: columns {sorted(g)} != expected {sorted(w)}"
        for col in w:
            if not values_match(g[col], w[col], rel, abs_):
                return f"row {i} column {col!r}: got {g[col]!r}, expected {w[col]!r}\n got {g}\nwant {w}"
    return None


def _difference(got: list[Row], want: list[Row]) -> str:
    g = {repr(r) for r in got}
    w = {repr(r) for r in want}
    missing = sorted(w - g)[:3]
    unexpected = sorted(g - w)[:3]
    return f"missing {missing}, unexpected {unexpected}"


def assert_rows(
    got: list[Row], want: list[Row], *, what: str = "", rel: float = REL_TOL, abs_: float = ABS_TOL
) -> None:
    """Assert two row lists match (same order), with a readable message."""
    problem = first_mismatch(got, want, rel, abs_)
    assert problem is None, f"{what}: {problem}"


def assert_same_across_batch_sizes(
    results: dict[int, list[Row]], *, ordered: bool = False, rel: float = 0.0
) -> None:
    """Every batch size gave the same rows (exactly, unless ``rel`` > 0)."""
    sizes = sorted(results)
    base = results[sizes[0]] if ordered else canonical(results[sizes[0]])
    for size in sizes[1:]:
        other = results[size] if ordered else canonical(results[size])
        assert_rows(
            other,
            base,
            what=f"batch size {size} vs batch size {sizes[0]}",
            rel=rel,
            abs_=0.0 if rel == 0 else ABS_TOL,
        )


def last_per_key(rows: list[Row], keys: Sequence[str]) -> list[Row]:
    """The last row emitted for each key (the current value of an EMIT CHANGES query)."""
    last: dict[tuple[Any, ...], Row] = {}
    for r in rows:
        last[tuple(r[k] for k in keys)] = r
    return list(last.values())


def check_differential(
    sql: str,
    table: pa.Table,
    duck_sql: str,
    *,
    columns: Sequence[str] | None = None,
    ordered: bool = False,
    changes_keys: Sequence[str] | None = None,
    batch_rel: float = 0.0,
    duck_tables: dict[str, pa.Table] | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict[int, list[Row]]:
    """Run ``sql`` at every batch size and ``duck_sql`` in DuckDB; assert they
    agree, and that V2 gives V1's rows exactly.

    Args:
        columns: compare only these columns (default: all DuckDB's columns,
            which must be exactly flowsql's).
        ordered: compare in emitted order instead of canonical order.
        changes_keys: EMIT CHANGES output: compare the last row per key.
        batch_rel: float tolerance between batch sizes (0 = bit for bit).
    """
    results = {bs: run_flowsql(sql, table, bs) for bs in batch_sizes}
    if V2_BATCH in results:  # V2 gives V1's rows, in V1's order
        what = f"V2({V2_PARTITIONS}) vs V1 at batch size {V2_BATCH}\n{sql}"
        assert_rows(run_v2(sql, table, V2_BATCH), results[V2_BATCH], what=what, rel=0.0, abs_=0.0)
    if changes_keys is not None:
        results = {bs: last_per_key(rows, changes_keys) for bs, rows in results.items()}
    want = run_duckdb(duck_sql, duck_tables or {"t": table})
    cols = list(columns) if columns is not None else (list(want[0]) if want else None)
    for bs, rows in results.items():
        if columns is None and rows and want:
            assert list(rows[0]) == list(want[0]), f"batch size {bs}: output columns differ"
        got = [{c: r[c] for c in cols} for r in rows] if cols else rows
        expected = [{c: r[c] for c in cols} for r in want] if cols else want
        if not ordered:
            got, expected = canonical(got), canonical(expected)
        assert_rows(got, expected, what=f"batch size {bs} vs DuckDB\n{sql}")
    assert_same_across_batch_sizes(results, ordered=ordered, rel=batch_rel)
    return results
