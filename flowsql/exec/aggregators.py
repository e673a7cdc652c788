"""Aggregate functions over dense slots: initialize / update / merge / result.

An aggregator owns numpy arrays indexed by *slot* (one slot per live group,
or per live group and window). The operator groups each batch into local
groups (:class:`Grouping`), maps them to slots, and calls :meth:`update`.
Partial states (:meth:`extract` -> dict of arrays, one entry per slot) can be
merged into other slots (:meth:`merge`): that is how session windows join,
how a snapshot is restored, and how partial aggregates from several
partitions combine.

Exactness and batch-size independence:

- COUNT, integer SUM/AVG, decimal SUM/AVG, MIN/MAX, FIRST/LAST and
  COUNT(DISTINCT) are exact, so they never depend on how rows were batched.
- Float SUM/AVG add each row into its slot with ``numpy.add.at``, which adds
  in arrival order: the same float operations, in the same order, as one
  record at a time. VAR/STDDEV keep shifted sums ``Σ(x-K)`` and ``Σ(x-K)²``
  (K = the group's first value; numerically stable for data near K) the same
  way. Only merges of partial states (sessions bridged by a record, two-phase
  aggregation) use Chan's formula and may differ in the last bits.
- APPROX_COUNT_DISTINCT is computed exactly (same kernel as COUNT DISTINCT).
- AVG of DECIMAL(p, s) is DECIMAL(38, max(s, 6)), rounded half away from zero
  (DuckDB returns DOUBLE here; we keep decimals exact end to end).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import PlanError, UnsupportedError
from flowsql.exec.groupkeys import ColumnEncoder, grow, make_encoder
from flowsql.exec.kernels import (
    decimal128,
    decimal_from_limbs,
    decimal_limbs,
    int_group_sum,
    is_numeric,
    to_numeric,
    typed,
)
from flowsql.plan.expr import AggCall


def _ieee() -> np.errstate:
    """Float ops on inf/NaN give NaN quietly, as in SQL engines."""
    return np.errstate(invalid="ignore", over="ignore")


Partial = dict[str, Any]  # field -> np.ndarray (or pa.Array for list states), one row per slot


class Grouping:
    """The rows of one batch assigned to ``size`` local groups.

    Args:
        inv: local group of each assigned row.
        size: number of local groups.
        rows: batch row of each assigned row (None = every batch row, in order).
        ts: event time of each assigned row.
        counts: rows per local group, when already known.
    """

    def __init__(
        self,
        inv: np.ndarray,
        size: int,
        rows: np.ndarray | None,
        ts: np.ndarray,
        counts: np.ndarray | None = None,
    ) -> None:
        self.inv = inv
        self.size = size
        self.rows = rows
        self.ts = ts
        self.slots = np.empty(0, dtype=np.int64)  # slot of each local group, set by the operator
        self._counts = counts
        self._row_slots: np.ndarray | None = None
        self._cache: dict[int, Any] = {}

    def counts(self) -> np.ndarray:
        """Assigned rows per local group."""
        if self._counts is None:
            self._counts = np.bincount(self.inv, minlength=self.size)
        return self._counts

    def row_slots(self) -> np.ndarray:
        """Slot of each assigned row."""
        if self._row_slots is None:
            self._row_slots = self.slots[self.inv]
        return self._row_slots

    def arrow(self, arr: pa.Array) -> pa.Array:
        """``arr`` (one value per batch row) for the assigned rows."""
        return arr if self.rows is None else arr.take(pa.array(self.rows))

    def numeric(self, arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
        """Values of the assigned rows as numbers, and their validity (None = all valid)."""
        key = id(arr)
        if key not in self._cache:
            values, valid = to_numeric(arr)
            if self.rows is not None:
                values = values[self.rows]
                valid = None if valid is None else valid[self.rows]
            self._cache[key] = (arr, values, valid)
        return self._cache[key][1], self._cache[key][2]

    def valid_counts(self, valid: np.ndarray | None) -> np.ndarray:
        """Non-null assigned rows per local group."""
        if valid is None:
            return self.counts()
        return np.bincount(self.inv[valid], minlength=self.size)


def _subset(inv: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    return inv if valid is None else inv[valid]


class Aggregator:
    """Base: state arrays indexed by slot.

    Subclasses declare ``fields`` (name -> (dtype, initial value)) and implement
    :meth:`update`, :meth:`merge` and :meth:`result`.

    Args:
        name: output column name.
        call: the aggregate call.
        arg_type: Arrow type of the argument (None for COUNT(*)).
    """

    kind = "aggregate"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        self.name = name
        self.call = call
        self.arg_type = arg_type
        self.fields: dict[str, tuple[Any, Any]] = {}
        self.state: dict[str, np.ndarray] = {}
        self.capacity = 0

    @property
    def state_key(self) -> str:
        """Changes whenever the meaning of the state changes."""
        return f"{self.kind}({self.arg_type})"

    @property
    def out_type(self) -> pa.DataType:
        raise NotImplementedError

    def initialize(self, capacity: int) -> None:
        """Make room for ``capacity`` slots (new slots hold the initial state)."""
        for field, (dtype, fill) in self.fields.items():
            arr = self.state.get(field, np.empty(0, dtype=dtype))
            self.state[field] = grow(arr, capacity, fill)
        self.capacity = max(capacity, len(next(iter(self.state.values()), [])))

    def reset(self, slots: np.ndarray) -> None:
        """Return ``slots`` to the initial state (they are being recycled)."""
        for field, (_, fill) in self.fields.items():
            self.state[field][slots] = fill

    def extract(self, slots: np.ndarray) -> Partial:
        """The partial state of ``slots``."""
        return {f: self.state[f][slots].copy() for f in self.fields}

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        """Fold one batch's rows into the slots of their groups (``g.slots``)."""
        raise NotImplementedError

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        """Merge partial states into ``slots`` (distinct slots)."""
        raise NotImplementedError

    def result(self, slots: np.ndarray) -> pa.Array:
        """Final values of ``slots``."""
        raise NotImplementedError

    def export(self, part: Partial) -> dict[str, pa.Array]:
        """A partial state as Arrow columns (for snapshots)."""
        return {f: self._to_arrow(f, v) for f, v in part.items()}

    def load(self, columns: dict[str, pa.Array]) -> Partial:
        """Inverse of :meth:`export`."""
        out: Partial = {}
        for f, (dtype, _) in self.fields.items():
            col = columns[f]
            if dtype is object:
                out[f] = np.array(col.to_pylist() + [None], dtype=object)[:-1]
            else:
                out[f] = col.to_numpy(zero_copy_only=False).astype(dtype)
        return out

    def _to_arrow(self, field: str, values: Any) -> pa.Array:
        if isinstance(values, pa.Array):
            return values
        if values.dtype == object:
            return pa.array(values.tolist(), self.value_type)
        return pa.array(values)

    @property
    def value_type(self) -> pa.DataType:
        t = self.arg_type or pa.int64()
        return t.value_type if pa.types.is_dictionary(t) else t


