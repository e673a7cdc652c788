"""Deterministic synthetic data: trades (the demo), orders, market data, sensor readings.

Every kind is generated vectorized, a fixed-size block at a time; block ``b`` is
drawn from ``numpy.random.default_rng([seed, b])``, so the rows depend on the seed
only, never on the batch size. Event time advances at ``rate`` events per second
from ``start`` (epoch ms, default 2024-01-01T00:00:00Z) and is in both the
``timestamp`` column and the ``_timestamp`` system column.

Kinds and their columns:

- ``trades``: symbol (dictionary<int32, string>), price float64, quantity int64,
  timestamp int64.
- ``orders``: order_id int64, customer_id int64, product_id int64, quantity int64,
  total_amount float64, timestamp int64.
- ``market_data``: symbol, price, bid, ask float64, volume int64, timestamp int64.
- ``readings``: station (dictionary; 413 stations by default), temp float64,
  timestamp int64.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from flowsql.errors import ConfigError
from flowsql.plan import options
from flowsql.plan.options import Option
from flowsql.records import TIMESTAMP

log = logging.getLogger(__name__)

#: Rows per batch when neither the caller nor WITH says.
DEFAULT_BATCH_SIZE = 10_000
#: Rows drawn per block. Fixed, so the data does not depend on the batch size.
BLOCK = 100_000
#: Price/temperature levels per key; values are looked up, not computed, per row.
LEVELS = 1024

Columns = dict[str, pa.Array]


@dataclass(frozen=True)
class GeneratorOptions:
    """What to generate (:func:`make_generator` fills it from the generator's keys,
    declared with their defaults in :mod:`flowsql.plan.options`).

    Args:
        records: number of records; None = unbounded.
        symbols: distinct keys (symbols, stations or customers, by kind); None =
            the kind's default (100 symbols, 413 stations, 10,000 customers).
        rate: events per second of event time.
        seed: random seed.
        batch_size: rows per emitted batch.
        start_ms: event time of the first record (epoch ms).
    """

    records: int | None
    symbols: int | None
    rate: float
    seed: int
    batch_size: int
    start_ms: int

    def __post_init__(self) -> None:
        if self.records is not None and self.records < 0:
            raise ConfigError("records", self.records, "a count >= 0")
        if self.rate <= 0:
            raise ConfigError("rate", self.rate, "events per second > 0")
        if self.batch_size <= 0:
            raise ConfigError("batch_size", self.batch_size, "a row count > 0")
        if self.symbols is not None and not 0 < self.symbols < 1 << 31:
            raise ConfigError("symbols", self.symbols, "a count between 1 and 2**31-1")


class Lanes:
    """Random bits of one block: one raw 64-bit word per row, read as 16/32-bit lanes."""

    def __init__(self, bits: np.random.BitGenerator, n: int) -> None:
        self.raw = np.asarray(bits.random_raw(n), dtype=np.uint64)
        self.n = n

    def u16(self, lane: int) -> np.ndarray:
        """Lane 0-3 as uint16 (a strided view, no copy)."""
        return self.raw.view(np.uint16).reshape(self.n, 4)[:, lane]

    def below(self, count: int, lane: int = 0) -> np.ndarray:
        """Uniform int32 codes in ``[0, count)`` from 32-bit lane 0 or 1."""
        u32 = self.raw.view(np.uint32).reshape(self.n, 2)[:, lane]
        return ((u32.astype(np.uint64) * np.uint64(count)) >> np.uint64(32)).astype(np.int32)


class KeyedValues:
    """Per-key values with noise: ``round(center[key] + dev, decimals)``, or
    ``round(center[key] * (1 + dev), decimals)`` when ``relative``.

    ``dev`` is one of :data:`LEVELS` fixed deviations picked by a 10-bit lane.
    For few keys the rounded results are tabulated, so a row costs one gather.
    """

    def __init__(
        self, center: np.ndarray, devs: np.ndarray, decimals: int, *, relative: bool = False
    ) -> None:
        self.center, self.decimals, self.relative = center, decimals, relative
        self.devs = 1.0 + devs if relative else devs
        self.table: np.ndarray | None = None
        if len(center) * LEVELS <= 1 << 18:
            self.table = self._combine(center[:, None], self.devs[None, :]).ravel()

    def pick(self, codes: np.ndarray, lane: np.ndarray) -> np.ndarray:
        level = (lane >> 6).astype(np.int32)  # 16 bits -> 10 bits = LEVELS
        if self.table is not None:
            return self.table[(codes << 10) | level]
        return self._combine(self.center[codes], self.devs[level])

    def _combine(self, center: np.ndarray, devs: np.ndarray) -> np.ndarray:
        scale = 10.0**self.decimals
        x = center * devs if self.relative else center + devs
        return np.asarray(np.rint(x * scale) / scale)


def key_names(prefix: str, count: int) -> pa.Array:
    """``count`` names like ``SYM000`` (zero-padded to at least 3 digits)."""
    width = max(3, len(str(count - 1)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(count)], pa.string())


def _dictionary(codes: np.ndarray, names: pa.Array) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes), names, safe=False)


class Kind:
    """One kind of data: fixed tables built once, then ``columns`` per block."""

    default_keys = 100

    def __init__(self, opts: GeneratorOptions) -> None:
        self.opts = opts
        self.keys = opts.symbols or self.default_keys
        self.setup = np.random.default_rng([opts.seed, 1 << 30])

    def columns(self, lanes: Lanes, first: int) -> Columns:
        raise NotImplementedError

    def deviations(self, scale: float) -> np.ndarray:
        """:data:`LEVELS` sorted normal deviations with standard deviation ``scale``."""
        return np.sort(self.setup.normal(0.0, scale, LEVELS))


class Trades(Kind):
    """symbol, price, quantity."""

    def __init__(self, opts: GeneratorOptions) -> None:
        super().__init__(opts)
        center = np.round(self.setup.uniform(10.0, 500.0, self.keys), 2)
        self.prices = KeyedValues(center, self.deviations(0.01), 2, relative=True)
        self.names = key_names("SYM", self.keys)
        self.quantities = self.setup.integers(1, 1000, LEVELS).astype(np.int64)

    def columns(self, lanes: Lanes, first: int) -> Columns:
        codes = lanes.below(self.keys)
        return {
            "symbol": _dictionary(codes, self.names),
            "price": pa.array(self.prices.pick(codes, lanes.u16(2))),
            "quantity": pa.array(self.quantities[lanes.u16(3) >> 6]),
        }


class MarketData(Trades):
    """symbol, price, bid, ask, volume."""

    def __init__(self, opts: GeneratorOptions) -> None:
        super().__init__(opts)
        self.spreads = np.round(self.setup.uniform(0.01, 0.10, LEVELS), 2)

    def columns(self, lanes: Lanes, first: int) -> Columns:
        codes = lanes.below(self.keys)
        price = self.prices.pick(codes, lanes.u16(2))
        half = self.spreads[lanes.u16(3) >> 6]
        return {
            "symbol": _dictionary(codes, self.names),
            "price": pa.array(price),
            "bid": pa.array(np.round(price - half, 2)),
            "ask": pa.array(np.round(price + half, 2)),
            "volume": pa.array(self.quantities[lanes.u16(2) >> 6] * 10),
        }


class Orders(Kind):
    """order_id (1, 2, ...), customer_id, product_id, quantity, total_amount."""

    default_keys = 10_000

    def __init__(self, opts: GeneratorOptions) -> None:
        super().__init__(opts)
        self.amounts = np.round(self.setup.lognormal(3.8, 0.8, LEVELS), 2)
        self.quantities = self.setup.integers(1, 10, LEVELS).astype(np.int64)

    def columns(self, lanes: Lanes, first: int) -> Columns:
        quantity = self.quantities[lanes.u16(2) >> 6]
        amount = np.round(self.amounts[lanes.u16(3) >> 6] * quantity / 2.0, 2)
        return {
            "order_id": pa.array(np.arange(first + 1, first + lanes.n + 1, dtype=np.int64)),
            "customer_id": pa.array(lanes.below(self.keys).astype(np.int64) + 1),
            "product_id": pa.array(lanes.below(1000, lane=1).astype(np.int64) + 1),
            "quantity": pa.array(quantity),
            "total_amount": pa.array(amount),
        }


class Readings(Kind):
    """station (413 by default), temp (one decimal)."""

    default_keys = 413

    def __init__(self, opts: GeneratorOptions) -> None:
        super().__init__(opts)
        center = self.setup.uniform(-10.0, 30.0, self.keys)
        self.temps = KeyedValues(center, self.deviations(10.0), 1)
        self.names = key_names("station_", self.keys)

    def columns(self, lanes: Lanes, first: int) -> Columns:
        codes = lanes.below(self.keys)
        return {
            "station": _dictionary(codes, self.names),
            "temp": pa.array(self.temps.pick(codes, lanes.u16(2))),
        }


KINDS: dict[str, type[Kind]] = {
    "trades": Trades,
    "orders": Orders,
    "market_data": MarketData,
    "readings": Readings,
}


class GeneratorSource:
    """A bounded (or unbounded) stream of synthetic records of one kind.

    Args:
        kind: one of :data:`KINDS`.
        options: what to generate.
        name: the input name (FROM name) this source feeds.
    """

    def __init__(self, kind: str, options: GeneratorOptions, *, name: str = "") -> None:
        if kind not in KINDS:
            raise ConfigError("generator kind", kind, sorted(KINDS))
        self.kind = kind
        self.options = options
        self.name = name or kind
        self.dead_lettered = 0

    @property
    def schema(self) -> pa.Schema:
        """The schema of every batch."""
        return next(self._blocks(1)).schema

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield batches of ``batch_size`` rows until ``records`` are produced."""
        size = self.options.batch_size
        pending: list[pa.RecordBatch] = []
        held = 0
        for block in self._blocks(self.options.records):
            pending.append(block)
            held += block.num_rows
            while held >= size:
                out, pending, held = _take(pending, size)
                yield out
        if held:
            yield pa.concat_batches(pending) if len(pending) > 1 else pending[0]

    def close(self) -> None:
        return None

    def _blocks(self, total: int | None) -> Iterator[pa.RecordBatch]:
        opts = self.options
        kind = KINDS[self.kind](opts)
        bits = np.random.SFC64(opts.seed)
        clock = Clock(opts.rate, opts.start_ms)
        first = 0
        while total is None or first < total:
            n = BLOCK if total is None else min(BLOCK, total - first)
            columns = kind.columns(Lanes(bits, n), first)
            ts = pa.array(clock.times(first, n))
            columns["timestamp"] = ts
            columns[TIMESTAMP] = ts
            yield pa.RecordBatch.from_pydict(columns)
            first += n


