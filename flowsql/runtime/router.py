"""``HashRouter``: rows to partitions by a stable hash of the routing key.

The hash is the same in every process and every run (Python's ``hash()`` is
salted per process, so it is never used). It is computed vectorized:

- integers, booleans, dates and timestamps: a splitmix64 mix of the value as
  int64 (timestamps in ms, so the unit does not matter);
- floats: integral values hash like the equal integer (a JSON decoder may
  type the same field int in one batch and double in the next); other values
  hash their IEEE bits;
- strings and binaries: a multiply-xorshift mix of 8-byte words read straight
  from the Arrow data buffer (one numpy pass per 8 bytes of the longest value);
  dictionary arrays hash their distinct values once and gather by index;
- NULL (and a column missing from a batch) hashes to a fixed constant.

Several key columns combine their hashes in order. The partition of a row is
``hash % num_partitions``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_NULL_HASH = _U64(0x5BD1E9955BD1E995)
_SEED = _U64(0x243F6A8885A308D3)
_TWO_63 = float(2**63)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser over a uint64 array (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _M1
    z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def hash_array(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable uint64 hash of every value of ``arr`` (NULL -> a fixed constant)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    if pa.types.is_dictionary(t):
        return _hash_dictionary(arr.indices, arr.dictionary)
    values = _hash_bytes_values(arr) if _is_bytes_like(t) else _hash_values(arr)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        values = np.where(valid, values, _NULL_HASH)
    return values


def combine(acc: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Fold the hash of the next key column into ``acc`` (order matters)."""
    return splitmix64(acc * _M1 + h)


def hash_columns(columns: Sequence[pa.Array | pa.ChunkedArray | None], rows: int) -> np.ndarray:
    """Combined stable hash of several key columns (None = a missing column: NULL)."""
    acc = np.full(rows, _SEED, dtype=np.uint64)
    for col in columns:
        h = np.full(rows, _NULL_HASH, dtype=np.uint64) if col is None else hash_array(col)
        acc = combine(acc, h)
    return acc


class HashRouter:
    """Routes rows to ``num_partitions`` partitions by their key columns.

    Args:
        key_columns: the routing key (GROUP BY / PARTITION BY columns). Empty
            means any row may go anywhere: a batch is cut into contiguous
            slices, one per partition, so partition order is arrival order.
        num_partitions: how many partitions (>= 1).
    """

    def __init__(self, key_columns: Sequence[str], num_partitions: int) -> None:
        if num_partitions < 1:
            raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
        self.key_columns = tuple(key_columns)
        self.num_partitions = num_partitions

    def hash_rows(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The stable uint64 key hash of every row."""
        names = set(batch.schema.names)
        columns = [batch.column(c) if c in names else None for c in self.key_columns]
        return hash_columns(columns, batch.num_rows)

    def partitions_of(self, columns: Sequence[pa.Array | pa.ChunkedArray | None]) -> np.ndarray:
        """Partition of each row given its key columns' values, in key order
        (e.g. the keys stored in an operator snapshot)."""
        rows = len(next((c for c in columns if c is not None), []))
        if self.num_partitions == 1 or not self.key_columns:
            return np.zeros(rows, dtype=np.uint16)
        return (hash_columns(columns, rows) % _U64(self.num_partitions)).astype(np.uint16)

    def partitions(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Partition id (uint16) of every row."""
        if self.num_partitions == 1:
            return np.zeros(batch.num_rows, dtype=np.uint16)
        if not self.key_columns:
            return np.repeat(
                np.arange(self.num_partitions, dtype=np.uint16), self._slice_sizes(batch.num_rows)
            )
        ids = self.hash_rows(batch) % _U64(self.num_partitions)
        return ids.astype(np.uint16)

    def split(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """One batch per partition (possibly empty), rows in arrival order.

        One stable sort of the partition ids and one ``take``; the per-partition
        batches are zero-copy slices of the result.
        """
        if self.num_partitions == 1:
            return [batch]
        if not self.key_columns:
            bounds = np.concatenate([[0], np.cumsum(self._slice_sizes(batch.num_rows))])
            return [
                batch.slice(int(a), int(b - a))
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]
        return split_by(batch, self.partitions(batch), self.num_partitions)

    def _slice_sizes(self, rows: int) -> np.ndarray:
        base, extra = divmod(rows, self.num_partitions)
        return np.array([base + (p < extra) for p in range(self.num_partitions)], dtype=np.int64)


def split_by(batch: pa.RecordBatch, ids: np.ndarray, num_partitions: int) -> list[pa.RecordBatch]:
    """Split ``batch`` by the partition id of each row (stable)."""
    counts = np.bincount(ids, minlength=num_partitions)
    if counts.max(initial=0) == batch.num_rows:
        only = int(np.argmax(counts))
        empty = batch.slice(0, 0)
        return [batch if p == only else empty for p in range(num_partitions)]
    order = np.argsort(ids, kind="stable")
    ordered = batch.take(pa.array(order))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [ordered.slice(int(bounds[p]), int(counts[p])) for p in range(num_partitions)]


def _is_bytes_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    )


def _hash_dictionary(indices: pa.Array, dictionary: pa.Array) -> np.ndarray:
    """Hash each distinct value once, then gather by index; NULL index -> constant."""
    uniq = hash_array(dictionary) if len(dictionary) else np.empty(0, dtype=np.uint64)
    uniq = np.append(uniq, _NULL_HASH)  # slot for NULL indices
    idx = indices.fill_null(len(dictionary)) if indices.null_count else indices
    return uniq[idx.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)]