class CountStar(Aggregator):
    """COUNT(*)."""

    kind = "count_star"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        super().__init__(name, call, arg_type)
        self.fields = {"n": (np.int64, 0)}

    @property
    def out_type(self) -> pa.DataType:
        return pa.int64()

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        self.state["n"][g.slots] += self._counts(g, args)

    def _counts(self, g: Grouping, args: list[pa.Array]) -> np.ndarray:
        return g.counts()

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        self.state["n"][slots] += part["n"]

    def result(self, slots: np.ndarray) -> pa.Array:
        return pa.array(self.state["n"][slots], pa.int64())


class Count(CountStar):
    """COUNT(x): non-null values."""

    kind = "count"

    def _counts(self, g: Grouping, args: list[pa.Array]) -> np.ndarray:
        arr = args[0]
        if not arr.null_count:
            return g.counts()
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if g.rows is not None:
            valid = valid[g.rows]
        return g.valid_counts(valid)


class Sum(Aggregator):
    """SUM(x) and AVG(x) over integers, floats or decimals.

    Integers sum exactly in int64; floats add in arrival order (``add.at``);
    DECIMAL(p, s) sums exactly as three int64 limbs of 32 bits (low, middle,
    signed high) normalised after each merge, and outputs DECIMAL(38, s).
    """

    kind = "sum"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        super().__init__(name, call, arg_type)
        t = self.value_type
        if pa.types.is_decimal(t):
            self.mode = "decimal"
            self.fields = {"l0": (np.int64, 0), "l1": (np.int64, 0), "l2": (np.int64, 0)}
        elif pa.types.is_floating(t):
            self.mode = "float"
            self.fields = {"s": (np.float64, 0.0)}
        elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
            self.mode = "int"
            self.fields = {"s": (np.int64, 0)}
        else:
            raise PlanError(f"{self.kind.upper()} needs a number, got {t}")
        self.fields["n"] = (np.int64, 0)

    @property
    def out_type(self) -> pa.DataType:
        if self.mode == "decimal":
            return pa.decimal128(38, self.value_type.scale)
        return pa.float64() if self.mode == "float" else pa.int64()

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        if self.mode == "decimal":
            self._update_decimal(g, args[0])
            return
        values, valid = g.numeric(args[0])
        self.state["n"][g.slots] += g.valid_counts(valid)
        if self.mode == "int":
            v = values if valid is None else values[valid]
            self.state["s"][g.slots] += int_group_sum(_subset(g.inv, valid), v, g.size)
        else:
            rows = g.row_slots() if valid is None else g.row_slots()[valid]
            with _ieee():
                np.add.at(self.state["s"], rows, values if valid is None else values[valid])

    def _update_decimal(self, g: Grouping, arr: pa.Array) -> None:
        arr = g.arrow(decimal128(arr))
        limbs, valid = decimal_limbs(arr)
        inv = _subset(g.inv, valid)
        part = {f"l{i}": int_group_sum(inv, limb, g.size) for i, limb in enumerate(limbs)}
        part["n"] = g.valid_counts(valid)
        self.merge(g.slots, part)

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        with _ieee():
            for field in self.fields:
                self.state[field][slots] += part[field]
        if self.mode == "decimal":
            self._normalize(slots)

    def _normalize(self, slots: np.ndarray) -> None:
        l0, l1, l2 = (self.state[f][slots] for f in ("l0", "l1", "l2"))
        carry = l0 >> 32
        l0 -= carry << 32
        l1 += carry
        carry = l1 >> 32
        l1 -= carry << 32
        l2 += carry
        self.state["l0"][slots], self.state["l1"][slots], self.state["l2"][slots] = l0, l1, l2

    def result(self, slots: np.ndarray) -> pa.Array:
        empty = self.state["n"][slots] == 0
        if self.mode == "decimal":
            return self._decimal_sum(slots, empty)
        return pa.array(self.state["s"][slots], self.out_type, mask=_mask(empty))

    def _decimal_sum(self, slots: np.ndarray, empty: np.ndarray) -> pa.Array:
        l0, l1, l2 = (self.state[f][slots] for f in ("l0", "l1", "l2"))
        return decimal_from_limbs(l0, l1, l2, self.out_type, empty)


