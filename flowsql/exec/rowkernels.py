"""Vectorized kernels of the ROWS window operator (``flowsql.exec.rows``).

- :class:`Vals`: a column as numpy ``data`` + ``valid`` mask, whatever its
  Arrow type: numbers and temporals as int64/float64, decimals as unscaled
  integers (int64, or Python ints when they do not fit), anything else as an
  object array. Tails carried across batches are stored in this form.
- :class:`Segments`: a running ``ufunc`` (add, minimum, maximum) over many
  segments at once, each starting from its own initial value. Every segment
  is accumulated strictly left to right, so the result is bit-for-bit the
  same as accumulating that segment alone: floating-point results do not
  depend on how rows were cut into batches.
- :class:`Frames`: ``ufunc`` over the last ``preceding + 1`` rows of
  every row (van Herk / Gil-Werman). Rows are cut into blocks of
  ``preceding + 1`` aligned to each partition's row number; a frame is the
  suffix of one block plus the prefix of the next, both accumulated
  sequentially inside their block. O(n) for any frame size, and exact for
  min/max and batch-size independent for floating sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from flowsql.exec.kernels import decimal128, to_numeric, typed

Kind = Literal["num", "dec", "obj"]

#: Above this many cells per input element a single padded matrix wastes too
#: much; segments are then bucketed by length.
_PAD_FACTOR = 3


@dataclass
class Vals:
    """One column as numpy arrays.

    ``kind`` is ``"num"`` (int64/float64 numbers, temporals as their integer
    storage), ``"dec"`` (unscaled decimal integers: int64 or object of Python
    ints) or ``"obj"`` (object array of Python values). ``type`` is the Arrow
    type the values convert back to.
    """

    data: np.ndarray
    valid: np.ndarray
    type: pa.DataType
    kind: Kind

    def take(self, idx: np.ndarray) -> Vals:
        """The values at ``idx``."""
        return Vals(self.data[idx], self.valid[idx], self.type, self.kind)

    def to_arrow(self) -> pa.Array:
        """These values as an Arrow array of :attr:`type`."""
        if self.kind == "num":
            return typed(self.data, ~self.valid, self.type)
        if self.kind == "dec":
            return decimal_array(self.data, self.valid, self.type)
        data = self.data
        if not self.valid.all():
            data = data.copy()
            data[~self.valid] = None
        return pa.array(data, type=self.type, from_pandas=True)


def plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous, non-dictionary array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def kind_of(t: pa.DataType) -> Kind:
    """How values of Arrow type ``t`` are held in numpy."""
    if pa.types.is_decimal(t):
        return "dec"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t):
        return "num"
    if pa.types.is_boolean(t):
        return "num"
    return "obj"


def to_vals(arr: pa.Array | pa.ChunkedArray) -> Vals:
    """An Arrow column as :class:`Vals`."""
    arr = plain(arr)
    kind = kind_of(arr.type)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    else:
        valid = np.ones(len(arr), dtype=bool)
    if kind == "num":
        data, _ = to_numeric(arr)
    elif kind == "dec":
        arr = decimal128(arr)
        data = unscaled(arr, valid)
    else:
        data = arr.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return Vals(data, valid, arr.type, kind)


def unscaled(arr: pa.Array, valid: np.ndarray) -> np.ndarray:
    """Unscaled decimal128 values: int64 when they all fit, else Python ints."""
    n = len(arr)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=2 * (arr.offset + n))
    words = raw[2 * arr.offset :].reshape(n, 2)
    lo, hi = words[:, 0], words[:, 1]
    if bool(((hi == (lo >> 63)) | ~valid).all()):
        return np.where(valid, lo, 0)
    big = hi.astype(object) * (1 << 64) + lo.view(np.uint64).astype(object)
    return np.where(valid, big, 0)


def decimal_array(data: np.ndarray, valid: np.ndarray, t: pa.DataType) -> pa.Array:
    """Unscaled integers (int64 or Python ints) as a decimal128 array of type ``t``."""
    n = len(data)
    if data.dtype == object:
        ints = np.where(valid, data, 0)
        lo = (ints & ((1 << 64) - 1)).astype(np.uint64).view(np.int64)
        hi = (ints >> 64).astype(np.int64)
    else:
        lo = np.where(valid, data, 0).astype(np.int64)
        hi = lo >> 63
    words = np.empty((n, 2), dtype=np.int64)
    words[:, 0], words[:, 1] = lo, hi
    nulls = int(n - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes()) if nulls else None
    out_type = (
        pa.decimal128(t.precision, t.scale) if t.precision <= 38 else pa.decimal128(38, t.scale)
    )
    return pa.Array.from_buffers(out_type, n, [bitmap, pa.py_buffer(words.tobytes())], nulls)


def _mod(a: np.ndarray, b: int) -> np.ndarray:
    """``a % b`` for a positive ``b`` (numpy divides by a scalar much faster than it
    takes a remainder)."""
    return a - (a // b) * b


def ranges(lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(k) for k in lengths)``, vectorized."""
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)


