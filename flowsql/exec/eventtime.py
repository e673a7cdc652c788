"""Event-time normalisation: every batch entering the engine gets an int64
``_timestamp`` column (epoch ms) taken from the query's event-time column.

Integers are epoch ms; Arrow timestamps and ISO-8601 strings are converted.
Rows whose event time is missing or cannot be converted are removed from the
batch and returned as dead letters, so bad input never stops a job.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError
from flowsql.plan import nodes as n
from flowsql.plan.routing import FALLBACK_EVENT_TIME
from flowsql.records import SYSTEM_COLUMNS, TIMESTAMP, DeadLetter

#: Per row, the watermark base before it: the max event time of all rows before
#: it in the whole input, or with several input partitions the minimum over
#: them (``flowsql.exec.watermarks``); added to out-of-order (and partitioned)
#: batches of windowed queries so late-record decisions do not depend on batch
#: size, on filters before the aggregate, on V2 partitioning or on how the
#: input partitions are interleaved.
PRIOR_MAX_EVENT_TIME = "__prior_max_event_time"

#: Column names used as event time when nothing is configured, in order.
FALLBACK_COLUMNS = FALLBACK_EVENT_TIME


class EventTimeAssigner:
    """Computes ``_timestamp`` for each batch.

    Args:
        column: the configured event-time column, or None for "``_timestamp``
            if present, else one of :data:`FALLBACK_COLUMNS`, else ingestion time".
        source: input name used in dead letters.
    """

    def __init__(self, column: str | None = None, source: str = "") -> None:
        self.column = column
        self.source = source

    def resolve(self, schema: pa.Schema) -> str | None:
        """The column this batch's event time comes from (None = ingestion time)."""
        names = set(schema.names)
        if self.column is not None:
            return self.column
        if TIMESTAMP in names:
            return TIMESTAMP
        return next((c for c in FALLBACK_COLUMNS if c in names), None)

    def assign(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        """Return the batch with an int64 ``_timestamp`` and the rows that had none."""
        column = self.resolve(batch.schema)
        if column is None:
            now = int(time.time() * 1000)
            ts: pa.Array = pa.array(np.full(batch.num_rows, now, dtype=np.int64))
            return _set_column(batch, ts), []
        if column not in batch.schema.names:
            raise ExecutionError(
                f"event-time column '{column}' is not in input '{self.source}'"
                f" (columns: {', '.join(batch.schema.names)})"
            )
        raw = batch.column(column)
        ts, bad_error = to_epoch_ms(raw)
        if ts.null_count == 0:
            return _set_column(batch, ts), []
        bad = ts.is_null()
        good = pc.invert(bad)
        bad_rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        letters = [
            DeadLetter(
                f"event-time column '{column}': {bad_error or 'missing value'}"
                f" (got {raw[int(i)].as_py()!r})",
                _row_json(batch, int(i)),
                self.source,
                _position(batch, int(i)),
            )
            for i in bad_rows  # only the bad rows: the good path stays vectorized
        ]
        kept = _set_column(batch, ts).filter(good)
        return kept, letters


def in_order(ts: np.ndarray, before: int | None) -> bool:
    """True when no row of the batch is older than any row before it: then no
    row can be late and each operator can tell so on its own (no stamp)."""
    if before is not None and ts[0] < before:
        return False
    return bool(np.all(ts[1:] >= ts[:-1]))


def prior_max(ts: np.ndarray, before: int | None) -> np.ndarray:
    """For each row, the max event time of all rows before it (``before`` = the
    max of earlier batches); the first row of the input gets its own time."""
    running = np.maximum.accumulate(ts)
    out = np.empty_like(ts)
    out[0] = ts[0] if before is None else before
    out[1:] = running[:-1]
    if before is not None:
        np.maximum(out, before, out=out)
    return out


def has_windowed_aggregate(plan: n.Node) -> bool:
    """True when the plan holds a windowed aggregate (the only late-aware operator)."""
    return any(isinstance(x, n.Aggregate) and x.window for x in n.walk(plan))


def allowed_lateness(plan: n.Node) -> int:
    """The allowed lateness (ms) of the plan's windowed aggregate, 0 without one."""
    for node in n.walk(plan):
        if isinstance(node, n.Aggregate) and node.window is not None:
            return node.allowed_lateness_ms
    return 0


def to_epoch_ms(arr: pa.Array) -> tuple[pa.Array, str]:
    """Convert an event-time column to int64 epoch ms; unconvertible values -> null."""
    t = arr.type
    if pa.types.is_integer(t):
        return arr.cast(pa.int64()), ""
    if pa.types.is_floating(t):
        return pc.floor(arr).cast(pa.int64(), safe=False), ""
    if pa.types.is_timestamp(t):
        if t.tz is None:
            return arr.cast(pa.timestamp("ms")).cast(pa.int64()), ""
        return arr.cast(pa.timestamp("ms", t.tz)).cast(pa.int64()), ""
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("ms")).cast(pa.int64()), ""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _parse_strings(arr)
    if pa.types.is_dictionary(t):
        return to_epoch_ms(arr.dictionary_decode())
    nulls = pa.nulls(len(arr), pa.int64())
    return nulls, f"type {t} cannot be an event time (need integer ms, timestamp or ISO string)"