class Avg(Sum):
    """AVG(x): float64 for integers and floats, DECIMAL(38, max(s, 6)) for decimals."""

    kind = "avg"

    @property
    def out_type(self) -> pa.DataType:
        if self.mode == "decimal":
            return pa.decimal128(38, min(38, max(self.value_type.scale, 6)))
        return pa.float64()

    def result(self, slots: np.ndarray) -> pa.Array:
        n = self.state["n"][slots]
        empty = n == 0
        if self.mode == "decimal":
            return self._decimal_avg(slots, n)
        total = self.state["s"][slots].astype(np.float64, copy=False)
        avg = np.divide(total, n, out=np.zeros(len(n)), where=~empty)
        return pa.array(avg, pa.float64(), mask=_mask(empty))

    def _decimal_avg(self, slots: np.ndarray, n: np.ndarray) -> pa.Array:
        # One Python division per group (not per record): exact rounding.
        scale_in, scale_out = self.value_type.scale, self.out_type.scale
        factor = 10 ** (scale_out - scale_in)
        out: list[decimal.Decimal | None] = []
        l0, l1, l2 = (self.state[f][slots].tolist() for f in ("l0", "l1", "l2"))
        for a, b, c, count in zip(l0, l1, l2, n.tolist(), strict=True):
            if count == 0:
                out.append(None)
                continue
            total = ((c << 64) + (b << 32) + a) * factor
            q, r = divmod(abs(total), count)
            q += 2 * r >= count
            out.append(decimal.Decimal(q if total >= 0 else -q).scaleb(-scale_out))
        return pa.array(out, self.out_type)