class Clock:
    """Event time (epoch ms) of record ``i``: ``start_ms + floor(i * 1000 / rate)``."""

    def __init__(self, rate: float, start_ms: int) -> None:
        self.rate, self.start_ms = rate, start_ms
        self._pattern: np.ndarray | None = None
        if rate.is_integer() and (BLOCK * 1000) % int(rate) == 0:
            # Every block repeats the first one's offsets, shifted.
            self._pattern = self._compute(0, BLOCK) - start_ms

    def times(self, first: int, n: int) -> np.ndarray:
        if self._pattern is not None and first % BLOCK == 0:
            shift = self.start_ms + (first * 1000) // int(self.rate)
            return self._pattern[:n] + shift
        return self._compute(first, n)

    def _compute(self, first: int, n: int) -> np.ndarray:
        seq = np.arange(first, first + n, dtype=np.int64)
        if self.rate.is_integer():
            return self.start_ms + (seq * 1000) // int(self.rate)
        return self.start_ms + np.floor(seq * (1000.0 / self.rate)).astype(np.int64)


def _take(
    pending: list[pa.RecordBatch], size: int
) -> tuple[pa.RecordBatch, list[pa.RecordBatch], int]:
    """Cut ``size`` rows off the front of ``pending``; return them and the rest."""
    head = pending[0]
    if head.num_rows >= size:
        rest = [head.slice(size)] if head.num_rows > size else []
        rest += pending[1:]
        return head.slice(0, size), rest, sum(b.num_rows for b in rest)
    parts: list[pa.RecordBatch] = []
    need = size
    while need:
        b = pending.pop(0)
        parts.append(b.slice(0, need))
        if b.num_rows > need:
            pending.insert(0, b.slice(need))
        need -= min(need, b.num_rows)
    return pa.concat_batches(parts), pending, sum(b.num_rows for b in pending)


