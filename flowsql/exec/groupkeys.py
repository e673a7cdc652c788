"""Group keys -> dense integer ids that persist across batches.

``GroupKeys`` turns the key columns of each batch into one int64 group id per
row without per-row Python code:

- dictionary columns (what the generator and most decoders produce): the
  batch's dictionary is small, so its *values* are mapped to persistent ids
  through a Python dict and the row ids are a ``take`` of that map by the
  dictionary indices. The map is cached while the same dictionary buffer keeps
  arriving, so a steady stream pays one gather per batch;
- plain strings, decimals, binaries...: ``pyarrow.compute.dictionary_encode``
  first, then as above;
- integers, floats (canonical NaN / zero), booleans, timestamps, dates:
  an :class:`IntIdMap` over their int64 bit patterns (a dense lookup table
  while the value range is small, sorted arrays and ``searchsorted`` after);
- several columns: the per-column ids are folded pairwise through a
  :class:`PairIdMap`, and each group id remembers its per-column ids so the key
  values can be rebuilt for output.

NULL is an ordinary key value (SQL GROUP BY semantics): it gets its own id.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError

#: Largest value range an :class:`IntIdMap` keeps as a dense lookup table.
DENSE_LIMIT = 1 << 22


def grow(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``array`` resized to at least ``size`` (capacity doubles), new cells = ``fill``."""
    if size <= len(array):
        return array
    capacity = max(size, 2 * len(array), 16)
    out = np.empty(capacity, dtype=array.dtype)
    out[: len(array)] = array
    out[len(array) :] = fill
    return out