def _hash_values(arr: pa.Array) -> np.ndarray:
    """Hash a non-string, non-dictionary array (NULL slots hold junk)."""
    t = arr.type
    if pa.types.is_floating(t):
        return _hash_floats(arr.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if pa.types.is_decimal(t):
        return _hash_floats(arr.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _hash_ints(arr.cast(pa.timestamp("ms")).cast(pa.int64()))
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_duration(t):
        return _hash_ints(arr.cast(pa.int64()))
    if pa.types.is_null(t):
        return np.full(len(arr), _NULL_HASH, dtype=np.uint64)
    return _hash_other(arr)


def _hash_ints(arr: pa.Array) -> np.ndarray:
    filled = arr.fill_null(0) if arr.null_count else arr
    ints = filled.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return splitmix64(ints.view(np.uint64))


def _hash_floats(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.5, posinf=0.25, neginf=-0.25)  # NULL slots are NaN too
    integral = (values == np.floor(values)) & (np.abs(values) < _TWO_63)
    as_int = np.where(integral, values, 0.0).astype(np.int64)
    bits = (values + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    return splitmix64(np.where(integral, as_int.view(np.uint64), bits ^ _M2))


def _hash_other(arr: pa.Array) -> np.ndarray:
    """Lists, structs, ...: hash their canonical text (rare as routing keys)."""
    text = pa.array(
        [
            None if v is None else json.dumps(v, sort_keys=True, default=str)
            for v in arr.to_pylist()
        ],
        pa.string(),
    )
    return hash_array(text)


def _hash_bytes_values(arr: pa.Array) -> np.ndarray:
    """Hash byte strings: multiply-xorshift over 8-byte little-endian words read
    straight from the Arrow data buffer, then splitmix64 with the length."""
    arr = _as_offset_binary(arr)
    n = len(arr)
    width = 8 if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type) else 4
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=f"<i{width}", count=n + 1, offset=arr.offset * width)
    starts = offsets[:-1].astype(np.int64)
    lengths = offsets[1:] - starts
    words = _unaligned_words(data_buf, int(offsets[-1]))
    h = np.full(n, _SEED, dtype=np.uint64)
    last = len(words) - 1
    for w in range(0, int(lengths.max(initial=0)), 8):
        rem = lengths - w
        word = words[np.minimum(starts + w, last)] & _TAIL_MASKS[np.minimum(np.maximum(rem, 0), 8)]
        mixed = (h ^ word) * _M1
        mixed ^= mixed >> _U64(29)
        h = np.where(rem > 0, mixed, h)
    return splitmix64(h ^ lengths.astype(np.uint64))


_TAIL_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)


def _unaligned_words(data: pa.Buffer | None, size: int) -> np.ndarray:
    """``words[i]`` = the 8 bytes starting at byte ``i`` (zero padded past the end)."""
    padded = np.zeros(size + 8, dtype=np.uint8)
    if data is not None and size:
        padded[:size] = np.frombuffer(data, dtype=np.uint8, count=size)
    return np.ndarray(shape=(size + 1,), dtype="<u8", buffer=padded, strides=(1,))


def _as_offset_binary(arr: pa.Array) -> pa.Array:
    """Views and fixed-size binaries as offset-based binaries (one layout to read)."""
    t = arr.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return arr.cast(pa.large_binary())
    return arr
