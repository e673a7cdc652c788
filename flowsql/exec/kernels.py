"""Vectorized helpers shared by the aggregators: Arrow columns <-> numpy numbers,
exact integer group sums, and 128-bit decimals as int64 limbs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EXACT = float(1 << 53)


def storage_type(t: pa.DataType) -> pa.DataType:
    """The integer type a temporal type is stored as (else ``t``)."""
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_date64(t):
        return pa.int64()
    if pa.types.is_time64(t):
        return pa.int64()
    if pa.types.is_date32(t) or pa.types.is_time32(t):
        return pa.int32()
    return t


def to_numeric(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """An Arrow column as int64/float64 numpy values (nulls -> 0) and validity."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if storage_type(arr.type) != arr.type:
        arr = arr.view(storage_type(arr.type))
    if pa.types.is_boolean(arr.type) or pa.types.is_null(arr.type):
        arr = arr.cast(pa.int64())
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        arr = arr.fill_null(0)
    values = arr.to_numpy(zero_copy_only=False)
    dtype = np.float64 if pa.types.is_floating(arr.type) else np.int64
    return values.astype(dtype, copy=False), valid


def int_group_sum(inv: np.ndarray, v: np.ndarray, size: int) -> np.ndarray:
    """Exact int64 sums of ``v`` per local group (bincount when floats are exact)."""
    if len(v) == 0:
        return np.zeros(size, dtype=np.int64)
    bound = max(abs(int(v.max())), abs(int(v.min()))) * len(v)
    if bound < _EXACT:
        return np.bincount(inv, weights=v, minlength=size).astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, inv, v)
    return out


def decimal128(arr: pa.Array) -> pa.Array:
    """A decimal column as decimal128 (decimal32/64/256 are cast)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type.id != pa.decimal128(1, 0).id:
        precision = min(38, arr.type.precision)
        arr = arr.cast(pa.decimal128(precision, arr.type.scale))
    return arr


def decimal_limbs(arr: pa.Array) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Unscaled decimal128 values as (low 32 bits, next 32 bits, signed high 64 bits)."""
    n = len(arr)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=2 * (arr.offset + n))
    raw = raw[2 * arr.offset :].reshape(n, 2)
    lo = raw[:, 0].view(np.uint64)
    limbs = [(lo & 0xFFFFFFFF).astype(np.int64), (lo >> 32).astype(np.int64), raw[:, 1].copy()]
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        limbs = [limb[valid] for limb in limbs]
    return limbs, valid


def decimal_from_limbs(
    l0: np.ndarray, l1: np.ndarray, l2: np.ndarray, dtype: pa.DataType, empty: np.ndarray
) -> pa.Array:
    """Build a decimal128 array from normalised limbs (``empty`` rows are NULL)."""
    m = len(l0)
    words = np.empty((m, 2), dtype=np.int64)
    words[:, 0] = ((l1.astype(np.uint64) << np.uint64(32)) | l0.astype(np.uint64)).view(np.int64)
    words[:, 1] = l2
    arr = pa.Array.from_buffers(dtype, m, [None, pa.py_buffer(words.tobytes())])
    if empty.any():
        arr = pc.if_else(pa.array(~empty), arr, pa.scalar(None, dtype))
    return arr


def is_numeric(t: pa.DataType) -> bool:
    """Types whose MIN/MAX/FIRST/LAST run on numpy numbers."""
    if pa.types.is_dictionary(t):
        return False
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)


def typed(values: np.ndarray, empty: np.ndarray | None, t: pa.DataType) -> pa.Array:
    """Numpy numbers back to the Arrow type ``t`` (``empty`` rows NULL)."""
    mask = empty if empty is not None and empty.any() else None
    if pa.types.is_floating(t):
        return pa.array(values, pa.float64(), mask=mask).cast(t)
    arr = pa.array(values.astype(np.int64, copy=False), pa.int64(), mask=mask)
    storage = storage_type(t)
    if storage != t:
        return arr.cast(storage, safe=False).view(t)
    return arr.cast(t, safe=False)
