"""The differential query set: flowsql SQL and the DuckDB SQL that computes the
same rows.

Window bounds in DuckDB come from the definition (DESIGN.md §4): tumbling
``start = ts // size * size``; sliding windows ``[k*advance, k*advance + size)``
for every k with ``start <= ts < start + size`` (generated with ``unnest(range(...))``);
sessions per key split where the gap to the previous event is >= gap, with
``end = last event + gap``.

FIRST/LAST pick the non-null value with the smallest/largest event time, ties
to the first/last arrival: DuckDB's ``arg_min``/``arg_max`` over the key
``(ts - T0) * 100000 + id`` (``id`` is the arrival position).
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import T0

#: Allowed lateness used with the jittered data: above its jitter, so no record is late.
LATENESS = "WITH ('watermark.allowed_lateness' = '100ms')"
ORDER_KEY = f"((ts - {T0}) * 100000 + id)"


@dataclass(frozen=True)
class Agg:
    """One aggregate: its flowsql spelling and its DuckDB spelling."""

    name: str
    flow: str
    duck: str


def first_last(fn: str, col: str) -> Agg:
    duck_fn = "arg_min" if fn == "FIRST" else "arg_max"
    return Agg(
        f"{fn.lower()}_{col}",
        f"{fn}({col})",
        f"{duck_fn}({col}, {ORDER_KEY}) FILTER (WHERE {col} IS NOT NULL)",
    )


def same(name: str, expr: str) -> Agg:
    return Agg(name, expr, expr)


#: Aggregates by family; each family is one query (fewer runs at batch size 1).
AGGREGATES: dict[str, list[Agg]] = {
    "counts": [
        same("n", "COUNT(*)"),
        same("n_price", "COUNT(price)"),
        same("n_amount", "COUNT(amount)"),
        same("nd_bucket", "COUNT(DISTINCT qty % 50)"),
        same("nd_venue", "COUNT(DISTINCT venue)"),
        same("nd_amount", "COUNT(DISTINCT amount)"),
    ],
    "sums": [
        Agg("sum_qty", "SUM(qty)", "SUM(qty)::BIGINT"),
        same("sum_price", "SUM(price)"),
        same("sum_amount", "SUM(amount)"),
        same("avg_qty", "AVG(qty)"),
        same("avg_price", "AVG(price)"),
    ],
    "extremes": [
        same("min_price", "MIN(price)"),
        same("max_price", "MAX(price)"),
        same("min_qty", "MIN(qty)"),
        same("max_qty", "MAX(qty)"),
        same("min_amount", "MIN(amount)"),
        same("max_amount", "MAX(amount)"),
        same("min_venue", "MIN(venue)"),
        same("max_venue", "MAX(venue)"),
    ],
    "spread": [
        Agg("stddev", "STDDEV(price)", "stddev_samp(price)"),
        same("stddev_samp", "STDDEV_SAMP(price)"),
        same("stddev_pop", "STDDEV_POP(price)"),
        Agg("variance", "VARIANCE(price)", "var_samp(price)"),
        same("var_samp", "VAR_SAMP(price)"),
        same("var_pop", "VAR_POP(price)"),
        same("var_qty", "VAR_SAMP(qty)"),
        same("sd_amount", "STDDEV_POP(amount)"),
    ],
    "first_last": [
        first_last("FIRST", "price"),
        first_last("LAST", "price"),
        first_last("FIRST", "venue"),
        first_last("LAST", "venue"),
        first_last("FIRST", "amount"),
        first_last("LAST", "qty"),
    ],
}


def select_list(aggs: list[Agg], dialect: str) -> str:
    return ", ".join(f"{a.flow if dialect == 'flow' else a.duck} AS {a.name}" for a in aggs)


# -- window expressions for DuckDB ---------------------------------------------------


def tumbling_duck(aggs: str, size: int, keys: str = "symbol", where: str = "") -> str:
    key_list = f"{keys}, " if keys else ""
    return (
        f"SELECT {key_list}ts // {size} * {size} AS _window_start,"
        f" ts // {size} * {size} + {size} AS _window_end, {aggs}"
        f" FROM t {where} GROUP BY ALL"
    )


def sliding_duck(aggs: str, size: int, advance: int, keys: str = "symbol") -> str:
    key_list = f"{keys}, " if keys else ""
    return (
        f"WITH w AS (SELECT *, unnest(range((ts - {size}) // {advance} + 1,"
        f" ts // {advance} + 1)) AS k FROM t)"
        f" SELECT {key_list}k * {advance} AS _window_start,"
        f" k * {advance} + {size} AS _window_end, {aggs} FROM w GROUP BY ALL"
    )


def session_duck(aggs: str, gap: int, keys: str = "symbol") -> str:
    part = f"PARTITION BY {keys}" if keys else ""
    key_list = f"{keys}, " if keys else ""
    return (
        "WITH o AS (SELECT *, CASE WHEN ts - lag(ts) OVER"
        f" ({part} ORDER BY ts, id) < {gap} THEN 0 ELSE 1 END AS brk FROM t),"
        f" s AS (SELECT *, sum(brk) OVER ({part} ORDER BY ts, id"
        " ROWS UNBOUNDED PRECEDING) AS sid FROM o)"
        f" SELECT {key_list}min(ts) AS _window_start, max(ts) + {gap} AS _window_end, {aggs}"
        f" FROM s GROUP BY {key_list}sid"
    )