#: The generator's keys (its ``WITH`` keys without ``'<stream>.'``, declared in
#: :mod:`flowsql.plan.options`) and the :class:`GeneratorOptions` field each sets;
#: ``kind`` is :func:`make_generator`'s first argument.
FIELDS: dict[Option, str] = {
    options.GENERATOR_RECORDS: "records",
    options.GENERATOR_SYMBOLS: "symbols",
    options.GENERATOR_RATE: "rate",
    options.GENERATOR_SEED: "seed",
    options.GENERATOR_BATCH: "batch_size",
    options.GENERATOR_START: "start_ms",
    options.GENERATOR_START_MS: "start_ms",
}
_BY_SPELLING = {spelling: option for option in FIELDS for spelling in option.spellings}
_UNBOUNDED = ("unbounded", "none", "inf")


def make_generator(kind: str = "trades", *, name: str = "", **opts: Any) -> GeneratorSource:
    """Build a generator source from loose options (strings allowed, as in SQL WITH).

    Args:
        kind: trades | orders | market_data | readings.
        name: the input name it feeds (default: the kind).
        **opts: the generator's keys (:data:`FIELDS`; aliases such as ``keys``
            and ``batch.size`` too): ``records`` (None or "unbounded" = no end),
            ``symbols``, ``rate``, ``seed``, ``batch_size``, ``start`` (ISO-8601
            or epoch ms) or ``start_ms``. A key not given takes its declared
            default; ``batch_size`` defaults to :data:`DEFAULT_BATCH_SIZE`.

    Raises:
        ConfigError: an unknown key, or a value that is not allowed, named
            ``'<name>.<key>'`` as given.
    """
    values: dict[str, Any] = {}
    for key, value in opts.items():
        option = _BY_SPELLING.get(key)
        if option is None:
            known = sorted(o.name for o in FIELDS)
            raise ConfigError(f"generator option '{key}'", value, known)
        values[FIELDS[option]] = _value(option, value, f"{name or kind}.{key}")
    for option, field in FIELDS.items():
        if field not in values and option.default is not None:
            values[field] = _value(option, option.default, option.name)
    values.setdefault("symbols", None)
    values.setdefault("batch_size", DEFAULT_BATCH_SIZE)
    return GeneratorSource(kind, GeneratorOptions(**values), name=name)


def _value(option: Option, value: Any, key: str) -> Any:
    """The typed value of one generator key (None stays None)."""
    if value is None:
        return None
    if option is options.GENERATOR_START:
        return _parse_start(value, key)
    text = str(value).strip().replace("_", "")
    if option.kind == "int":
        return option.parse(text, key)
    try:
        if option is options.GENERATOR_RECORDS:
            return None if text.lower() in _UNBOUNDED else int(text)
        return float(text)  # rate
    except ValueError:
        raise ConfigError(key, value, "a number") from None


def _parse_start(value: Any, key: str) -> int:
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(key, value, "epoch ms or ISO-8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


#: 2024-01-01T00:00:00Z in epoch ms: the declared default of ``start``.
DEFAULT_START_MS = _parse_start(options.GENERATOR_START.default, options.GENERATOR_START.name)