def identity_of(ufunc: np.ufunc, data: np.ndarray) -> Any:
    """The neutral element of ``ufunc`` for values of ``data``'s dtype."""
    if ufunc is np.add:
        return 0
    big = data.dtype == np.int64
    if ufunc is np.minimum:
        return np.iinfo(np.int64).max if big else np.inf
    return np.iinfo(np.int64).min if big else -np.inf


class Segments:
    """Consecutive segments of a flat array laid out as padded matrices, one per
    bucket of similar lengths, so a running ``ufunc`` can run on all segments
    at once. Build once, accumulate many columns.

    Args:
        lengths: length of each segment; they sum to the flat array's length.
    """

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = lengths
        self.size = int(lengths.sum())
        starts = np.cumsum(lengths) - lengths
        self._buckets: list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray | None]] = []
        buckets = _buckets(lengths)
        for segs in buckets:
            lens = lengths[segs]
            width = int(lens.max()) + 1  # column 0 holds the initial value
            rows = np.repeat(np.arange(len(segs)) * width, lens)
            within = ranges(lens)
            forward = rows + within + 1
            backward = rows + np.repeat(lens, lens) - within
            whole = len(buckets) == 1 and len(segs) == len(lengths)
            src = None if whole else np.repeat(starts[segs], lens) + within
            self._buckets.append((segs, width, forward, backward, src))

    def accumulate(
        self,
        ufunc: np.ufunc,
        values: np.ndarray,
        init: np.ndarray | None = None,
        reverse: bool = False,
    ) -> np.ndarray:
        """Running ``ufunc`` within each segment of ``values``.

        ``out[i]`` = ``init ⊕ v[start] ⊕ … ⊕ v[i]`` (or ``v[i] ⊕ … ⊕ v[end]`` when
        ``reverse``; ``init`` defaults to the identity), accumulated sequentially.
        """
        dtype = values.dtype if init is None else _common(values, init)
        out = np.empty(self.size, dtype=dtype)
        ident = identity_of(ufunc, values)
        for segs, width, forward, backward, src in self._buckets:
            matrix = np.full(len(segs) * width, ident, dtype=dtype)
            if init is not None:
                matrix[::width] = init[segs]
            flat = backward if reverse else forward
            matrix[flat] = values if src is None else values[src]
            with np.errstate(all="ignore"):
                grid = matrix.reshape(-1, width)
                ufunc.accumulate(grid, axis=1, out=grid)
            if src is None:
                out[:] = matrix[flat]
            else:
                out[src] = matrix[flat]
        return out


def seg_accumulate(
    ufunc: np.ufunc,
    values: np.ndarray,
    lengths: np.ndarray,
    init: np.ndarray | None = None,
    reverse: bool = False,
) -> np.ndarray:
    """Running ``ufunc`` within consecutive segments (see :meth:`Segments.accumulate`)."""
    return Segments(lengths).accumulate(ufunc, values, init, reverse)


def seg_cumsum_int(values: np.ndarray, lengths: np.ndarray, init: np.ndarray) -> np.ndarray:
    """Exact running integer sums within consecutive segments, from ``init``."""
    sums = np.cumsum(values)
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    before = sums[starts] - values[starts]
    return sums + np.repeat(init[lengths > 0] - before, lengths[lengths > 0])


def _common(values: np.ndarray, init: np.ndarray) -> np.dtype[Any]:
    if values.dtype == object or init.dtype == object:
        return np.dtype(object)
    return np.result_type(values, init)