def _parse_strings(arr: pa.Array) -> tuple[pa.Array, str]:
    # Integers in strings are epoch ms; otherwise ISO-8601.
    as_int = pc.cast(pc.if_else(pc.match_substring_regex(arr, r"^-?\d+$"), arr, None), pa.int64())
    out = []
    for fmt_arr in (as_int, _iso(arr)):
        out.append(fmt_arr)
    merged = pc.coalesce(*out)
    return merged, "not an epoch-ms integer or ISO-8601 timestamp"


_ZONE = r"(Z|z|[+-]\d{2}:?\d{2})$"


def _iso(arr: pa.Array) -> pa.Array:
    """ISO-8601 strings -> epoch ms; values with a zone offset (``Z``, ``+02:00``)
    are converted to UTC, values without one are taken as UTC wall time."""
    zoned = pc.match_substring_regex(arr, _ZONE)
    with_zone = _cast_ms(pc.if_else(zoned, arr, None), pa.timestamp("ms", "UTC"))
    without_zone = _cast_ms(pc.if_else(pc.invert(zoned), arr, None), pa.timestamp("ms"))
    return pc.coalesce(with_zone, without_zone)


def _cast_ms(arr: pa.Array, to: pa.DataType) -> pa.Array:
    try:
        return pc.cast(arr, to).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Value-wise fallback, only for batches holding unparseable strings.
    return pa.array([_scalar_ms(v, to) for v in arr.to_pylist()], pa.int64())


def _scalar_ms(value: str | None, to: pa.DataType) -> int | None:
    if value is None:
        return None
    try:
        return pa.scalar(value).cast(to).cast(pa.int64()).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _set_column(batch: pa.RecordBatch, ts: pa.Array) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(TIMESTAMP)
    if idx >= 0:
        return batch.set_column(idx, TIMESTAMP, ts)
    return batch.append_column(TIMESTAMP, ts)


def _row_json(batch: pa.RecordBatch, i: int) -> str:
    row = batch.slice(i, 1).to_pylist()[0]
    return json.dumps({k: v for k, v in row.items() if k not in SYSTEM_COLUMNS}, default=str)


def _position(batch: pa.RecordBatch, i: int) -> str:
    """Kafka: ``partition P offset O``; files: ``line N`` (``_offset`` is the line)."""
    names = batch.schema.names
    offset = batch.column("_offset")[i].as_py() if "_offset" in names else None
    if "_partition" in names:
        return f"partition {batch.column('_partition')[i].as_py()} offset {offset}"
    return f"line {offset}" if offset is not None else f"row {i}"
