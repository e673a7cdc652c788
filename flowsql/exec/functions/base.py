"""Shared machinery of the scalar kernels: the ``Datum`` value, the function
registry entry, dictionary handling and per-parameter evaluation.

A kernel receives its arguments already evaluated, as Arrow arrays or scalars
(a scalar is a constant: a literal or an expression over literals), and
returns an array or a scalar. Kernels never loop over records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError

#: A kernel argument or result: a column of values or one constant value.
Datum = Union[pa.Array, pa.Scalar]  # noqa: UP007 - used at runtime in isinstance checks
Kernel = Callable[[list[Datum]], Datum]

#: How a function treats dictionary-encoded arguments.
#: ``"unary"``: the result of a row depends only on the first argument's value
#: (other arguments constant), so the kernel runs once over the dictionary and
#: the result is mapped back through the indices.
#: ``"decode"``: dictionary arguments are decoded first.
#: ``"raw"``: the kernel copes with dictionaries itself.
DictMode = Literal["unary", "decode", "raw"]


@dataclass(frozen=True)
class Function:
    """One canonical scalar function: its kernel and accepted argument count."""

    name: str
    kernel: Kernel
    min_args: int
    max_args: int | None = None  # None = unbounded
    dict_mode: DictMode = "decode"

    def accepts(self, n: int) -> bool:
        """Whether ``n`` arguments are allowed."""
        return n >= self.min_args and (self.max_args is None or n <= self.max_args)

    def apply(self, args: list[Datum]) -> Datum:
        """Run the kernel, handling dictionary-encoded arguments per ``dict_mode``."""
        if self.dict_mode == "raw":
            return self.kernel(args)
        first = args[0]
        if (
            self.dict_mode == "unary"
            and by_dictionary(first)
            and all(is_scalar(a) for a in args[1:])
        ):
            return map_dictionary(first, lambda values: self.kernel([values, *args[1:]]))
        return self.kernel([decode(a) for a in args])


def is_scalar(value: Datum) -> bool:
    """True for a constant (``pa.Scalar``)."""
    return isinstance(value, pa.Scalar)


def by_dictionary(value: Datum) -> bool:
    """Whether to compute over the dictionary of ``value`` instead of its rows:
    it is dictionary-encoded and its dictionary is not larger than the batch
    (a slice of a big array can carry a dictionary far longer than itself)."""
    return isinstance(value, pa.DictionaryArray) and len(value.dictionary) <= max(len(value), 64)


def decode(value: Datum) -> Datum:
    """Plain values for a dictionary-encoded array (anything else unchanged)."""
    if isinstance(value, pa.DictionaryArray):
        return value.dictionary_decode()
    if isinstance(value, pa.DictionaryScalar):
        return value.value if value.is_valid else pa.scalar(None, value.type.value_type)
    return value


def map_dictionary(
    arr: pa.DictionaryArray, fn: Callable[[pa.Array], Datum], *, keep_encoding: bool = True
) -> pa.Array:
    """Apply an element-wise ``fn`` to the distinct values of ``arr`` only.

    With ``keep_encoding`` a string result stays dictionary-encoded (so the
    output type depends only on the input type, and grouping by it stays
    cheap); its dictionary is re-encoded when ``fn`` mapped two values to one
    or produced NULLs, so the dictionary stays unique and NULLs live in the
    indices. Other results are gathered through the indices.
    """
    result = fn(arr.dictionary)
    if isinstance(result, pa.Scalar):
        result = pa.repeat(result, len(arr.dictionary))
    if pa.types.is_boolean(result.type) and result.null_count == 0:
        return _select_indices(arr.indices, result)
    if not (keep_encoding and is_string_type(result.type)):
        return result.take(arr.indices)
    if _unique_and_valid(result):
        return pa.DictionaryArray.from_arrays(arr.indices, result)
    encoded = pc.dictionary_encode(result)
    return pa.DictionaryArray.from_arrays(encoded.indices.take(arr.indices), encoded.dictionary)


def _select_indices(indices: pa.Array, hits: pa.BooleanArray) -> pa.Array:
    """Rows whose dictionary entry is TRUE in ``hits``, by comparing the integer
    indices (much cheaper than gathering booleans); NULL rows stay NULL."""
    positions = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
    if len(positions) == 0:
        return pc.equal(indices, pa.scalar(-1, indices.type))
    if len(positions) == 1:
        return pc.equal(indices, pa.scalar(int(positions[0]), indices.type))
    return hits.take(indices)


def _unique_and_valid(values: pa.Array) -> bool:
    return values.null_count == 0 and pc.count_distinct(values).as_py() == len(values)


def is_string_type(t: pa.DataType) -> bool:
    """String-like Arrow type (utf8 and its large/view variants)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_numeric_type(t: pa.DataType) -> bool:
    """Integer, floating point or decimal."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def type_names(args: Sequence[Datum]) -> str:
    """Comma-separated argument types, for error messages."""
    return ", ".join(str(a.type) for a in args)


def fail(fn: str, args: Sequence[Datum], why: str) -> ExecutionError:
    """An error naming the function (upper-case, as in SQL) and its argument types."""
    return ExecutionError(f"{fn.upper()}({type_names(args)}): {why}")


def constant(value: Datum, fn: str, what: str) -> Any:
    """The Python value of an argument that must be constant (a unit, a flag)."""
    if not isinstance(value, pa.Scalar):
        raise ExecutionError(f"{fn.upper()}: {what} must be a constant, got a column")
    return decode(value).as_py()


def null_of(t: pa.DataType) -> pa.Scalar:
    """A typed NULL."""
    return pa.scalar(None, t)


def as_array(value: Datum) -> pa.Array:
    """A length-1 array for a scalar; arrays unchanged."""
    if isinstance(value, pa.Scalar):
        return pa.array([value.as_py()], value.type)
    return value


def scalar_kernel(fn: Callable[[list[pa.Array]], pa.Array]) -> Kernel:
    """Wrap an array-only kernel so it also accepts all-scalar arguments
    (evaluated on length-1 arrays, returned as a scalar)."""

    def run(args: list[Datum]) -> Datum:
        if all(is_scalar(a) for a in args):
            return fn([as_array(a) for a in args])[0]
        n = next(len(a) for a in args if not is_scalar(a))
        return fn([a if not is_scalar(a) else pa.repeat(a, n) for a in args])

    return run


def per_constant(
    fn: Callable[[pa.Array, list[Any]], pa.Array],
    subject: pa.Array,
    params: list[Datum],
    out_type: pa.DataType,
) -> pa.Array:
    """Run ``fn(subject, constants)`` once per distinct combination of the
    parameter values, for kernels whose Arrow implementation needs constant
    options (patterns, positions) but were given columns.

    Rows whose parameters are NULL get NULL. The work is one vectorized call
    per distinct parameter combination, not per record.
    """
    n = len(subject)
    cols = [pa.repeat(p, n) if is_scalar(p) else decode(p) for p in params]
    table = pa.table({f"p{i}": c for i, c in enumerate(cols)})
    combos = table.group_by([f"p{i}" for i in range(len(cols))]).aggregate([]).to_pylist()
    out = pa.nulls(n, out_type)
    for combo in combos:
        values = list(combo.values())
        if any(v is None for v in values):
            continue
        mask = _rows_matching(cols, values)
        out = pc.if_else(mask, fn(subject, values), out)
    return out


def _rows_matching(cols: list[pa.Array], values: list[Any]) -> pa.Array:
    mask = np.ones(len(cols[0]), dtype=bool)
    for col, value in zip(cols, values, strict=True):
        eq = pc.fill_null(pc.equal(col, pa.scalar(value, col.type)), False)
        mask &= eq.to_numpy(zero_copy_only=False)
    return pa.array(mask)
