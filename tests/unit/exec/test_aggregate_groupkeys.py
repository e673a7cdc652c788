"""Group keys -> persistent dense ids, and back to values."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsql.exec.groupkeys import DENSE_LIMIT, GroupKeys, IntIdMap, PairIdMap


@given(st.lists(st.lists(st.integers(-(2**40), 2**40), max_size=30), min_size=1, max_size=6))
def test_int_map_gives_stable_dense_ids(batches: list[list[int]]) -> None:
    m = IntIdMap()
    seen: dict[int, int] = {}
    for values in batches:
        ids = m.ids(np.array(values, dtype=np.int64))
        for v, i in zip(values, ids.tolist(), strict=True):
            assert seen.setdefault(v, i) == i
    assert sorted(seen.values()) == list(range(len(seen))) == list(range(m.count))
    assert all(m.values[i] == v for v, i in seen.items())


def test_int_map_switches_from_dense_to_sorted_keeping_ids() -> None:
    m = IntIdMap()
    first = m.ids(np.array([5, 7, 5]))
    null_id = m.reserve()
    far = m.ids(np.array([7, 5 + 2 * DENSE_LIMIT, 0]))
    assert first.tolist() == [0, 1, 0] and null_id == 2
    assert far.tolist() == [1, 4, 3]  # new values get ids in ascending order
    assert m.ids(np.array([0, 5])).tolist() == [3, 0], "the reserved id maps to no value"


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 70)), min_size=1, max_size=80))
@settings(max_examples=50)
def test_pair_map_restrides_without_changing_ids(pairs: list[tuple[int, int]]) -> None:
    m = PairIdMap()
    seen: dict[tuple[int, int], int] = {}
    for chunk in (pairs[: len(pairs) // 2], pairs[len(pairs) // 2 :]):
        a = np.array([p[0] for p in chunk], dtype=np.int64)
        b = np.array([p[1] for p in chunk], dtype=np.int64)
        for p, i in zip(chunk, m.ids(a, b).tolist(), strict=True):
            assert seen.setdefault(p, i) == i
    for p, i in seen.items():
        assert (m.left[i], m.right[i]) == p


COLUMNS = [
    pa.array(["x", None, "y", "x", ""], pa.string()),
    pa.array([3, None, -1, 3, 2**62], pa.int64()),
    pa.array([1.5, float("nan"), -0.0, 0.0, None], pa.float64()),
    pa.array([True, None, False, True, False]),
    pa.array(
        [datetime(2024, 1, 1), None, datetime(1969, 12, 31), datetime(2024, 1, 1), None],
        pa.timestamp("ms"),
    ),
    pa.array(
        [Decimal("1.10"), None, Decimal("-2.00"), Decimal("1.10"), Decimal("0")],
        pa.decimal128(6, 2),
    ),
    pa.array([b"a", b"b", None, b"a", b""], pa.binary()),
    pa.array(["p", "q", "p", None, "q"]).dictionary_encode(),
]


def test_every_key_type_round_trips_with_nulls_as_a_group() -> None:
    for col in COLUMNS:
        keys = GroupKeys(("k",))
        ids = keys.encode([col], len(col))
        again = keys.encode([col], len(col))
        assert np.array_equal(ids, again)
        (decoded,) = keys.decode(ids)
        want = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
        got, exp = decoded.to_pylist(), want.to_pylist()
        for g, e in zip(got, exp, strict=True):
            assert g == e or (g != g and e != e), (col.type, got, exp)  # NaN == NaN here
        distinct = {repr(v) if v == v else "nan" for v in exp}
        distinct = {d.replace("-0.0", "0.0") for d in distinct}
        assert keys.count == len(distinct), col.type


def test_multi_column_keys_decode_per_column() -> None:
    keys = GroupKeys(("a", "b", "c"))
    cols = [COLUMNS[0], COLUMNS[1], COLUMNS[3]]
    ids = keys.encode(cols, 5)
    assert ids[0] == ids[3] and len(set(ids.tolist())) == 4
    decoded = keys.decode(ids)
    for got, want in zip(decoded, cols, strict=True):
        assert got.to_pylist() == want.to_pylist()


def test_no_keys_is_one_group() -> None:
    keys = GroupKeys(())
    assert keys.count == 0
    assert keys.encode([], 3).tolist() == [0, 0, 0] and keys.count == 1


def test_a_key_column_that_changes_type_is_cast() -> None:
    keys = GroupKeys(("k",))
    first = keys.encode([pa.array([1, 2], pa.int32())], 2)
    second = keys.encode([pa.array([2, 1], pa.int64())], 2)
    assert second.tolist() == first[::-1].tolist()


def test_equal_dictionaries_in_new_buffers_keep_ids() -> None:
    """Batches decoded from IPC carry equal dictionaries in new buffers: the
    ids stay the same (no per-value lookup), and a changed dictionary is
    still looked up value by value."""
    keys = GroupKeys(("k",))

    def batch(values: list[str], dictionary: list[str]) -> list[pa.Array]:
        indices = pa.array([dictionary.index(v) for v in values], pa.int32())
        return [pa.DictionaryArray.from_arrays(indices, pa.array(dictionary))]

    first = keys.encode(batch(["b", "a", "b"], ["a", "b"]), 3)
    again = keys.encode(batch(["a", "b"], ["a", "b"]), 2)  # equal values, new buffers
    changed = keys.encode(batch(["c", "b", "a"], ["b", "c", "a"]), 3)
    assert first.tolist() == [1, 0, 1]
    assert again.tolist() == [0, 1]
    assert changed.tolist() == [2, 1, 0]
    assert keys.count == 3