class Variance(Aggregator):
    """VAR_SAMP / VAR_POP / STDDEV_SAMP / STDDEV_POP (float64).

    State per slot: n, shift K (first value) and the shifted sums S1 = Σ(x-K),
    S2 = Σ(x-K)²; mean = K + S1/n and M2 = S2 - S1²/n. Partial states merge
    with Chan's formula.
    """

    kind = "var"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        super().__init__(name, call, arg_type)
        self.kind = call.fn
        self.fields = {
            "n": (np.int64, 0),
            "k": (np.float64, 0.0),
            "s1": (np.float64, 0.0),
            "s2": (np.float64, 0.0),
        }

    @property
    def out_type(self) -> pa.DataType:
        return pa.float64()

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        x, valid = self._values(g, args[0])
        inv = _subset(g.inv, valid)
        counts = np.bincount(inv, minlength=g.size)
        fresh = (self.state["n"][g.slots] == 0) & (counts > 0)
        if fresh.any():
            first = np.full(g.size, len(x), dtype=np.int64)
            np.minimum.at(first, inv, np.arange(len(x)))
            self.state["k"][g.slots[fresh]] = x[first[fresh]]
        rows = g.row_slots() if valid is None else g.row_slots()[valid]
        with _ieee():
            d = x - self.state["k"][rows]
            np.add.at(self.state["s1"], rows, d)
            np.add.at(self.state["s2"], rows, d * d)
        self.state["n"][g.slots] += counts

    def _values(self, g: Grouping, arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
        if pa.types.is_decimal(arr.type):
            arr = arr.cast(pa.float64())
        values, valid = g.numeric(arr)
        x = values.astype(np.float64, copy=False)
        return (x if valid is None else x[valid]), valid

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        n_a = self.state["n"][slots].astype(np.float64)
        n_b = part["n"].astype(np.float64)
        k = np.where(n_a > 0, self.state["k"][slots], part["k"])
        mean_a, m2_a = _moments(
            n_a, self.state["k"][slots], self.state["s1"][slots], self.state["s2"][slots]
        )
        mean_b, m2_b = _moments(n_b, part["k"], part["s1"], part["s2"])
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean_b - mean_a
            mean = np.where(n_b == 0, mean_a, np.where(n_a == 0, mean_b, mean_a + delta * n_b / n))
            m2 = m2_a + m2_b + np.where((n_a > 0) & (n_b > 0), delta * delta * n_a * n_b / n, 0.0)
        s1 = n * (mean - k)
        s2 = m2 + s1 * s1 / np.maximum(n, 1)
        # Exact where one side is empty (restores, fresh slots); Chan's formula otherwise.
        keep, copy = n_b == 0, n_a == 0
        self.state["s1"][slots] = np.where(
            keep, self.state["s1"][slots], np.where(copy, part["s1"], s1)
        )
        self.state["s2"][slots] = np.where(
            keep, self.state["s2"][slots], np.where(copy, part["s2"], s2)
        )
        self.state["k"][slots] = k
        self.state["n"][slots] += part["n"]

    def result(self, slots: np.ndarray) -> pa.Array:
        n = self.state["n"][slots].astype(np.float64)
        _, m2 = _moments(
            n, self.state["k"][slots], self.state["s1"][slots], self.state["s2"][slots]
        )
        m2 = np.maximum(m2, 0.0)
        sample = self.kind in ("var_samp", "stddev_samp")
        denom = n - 1 if sample else n
        empty = denom <= 0
        var = np.divide(m2, denom, out=np.zeros(len(n)), where=~empty)
        out = np.sqrt(var) if self.kind.startswith("stddev") else var
        return pa.array(out, pa.float64(), mask=_mask(empty))


def _moments(
    n: np.ndarray, k: np.ndarray, s1: np.ndarray, s2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    safe = np.maximum(n, 1)
    with _ieee():
        return k + s1 / safe, s2 - s1 * s1 / safe


def _mask(empty: np.ndarray) -> np.ndarray | None:
    """A null mask for ``pa.array``, None when nothing is null (cheaper)."""
    return empty if empty.any() else None


class MinMax(Aggregator):
    """MIN(x) / MAX(x): numbers and temporals in numpy; strings, decimals,
    booleans and other sortable types through per-batch dictionary ranks.
    NaN counts as the largest float (like DuckDB): MAX returns it, MIN skips it."""

    kind = "min"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        super().__init__(name, call, arg_type)
        self.kind = call.fn
        self.smallest = call.fn == "min"
        self.numeric = is_numeric(self.value_type)
        if self.numeric:
            dtype = np.float64 if pa.types.is_floating(self.value_type) else np.int64
            big = np.inf if dtype is np.float64 else np.iinfo(np.int64).max
            # fmin skips NaN, so a float MIN starting from NaN stays NaN only
            # when every value is NaN (NaN sorts last, as in DuckDB).
            start = (np.nan if dtype is np.float64 else big) if self.smallest else -big
            self.fields = {"v": (dtype, start), "n": (np.int64, 0)}
            self._ufunc = np.fmin if self.smallest else np.maximum
        else:
            self.fields = {"v": (object, None), "n": (np.int64, 0)}

    @property
    def out_type(self) -> pa.DataType:
        return self.value_type

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        if not self.numeric:
            self.merge(g.slots, self._generic_partial(g, args[0]))
            return
        values, valid = g.numeric(args[0])
        rows = g.row_slots() if valid is None else g.row_slots()[valid]
        with _ieee():  # comparisons with NaN
            self._ufunc.at(self.state["v"], rows, values if valid is None else values[valid])
        self.state["n"][g.slots] += g.valid_counts(valid)

    def _generic_partial(self, g: Grouping, arr: pa.Array) -> Partial:
        enc = g.arrow(arr)
        if not pa.types.is_dictionary(enc.type):
            enc = pc.dictionary_encode(enc)
        order = pc.sort_indices(enc.dictionary).to_numpy()
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        valid = pc.is_valid(pc.take(enc.dictionary, enc.indices)).to_numpy(zero_copy_only=False)
        idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
        inv = g.inv[valid]
        best = np.full(g.size, len(order) if self.smallest else -1, dtype=np.int64)
        (np.minimum if self.smallest else np.maximum).at(best, inv, rank[idx[valid]])
        counts = np.bincount(inv, minlength=g.size)
        values = np.empty(g.size, dtype=object)
        has = counts > 0
        values[has] = enc.dictionary.take(pa.array(order[best[has]])).to_pylist()
        return {"v": values, "n": counts}

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        if self.numeric:
            with _ieee():
                self.state["v"][slots] = self._ufunc(self.state["v"][slots], part["v"])
        else:
            self._merge_objects(slots, part)
        self.state["n"][slots] += part["n"]

    def _merge_objects(self, slots: np.ndarray, part: Partial) -> None:
        current = self.state["v"][slots]
        both = (part["n"] > 0) & (self.state["n"][slots] > 0)
        take = (part["n"] > 0) & (self.state["n"][slots] == 0)
        if both.any():
            op = np.less if self.smallest else np.greater
            better = op(part["v"][both], current[both]).astype(bool)
            take[np.flatnonzero(both)[better]] = True
        self.state["v"][slots[take]] = part["v"][take]

    def result(self, slots: np.ndarray) -> pa.Array:
        empty = self.state["n"][slots] == 0
        if self.numeric:
            return typed(self.state["v"][slots], empty, self.value_type)
        return pa.array(self.state["v"][slots].tolist(), self.value_type)


class FirstLast(Aggregator):
    """FIRST(x) / LAST(x): the non-null value with the smallest / largest event
    time; ties go to the first / last arrival."""

    kind = "first"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        super().__init__(name, call, arg_type)
        self.kind = call.fn
        self.first = call.fn == "first"
        self.numeric = is_numeric(self.value_type)
        dtype: Any = object
        if self.numeric:
            dtype = np.float64 if pa.types.is_floating(self.value_type) else np.int64
        self.fields = {
            "t": (np.int64, 0),
            "has": (np.bool_, False),
            "v": (dtype, None if dtype is object else 0),
        }

    @property
    def out_type(self) -> pa.DataType:
        return self.value_type

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        arr = args[0]
        valid = None
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            valid = valid if g.rows is None else valid[g.rows]
        pos = np.arange(len(g.inv)) if valid is None else np.flatnonzero(valid)
        inv, ts = g.inv[pos], g.ts[pos]
        edge = np.iinfo(np.int64).max if self.first else np.iinfo(np.int64).min
        best_t = np.full(g.size, edge, dtype=np.int64)
        (np.minimum if self.first else np.maximum).at(best_t, inv, ts)
        cand = ts == best_t[inv]
        best = np.full(g.size, len(g.inv) if self.first else -1, dtype=np.int64)
        (np.minimum if self.first else np.maximum).at(best, inv[cand], pos[cand])
        has = np.bincount(inv, minlength=g.size) > 0
        self.merge(g.slots, {"t": best_t, "has": has, "v": self._pick(g, arr, best, has)})

    def _pick(self, g: Grouping, arr: pa.Array, best: np.ndarray, has: np.ndarray) -> np.ndarray:
        if self.numeric:
            values, _ = g.numeric(arr)
            out = np.zeros(g.size, dtype=values.dtype)
            out[has] = values[best[has]]
            return out
        objs = np.empty(g.size, dtype=object)
        rows = best[has] if g.rows is None else g.rows[best[has]]
        objs[has] = arr.take(pa.array(rows, pa.int64())).to_pylist()
        return objs

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        t_s, has_s = self.state["t"][slots], self.state["has"][slots]
        newer = part["t"] < t_s if self.first else part["t"] >= t_s
        take = part["has"] & (~has_s | newer)
        dst = slots[take]
        for field in ("t", "has", "v"):
            self.state[field][dst] = part[field][take]

    def result(self, slots: np.ndarray) -> pa.Array:
        empty = ~self.state["has"][slots]
        if self.numeric:
            return typed(self.state["v"][slots], empty, self.value_type)
        return pa.array(self.state["v"][slots].tolist(), self.value_type)


class CountDistinct(Aggregator):
    """COUNT(DISTINCT x) and APPROX_COUNT_DISTINCT(x) (computed exactly).

    Values get persistent ids (as group keys do); the state is a sorted array
    of ``slot << 32 | value id`` pairs plus a count per slot. Partial states
    carry the distinct values of each slot as a list column.
    """

    kind = "count_distinct"

    def __init__(self, name: str, call: AggCall, arg_type: pa.DataType | None) -> None:
        super().__init__(name, call, arg_type)
        self.fields = {"n": (np.int64, 0)}
        self.encoder: ColumnEncoder = make_encoder(arg_type or pa.int64())
        self.pairs = np.empty(0, dtype=np.int64)

    @property
    def out_type(self) -> pa.DataType:
        return pa.int64()

    def update(self, g: Grouping, args: list[pa.Array]) -> None:
        arr = g.arrow(args[0])
        ids = self.encoder.encode(arr)
        inv = g.inv
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            ids, inv = ids[valid], inv[valid]
        if len(ids) == 0:
            return
        # Distinct (local group, value) pairs first: a bincount when the
        # product of the ranges is small, else a sort.
        span = g.size * self.encoder.count
        local = inv * self.encoder.count + ids
        if span <= max(16 * len(ids), 1 << 20):
            pairs = np.flatnonzero(np.bincount(local, minlength=span))
        else:
            pairs = np.unique(local)
        group, value = np.divmod(pairs, self.encoder.count)
        self._insert(np.sort((g.slots[group] << 32) | value), distinct=True)

    def _insert(self, codes: np.ndarray, distinct: bool = False) -> None:
        uniq = codes if distinct else np.unique(codes)
        pos = np.searchsorted(self.pairs, uniq)
        known = pos < len(self.pairs)
        known[known] = self.pairs[pos[known]] == uniq[known]
        new = uniq[~known]
        if len(new):
            self.pairs = np.insert(self.pairs, pos[~known], new)
            np.add.at(self.state["n"], new >> 32, 1)

    def reset(self, slots: np.ndarray) -> None:
        super().reset(slots)
        if len(self.pairs):
            self.pairs = self.pairs[~np.isin(self.pairs >> 32, slots)]

    def extract(self, slots: np.ndarray) -> Partial:
        sel = self.pairs[np.isin(self.pairs >> 32, slots)]
        order = np.argsort(slots, kind="stable")
        where = order[np.searchsorted(slots[order], sel >> 32)]  # position of each pair's slot
        by_pos = np.argsort(where, kind="stable")
        offsets = np.zeros(len(slots) + 1, dtype=np.int32)
        np.cumsum(np.bincount(where, minlength=len(slots)), out=offsets[1:])
        values = self.encoder.decode(sel[by_pos] & 0xFFFFFFFF)
        lists = pa.ListArray.from_arrays(pa.array(offsets), values)
        return {"n": self.state["n"][slots].copy(), "values": lists}

    def merge(self, slots: np.ndarray, part: Partial) -> None:
        lists: pa.ListArray = part["values"]
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        values = pc.list_flatten(lists)
        if len(values):
            self._insert((slots[parents] << 32) | self.encoder.encode(values))

    def load(self, columns: dict[str, pa.Array]) -> Partial:
        return {"n": columns["n"].to_numpy(zero_copy_only=False), "values": columns["values"]}

    def result(self, slots: np.ndarray) -> pa.Array:
        return pa.array(self.state["n"][slots], pa.int64())


#: Canonical aggregate name -> aggregator class.
AGGREGATORS: dict[str, Callable[[str, AggCall, pa.DataType | None], Aggregator]] = {
    "count_star": CountStar,
    "count": Count,
    "sum": Sum,
    "avg": Avg,
    "min": MinMax,
    "max": MinMax,
    "var_samp": Variance,
    "var_pop": Variance,
    "stddev_samp": Variance,
    "stddev_pop": Variance,
    "first": FirstLast,
    "last": FirstLast,
    "approx_count_distinct": CountDistinct,
}


def make_aggregator(name: str, call: AggCall, arg_type: pa.DataType | None) -> Aggregator:
    """The aggregator for ``call`` over an argument of ``arg_type``."""
    fn = call.fn
    if fn == "count" and call.distinct:
        return CountDistinct(name, call, arg_type)
    if call.distinct and fn not in ("min", "max", "approx_count_distinct"):
        raise UnsupportedError(
            f"{fn.upper()}(DISTINCT ...) is not supported; use COUNT(DISTINCT ...)"
        )
    if fn not in AGGREGATORS:
        raise PlanError(f"unknown aggregate function '{fn}'")
    if fn != "count_star" and not call.args:
        raise PlanError(f"{fn.upper()} needs an argument")
    if fn.startswith(("var", "stddev")) and arg_type is not None and not _var_input(arg_type):
        raise PlanError(f"{fn.upper()} needs a number, got {arg_type}")
    return AGGREGATORS[fn](name, call, arg_type)


def _var_input(t: pa.DataType) -> bool:
    t = t.value_type if pa.types.is_dictionary(t) else t
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_null(t)
    )
