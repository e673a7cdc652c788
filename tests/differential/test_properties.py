"""Hypothesis: window assignment and decimal arithmetic against Python models.

- Every record is in exactly the windows ``[s, s + size)`` with ``s`` a
  multiple of ``advance`` (epoch-aligned, also before 1970) that contain it,
  at any batch size; sessions split where the gap is >= the session gap.
- ``a * b``, ``a + b``, ``a - b`` and ``SUM`` of DECIMAL columns equal
  Python's exact ``decimal`` results.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal, localcontext
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowsql

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Much larger than any event-time span drawn here: no record is ever late.
NEVER_LATE = "WITH ('watermark.allowed_lateness' = '1d')"

timestamps = st.lists(st.integers(-20_000, 60_000), min_size=1, max_size=30)
batch_sizes = st.sampled_from([1, 2, 5, 1_000])


@st.composite
def window_shape(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, 7_000))
    advance = draw(st.one_of(st.just(size), st.integers(1, size)))
    return size, advance


def window_model(ts: list[int], size: int, advance: int) -> dict[int, tuple[int, int]]:
    """window start -> (count, sum of ids) by the definition."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for i, t in enumerate(ts):
        s = (t // advance) * advance  # the last start at or before t
        while s > t - size:
            out[s][0] += 1
            out[s][1] += i
            s -= advance
    return {s: (c, ids) for s, (c, ids) in out.items()}


@SETTINGS
@given(ts=timestamps, shape=window_shape(), batch_size=batch_sizes)
def test_window_assignment(ts: list[int], shape: tuple[int, int], batch_size: int) -> None:
    size, advance = shape
    table = pa.table({"id": list(range(len(ts))), "ts": pa.array(ts, pa.int64())})
    window = f"TUMBLING(ts, {size}ms)" if size == advance else f"SLIDING(ts, {size}ms, {advance}ms)"
    sql = (
        "SELECT _window_start, _window_end, COUNT(*) AS c, SUM(id) AS ids"
        f" FROM t WINDOW {window} {NEVER_LATE}"
    )
    rows = flowsql.query(sql, {"t": table}, batch_size=batch_size).to_pylist()
    got = {r["_window_start"]: (r["c"], r["ids"]) for r in rows}
    assert len(got) == len(rows), "one row per window"
    assert all(r["_window_end"] - r["_window_start"] == size for r in rows)
    assert got == window_model(ts, size, advance)


def session_model(keys: list[str], ts: list[int], gap: int) -> set[tuple[Any, ...]]:
    """(key, start, end, count) of every session by the definition."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, t in zip(keys, ts, strict=True):
        by_key[k].append(t)
    out = set()
    for k, times in by_key.items():
        times.sort()
        start, count = times[0], 1
        for prev, t in zip(times, times[1:], strict=False):
            if t - prev >= gap:
                out.add((k, start, prev + gap, count))
                start, count = t, 0
            count += 1
        out.add((k, start, times[-1] + gap, count))
    return out


@SETTINGS
@given(
    data=st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 5_000)), min_size=1, max_size=40
    ),
    gap=st.integers(1, 800),
    batch_size=batch_sizes,
)
def test_session_assignment(data: list[tuple[str, int]], gap: int, batch_size: int) -> None:
    keys, ts = [k for k, _ in data], [t for _, t in data]
    table = pa.table({"k": keys, "ts": pa.array(ts, pa.int64())})
    sql = (
        "SELECT k, _window_start, _window_end, COUNT(*) AS c FROM t GROUP BY k"
        f" WINDOW SESSION(ts, {gap}ms) {NEVER_LATE}"
    )
    rows = flowsql.query(sql, {"t": table}, batch_size=batch_size).to_pylist()
    got = [(r["k"], r["_window_start"], r["_window_end"], r["c"]) for r in rows]
    assert len(got) == len(set(got))
    assert set(got) == session_model(keys, ts, gap)


@st.composite
def decimal_column(draw: st.DrawFn, rows: int) -> tuple[int, int, list[Decimal | None]]:
    precision = draw(st.integers(1, 20))
    scale = draw(st.integers(0, precision))
    limit = 10**precision - 1
    units = st.one_of(st.none(), st.integers(-limit, limit))
    values = [
        None if u is None else Decimal(u).scaleb(-scale)
        for u in draw(st.lists(units, min_size=rows, max_size=rows))
    ]
    return precision, scale, values


@st.composite
def decimal_table(draw: st.DrawFn) -> tuple[pa.Table, list[Decimal | None], list[Decimal | None]]:
    rows = draw(st.integers(1, 12))
    pa_, sa, a = draw(decimal_column(rows))
    pb, sb, b = draw(decimal_column(rows))
    table = pa.table(
        {
            "a": pa.array(a, pa.decimal128(pa_, sa)),
            "b": pa.array(b, pa.decimal128(pb, sb)),
            "ts": pa.array(range(rows), pa.int64()),
        }
    )
    return table, a, b


@SETTINGS
@given(case=decimal_table(), batch_size=st.sampled_from([1, 3, 100]))
def test_decimal_arithmetic_is_exact(
    case: tuple[pa.Table, list[Decimal | None], list[Decimal | None]], batch_size: int
) -> None:
    table, a, b = case
    out = flowsql.query(
        "SELECT a * b AS m, a + b AS s, a - b AS d FROM t", {"t": table}, batch_size=batch_size
    )
    for name in ("m", "s", "d"):
        assert pa.types.is_decimal(out.schema.field(name).type), out.schema
    with localcontext() as ctx:
        ctx.prec = 200
        for row, x, y in zip(out.to_pylist(), a, b, strict=True):
            if x is None or y is None:
                assert row == {"m": None, "s": None, "d": None}
            else:
                assert row == {"m": x * y, "s": x + y, "d": x - y}, (x, y)


@SETTINGS
@given(case=decimal_table(), batch_size=st.sampled_from([1, 4, 100]))
def test_decimal_sum_is_exact(
    case: tuple[pa.Table, list[Decimal | None], list[Decimal | None]], batch_size: int
) -> None:
    table, a, _ = case
    rows = flowsql.query(
        "SELECT SUM(a) AS s, COUNT(a) AS n FROM t EMIT FINAL", {"t": table}, batch_size=batch_size
    ).to_pylist()
    present = [x for x in a if x is not None]
    with localcontext() as ctx:
        ctx.prec = 200
        want = sum(present, Decimal(0)) if present else None
    assert rows == [{"s": want, "n": len(present)}]