def _buckets(lengths: np.ndarray) -> list[np.ndarray]:
    """Segment indices grouped so that padding each group to its longest
    segment costs at most a few times the values."""
    nonempty = np.flatnonzero(lengths > 0)
    lens = lengths[nonempty]
    if len(lens) == 0:
        return []
    if int(lens.max()) * len(lens) <= _PAD_FACTOR * int(lens.sum()) + 64:
        return [nonempty]
    cls = np.ceil(np.log2(lens)).astype(np.int64) // 2  # powers of 4
    return [nonempty[cls == c] for c in np.unique(cls)]


class Frames:
    """ROWS frames of ``preceding`` rows plus the current row (van Herk / Gil-Werman).

    Values are cut into blocks of ``preceding + 1`` rows aligned to partition
    row numbers. Each block is accumulated forward (prefixes) and backward
    (suffixes); a frame is the suffix of one block plus the prefix of the next.
    Blocks are rows of one padded matrix when that stays small, else
    :class:`Segments` of the pieces.

    Args:
        seg_lengths: length of each partition segment of the flat values.
        seg_base: partition row number of each segment's first value. A
            segment must hold the ``preceding`` rows before every row asked
            for (or reach back to the partition's first row).
        at: flat positions to compute frames for.
        rownum: partition row number of each position in ``at``.
        preceding: rows before the current one in the frame.
    """

    def __init__(
        self,
        seg_lengths: np.ndarray,
        seg_base: np.ndarray,
        at: np.ndarray,
        rownum: np.ndarray,
        preceding: int,
    ) -> None:
        self.block = block = preceding + 1
        self.size = size = int(seg_lengths.sum())
        self.at, self.preceding = at, preceding
        start = rownum - preceding
        self.cross = np.flatnonzero((start > 0) & (_mod(start, block) != 0))
        self.back = at[self.cross] - preceding  # where the cross frames start
        self.span = np.minimum(rownum, preceding)
        pad = seg_base % block
        cells = -(-(pad + seg_lengths) // block) * block
        self.blocks: Segments | None = None
        if int(cells.sum()) <= _PAD_FACTOR * size + 4096:
            self.cells = int(cells.sum())
            shift = np.cumsum(cells) - cells + pad - (np.cumsum(seg_lengths) - seg_lengths)
            self.flat = np.repeat(shift, seg_lengths) + np.arange(size)
            self.flat_at = self.flat[at]
            back = self.flat[self.back]  # same cell in the row-reversed grid of suffixes
            self.back_flat = back + (block - 1) - 2 * _mod(back, block)
            return
        absolute = np.repeat(seg_base, seg_lengths) + ranges(seg_lengths)
        first = _mod(absolute, block) == 0
        first[(np.cumsum(seg_lengths) - seg_lengths)[seg_lengths > 0]] = True
        starts = np.flatnonzero(first)
        self.blocks = Segments(np.diff(np.append(starts, size)))

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """``ufunc`` over each frame; ``values`` hold the identity where NULL."""
        if self.blocks is not None:
            out = self.blocks.accumulate(ufunc, values)[self.at]
            suffix = values[:0]
            if len(self.cross):
                suffix = self.blocks.accumulate(ufunc, values, reverse=True)[self.back]
        else:
            out, suffix = self._grid_accumulate(ufunc, values)
        if len(self.cross):
            with np.errstate(all="ignore"):
                out[self.cross] = ufunc(suffix, out[self.cross])
        return out

    def _grid_accumulate(
        self, ufunc: np.ufunc, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Block prefixes at ``at`` and block suffixes at the cross frames' starts."""
        matrix = np.full(self.cells, identity_of(ufunc, values), dtype=values.dtype)
        matrix[self.flat] = values
        grid = matrix.reshape(-1, self.block)
        backward = grid[:, ::-1].copy() if len(self.cross) else grid[:0]
        with np.errstate(all="ignore"):
            ufunc.accumulate(grid, axis=1, out=grid)
            if len(self.cross):
                ufunc.accumulate(backward, axis=1, out=backward)
        return matrix[self.flat_at], backward.ravel()[self.back_flat]

    def count(self, valid: np.ndarray) -> np.ndarray:
        """Number of valid values in each frame (exact prefix-sum differences)."""
        if valid.all():
            return self.span + 1
        sums = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
        return sums[self.at + 1] - sums[self.at - self.span]