class IntIdMap:
    """Maps int64 values to dense ids ``0..count-1``, vectorized.

    A dense lookup table covers ``[lo, lo + len(table))`` while the values seen
    span at most :data:`DENSE_LIMIT`; past that it switches to a sorted array
    of known values searched with ``numpy.searchsorted``. New values get ids in
    ascending value order within a batch. :meth:`reserve` hands out ids that
    no value maps to (e.g. for NULL).
    """

    def __init__(self) -> None:
        self.count = 0
        self.values = np.empty(0, dtype=np.int64)  # value of each id
        self._reserved: list[int] = []
        self._lo = 0
        self._table: np.ndarray | None = None  # dense: id of value lo + i, -1 unknown
        self._keys = np.empty(0, dtype=np.int64)  # sorted mode: known values
        self._ids = np.empty(0, dtype=np.int64)  # sorted mode: their ids
        self._dense = True

    @classmethod
    def from_values(cls, values: np.ndarray) -> IntIdMap:
        """A map where ``values[i]`` (distinct) has id ``i``."""
        out = cls()
        out._append(np.asarray(values, dtype=np.int64))
        if len(values) and out._fit_dense(int(values.min()), int(values.max())):
            assert out._table is not None
            out._table[values - out._lo] = np.arange(len(values))
        elif len(values):
            out._to_sorted()
        return out

    def reserve(self) -> int:
        """A new id that no value maps to."""
        new_id = int(self._append(np.zeros(1, dtype=np.int64))[0])
        self._reserved.append(new_id)
        return new_id

    def ids(self, v: np.ndarray) -> np.ndarray:
        """Ids of ``v`` (int64), adding unknown values."""
        if len(v) == 0:
            return np.empty(0, dtype=np.int64)
        if self._dense and self._fit_dense(int(v.min()), int(v.max())):
            return self._dense_ids(v)
        return self._sorted_ids(v)

    def _fit_dense(self, vmin: int, vmax: int) -> bool:
        if not self._dense:
            return False
        lo, hi = vmin, vmax
        if self._table is not None:
            lo, hi = min(self._lo, vmin), max(self._lo + len(self._table) - 1, vmax)
        if hi - lo >= DENSE_LIMIT:
            self._to_sorted()
            return False
        if self._table is None or lo < self._lo or hi >= self._lo + len(self._table):
            self._resize_table(lo, hi)
        return True

    def _resize_table(self, lo: int, hi: int) -> None:
        width = max(1 << (hi - lo).bit_length(), 64)
        table = np.full(width, -1, dtype=np.int64)
        if self._table is not None:
            start = self._lo - lo
            table[start : start + len(self._table)] = self._table
        self._table, self._lo = table, lo

    def _dense_ids(self, v: np.ndarray) -> np.ndarray:
        assert self._table is not None
        local = v - self._lo
        out = self._table[local]
        missing = out < 0
        if missing.any():
            new = np.unique(local[missing])
            self._table[new] = self._append(new + self._lo)
            out = self._table[local]
        return out

    def _sorted_ids(self, v: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(v, return_inverse=True)
        pos = np.searchsorted(self._keys, uniq)
        hit = pos < len(self._keys)
        hit[hit] = self._keys[pos[hit]] == uniq[hit]
        found = np.empty(len(uniq), dtype=np.int64)
        found[hit] = self._ids[pos[hit]]
        if not hit.all():
            new = uniq[~hit]
            new_ids = self._append(new)
            found[~hit] = new_ids
            at = pos[~hit]
            self._keys = np.insert(self._keys, at, new)
            self._ids = np.insert(self._ids, at, new_ids)
        return found[inverse.reshape(-1)]

    def _append(self, new: np.ndarray) -> np.ndarray:
        first = self.count
        self.count += len(new)
        self.values = grow(self.values, self.count, 0)
        self.values[first : self.count] = new
        return np.arange(first, self.count, dtype=np.int64)

    def _to_sorted(self) -> None:
        self._dense, self._table = False, None
        ids = np.arange(self.count, dtype=np.int64)
        if self._reserved:
            ids = np.setdiff1d(ids, np.array(self._reserved, dtype=np.int64))
        known = self.values[ids]
        order = np.argsort(known, kind="stable")
        self._keys, self._ids = known[order], ids[order]


class PairIdMap:
    """Maps pairs of non-negative ids ``(a, b)`` to dense ids (combines key columns).

    The pair is coded ``a * stride + b`` so small id ranges stay dense; the
    stride doubles (and the map is rebuilt, keeping every id) when ``b`` outgrows it.
    """

    def __init__(self) -> None:
        self._stride = 16
        self._map = IntIdMap()
        self.left = np.empty(0, dtype=np.int64)
        self.right = np.empty(0, dtype=np.int64)

    @property
    def count(self) -> int:
        return self._map.count

    def ids(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Ids of the pairs ``(a[i], b[i])``, adding unknown pairs."""
        if len(b) and int(b.max()) >= self._stride:
            self._restride(int(b.max()))
        before = self._map.count
        out = self._map.ids(a * self._stride + b)
        if self._map.count > before:
            codes = self._map.values[before : self._map.count]
            self.left = grow(self.left, self._map.count, 0)
            self.right = grow(self.right, self._map.count, 0)
            self.left[before : self._map.count] = codes // self._stride
            self.right[before : self._map.count] = codes % self._stride
        return out

    def _restride(self, bmax: int) -> None:
        self._stride = 1 << (bmax + 1).bit_length()
        n = self._map.count
        self._map = IntIdMap.from_values(self.left[:n] * self._stride + self.right[:n])


class ColumnEncoder:
    """One key column -> persistent ids; rebuilds the values from ids."""

    def __init__(self, dtype: pa.DataType) -> None:
        self.type = dtype

    @property
    def count(self) -> int:
        raise NotImplementedError

    def encode(self, arr: pa.Array) -> np.ndarray:
        """Id of each row's value (int64)."""
        raise NotImplementedError

    def decode(self, ids: np.ndarray) -> pa.Array:
        """Values of ``ids`` as an Arrow array of :attr:`type`."""
        raise NotImplementedError


class NumericEncoder(ColumnEncoder):
    """Integers, floats, booleans, timestamps, dates, durations via their bits."""

    def __init__(self, dtype: pa.DataType) -> None:
        super().__init__(dtype)
        self._map = IntIdMap()
        self._null_id = -1
        self._storage = _storage_type(dtype)

    @property
    def count(self) -> int:
        return self._map.count

    def encode(self, arr: pa.Array) -> np.ndarray:
        if not arr.null_count:
            return self._map.ids(self._bits(arr))
        null = _null_mask(arr)
        ids = np.full(len(arr), self._null(), dtype=np.int64)
        ids[~null] = self._map.ids(self._bits(arr)[~null])
        return ids

    def decode(self, ids: np.ndarray) -> pa.Array:
        bits = self._map.values[ids]
        mask = ids == self._null_id if self._null_id >= 0 else None
        if pa.types.is_floating(self.type):
            return pa.array(bits.view(np.float64), pa.float64(), mask=mask).cast(self.type)
        data = pa.array(bits, pa.int64(), mask=mask)
        if self._storage != self.type:
            return data.cast(self._storage, safe=False).view(self.type)
        return data.cast(self.type, safe=False)

    def _null(self) -> int:
        if self._null_id < 0:
            self._null_id = self._map.reserve()
        return self._null_id

    def _bits(self, arr: pa.Array) -> np.ndarray:
        t = arr.type
        if pa.types.is_floating(t):
            v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
            v = np.where(np.isnan(v), np.nan, v) + 0.0  # one NaN, and -0.0 -> 0.0
            return v.view(np.int64)
        if self._storage != t:
            arr = arr.view(self._storage)
        ints = arr.cast(pa.int64(), safe=False)
        return (ints.fill_null(0) if ints.null_count else ints).to_numpy(zero_copy_only=False)


def _storage_type(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(dtype) or pa.types.is_duration(dtype) or pa.types.is_date64(dtype):
        return pa.int64()
    if pa.types.is_date32(dtype) or pa.types.is_time32(dtype):
        return pa.int32()
    if pa.types.is_time64(dtype):
        return pa.int64()
    return dtype


def _null_mask(arr: pa.Array) -> np.ndarray:
    return arr.is_null().to_numpy(zero_copy_only=False)


class DictionaryEncoder(ColumnEncoder):
    """Any hashable Arrow type, through the batch's dictionary values."""

    def __init__(self, dtype: pa.DataType) -> None:
        super().__init__(dtype)
        self._ids: dict[Any, int] = {}
        self._chunks: list[pa.Array] = []
        self._values: pa.Array | None = None
        self._cache: tuple[pa.Array, tuple[Any, ...], np.ndarray] | None = None
        self._identity_map = False  # the cached dictionary's index i is id i

    @property
    def count(self) -> int:
        return len(self._ids)

    def encode(self, arr: pa.Array) -> np.ndarray:
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        lookup = self._lookup(arr.dictionary)
        indices = arr.indices
        if self._identity_map and not indices.null_count:
            return indices.to_numpy().astype(np.int64)
        if indices.null_count:
            idx = indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            ids = lookup[idx] if len(lookup) else np.zeros(len(idx), dtype=np.int64)
            ids[_null_mask(indices)] = self._id_of(None)
            return ids
        return lookup[indices.to_numpy(zero_copy_only=False)]

    def decode(self, ids: np.ndarray) -> pa.Array:
        if self._values is None or len(self._values) != self.count:
            chunks = [c.cast(self.type) for c in self._chunks]
            self._values = pa.concat_arrays(chunks) if chunks else pa.array([], self.type)
        return self._values.take(pa.array(ids, pa.int64()))

    def _lookup(self, dictionary: pa.Array) -> np.ndarray:
        # Dictionaries are immutable and the cached one is kept alive, so the
        # same buffer addresses mean the same values.
        ident = _identity(dictionary)
        if self._cache is not None and self._cache[1] == ident:
            return self._cache[2]
        if self._cache is not None and self._cache[0].equals(dictionary):
            # equal values in new buffers (batches from IPC, e.g. a V2 worker's
            # input): one vectorized compare instead of a lookup per value
            self._cache = (dictionary, ident, self._cache[2])
            return self._cache[2]
        self._identity_map = False
        values = dictionary.to_pylist()
        unknown = [v for v in values if v not in self._ids]
        if unknown:
            self._add(dictionary, values)
        lookup = np.fromiter((self._ids[v] for v in values), dtype=np.int64, count=len(values))
        self._cache = (dictionary, ident, lookup)
        self._identity_map = bool(np.array_equal(lookup, np.arange(len(lookup))))
        return lookup

    def _add(self, dictionary: pa.Array, values: list[Any]) -> None:
        positions = []
        for i, v in enumerate(values):
            if v not in self._ids:
                self._ids[v] = len(self._ids)
                positions.append(i)
        self._chunks.append(dictionary.take(pa.array(positions, pa.int64())))

    def _id_of(self, value: Any) -> int:
        if value not in self._ids:
            self._ids[value] = len(self._ids)
            self._chunks.append(pa.array([value], self.type))
        return self._ids[value]


def _identity(arr: pa.Array) -> tuple[Any, ...]:
    bufs = tuple(b.address if b is not None else 0 for b in arr.buffers())
    return (arr.type, arr.offset, len(arr), *bufs)


def make_encoder(dtype: pa.DataType) -> ColumnEncoder:
    """The encoder for a key column of type ``dtype``."""
    if pa.types.is_dictionary(dtype):
        return DictionaryEncoder(dtype.value_type)
    if (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_temporal(dtype)
    ):
        return NumericEncoder(dtype)
    return DictionaryEncoder(dtype)


class GroupKeys:
    """Persistent dense group ids for a tuple of key columns.

    Args:
        names: output names of the key columns (empty = one global group).
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.encoders: list[ColumnEncoder] = []
        self._pairs: list[PairIdMap] = []
        self._global = 0  # number of groups when there are no keys (0 or 1)

    @property
    def count(self) -> int:
        """Number of distinct groups seen."""
        if not self.names:
            return self._global
        if len(self.names) == 1:
            return self.encoders[0].count if self.encoders else 0
        return self._pairs[-1].count if self._pairs else 0

    @property
    def types(self) -> list[pa.DataType]:
        """Value types of the key columns (known after the first batch)."""
        return [e.type for e in self.encoders]

    def encode(self, columns: list[pa.Array], num_rows: int) -> np.ndarray:
        """Group id (int64) of each row; ``columns`` are the evaluated key columns."""
        if not self.names:
            self._global = 1 if num_rows else self._global
            return np.zeros(num_rows, dtype=np.int64)
        if not self.encoders:
            self._start([c.type for c in columns])
        ids = [
            enc.encode(self._conform(enc, c)) for enc, c in zip(self.encoders, columns, strict=True)
        ]
        gid = ids[0]
        for pair, nxt in zip(self._pairs, ids[1:], strict=True):
            gid = pair.ids(gid, nxt)
        return gid

    def decode(self, gids: np.ndarray) -> list[pa.Array]:
        """Key values of ``gids``, one array per key column."""
        parts = self._components(np.asarray(gids, dtype=np.int64))
        return [enc.decode(ids) for enc, ids in zip(self.encoders, parts, strict=True)]

    def _components(self, gids: np.ndarray) -> list[np.ndarray]:
        parts: list[np.ndarray] = []
        cur = gids
        for pair in reversed(self._pairs):
            parts.append(pair.right[cur])
            cur = pair.left[cur]
        parts.append(cur)
        return parts[::-1]

    def _start(self, types: list[pa.DataType]) -> None:
        self.encoders = [make_encoder(t) for t in types]
        self._pairs = [PairIdMap() for _ in types[1:]]

    @staticmethod
    def _conform(enc: ColumnEncoder, col: pa.Array) -> pa.Array:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if t == enc.type:
            return col
        try:
            return col.cast(enc.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ExecutionError(
                f"GROUP BY column changed type from {enc.type} to {col.type}: {exc}"
            ) from None
