"""Deterministic generated trades for the differential tests.

Columns: ``id`` (arrival position), ``symbol`` (string, some NULL), ``price``
(float64, some NULL), ``qty`` (int64, some NULL), ``amount`` (DECIMAL(10, 2),
some NULL), ``venue`` (string), ``meta`` (a JSON object as text) and ``ts``
(int64 epoch ms, mostly increasing; ``jitter`` lets a record arrive up to that
many ms behind the largest event time before it).
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa

#: 2023-11-14T22:13:20Z: not aligned to a minute, so windows straddle it.
T0 = 1_700_000_000_123
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META")
VENUES = ("XNAS", "XNYS", " arca ", "bats", "IEX")
AMOUNT_TYPE = pa.decimal128(10, 2)


def trades(
    rows: int = 1_500,
    *,
    seed: int = 20240607,
    jitter: int = 40,
    step: int = 12,
    null_rate: float = 0.04,
) -> pa.Table:
    """Trades whose event times advance ``step`` ms on average, each record
    arriving up to ``jitter`` ms behind the max event time before it.

    Event times are unique when ``jitter == 0``; with jitter some repeat.
    """
    rng = np.random.default_rng(seed)
    base = T0 + np.cumsum(rng.integers(0, 2 * step + 1, rows)).astype(np.int64)
    behind = rng.integers(0, jitter + 1, rows) * (rng.random(rows) < 0.3) if jitter else 0
    ts = base - behind
    symbol = rng.choice(np.array(SYMBOLS), rows).astype(object)
    symbol[rng.random(rows) < null_rate] = None
    price = np.round(rng.uniform(5.0, 500.0, rows), 2)
    price[rng.random(rows) < 0.01] = 100.5  # exact halves for ROUND
    qty = rng.integers(1, 1_000, rows)
    cents = rng.integers(-50_000, 5_000_000, rows)
    venue = rng.choice(np.array(VENUES), rows)
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "symbol": pa.array(symbol.tolist(), pa.string()),
            "price": pa.array(price, mask=rng.random(rows) < null_rate),
            "qty": pa.array(qty, pa.int64(), mask=rng.random(rows) < null_rate),
            "amount": pa.array(
                [Decimal(int(c)).scaleb(-2) for c in cents],
                AMOUNT_TYPE,
                mask=rng.random(rows) < null_rate,
            ),
            "venue": pa.array(venue.tolist(), pa.string()),
            "meta": pa.array(
                [
                    f'{{"side": "{"buy" if c % 2 else "sell"}", "lots": [{int(q) % 7}, {int(q) % 5}]}}'
                    for c, q in zip(cents, qty, strict=True)
                ],
                pa.string(),
            ),
            "ts": pa.array(ts, pa.int64()),
        }
    )


def sorted_by_time(table: pa.Table) -> pa.Table:
    """The table in (ts, id) order with ``id`` renumbered to the new arrival order."""
    ordered = table.sort_by([("ts", "ascending"), ("id", "ascending")])
    return ordered.set_column(0, "id", pa.array(np.arange(ordered.num_rows, dtype=np.int64)))


def out_of_order(rows: int = 1_200, *, seed: int = 99, late_share: float = 0.08) -> pa.Table:
    """Trades where ``late_share`` of the records arrive 0.2-3 s behind: many of
    them fall into windows that already closed."""
    table = trades(rows, seed=seed, jitter=0, step=10)
    rng = np.random.default_rng(seed + 1)
    ts = table.column("ts").to_numpy()
    late = rng.random(rows) < late_share
    ts = ts - late * rng.integers(200, 3_000, rows)
    return table.set_column(table.schema.get_field_index("ts"), "ts", pa.array(ts, pa.int64()))
