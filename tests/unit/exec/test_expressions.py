"""Scalar expression evaluation: every canonical function, NULL handling,
decimals, coercion, dictionary inputs, and a differential test against DuckDB."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, localcontext
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsql.errors import ExecutionError, PlanError, UnsupportedError
from flowsql.exec.expressions import compile_expr, evaluate
from flowsql.exec.functions import FUNCTIONS
from flowsql.plan.expr import SCALAR_FUNCTIONS, Call, Case, Cast, Col, Expr, Lit

NULL = Lit(None, pa.null())


def L(value: Any, type_: pa.DataType | None = None) -> Lit:
    """A literal with the type Arrow infers for ``value`` (or the given type)."""
    return Lit(value, type_ if type_ is not None else pa.scalar(value).type)


def D(text: str, precision: int, scale: int) -> Lit:
    return Lit(Decimal(text), pa.decimal128(precision, scale))


def C(fn: str, *args: Expr) -> Call:
    return Call(fn, tuple(args))


def run(expr: Expr, **columns: Any) -> list[Any]:
    """Evaluate over a batch built from keyword columns (lists or Arrow arrays)."""
    arrays = {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()}
    batch = pa.record_batch(arrays) if arrays else pa.record_batch({"_": pa.array([0])})
    return evaluate(expr, batch).to_pylist()


def one(expr: Expr) -> Any:
    """Value of a constant expression."""
    return run(expr)[0]


# ---------------------------------------------------------------- basics


def test_every_canonical_function_is_implemented() -> None:
    assert set(FUNCTIONS) == set(SCALAR_FUNCTIONS)


def test_literals_are_broadcast_to_the_batch_length() -> None:
    batch = pa.record_batch({"x": pa.array([1, 2, 3])})
    out = compile_expr(L("a"))(batch)
    assert isinstance(out, pa.Array) and out.to_pylist() == ["a", "a", "a"]
    assert compile_expr(C("add", L(1), L(2)))(batch).to_pylist() == [3, 3, 3]
    assert compile_expr(NULL)(batch.slice(0, 0)).to_pylist() == []


def test_compiled_expression_is_reusable_across_batches_and_schemas() -> None:
    fn = compile_expr(C("mul", Col("x"), L(2)))
    assert fn(pa.record_batch({"x": pa.array([1, 2])})).to_pylist() == [2, 4]
    assert fn(pa.record_batch({"x": pa.array([1.5])})).to_pylist() == [3.0]


def test_unknown_function_and_bad_arity_fail_at_compile_time() -> None:
    with pytest.raises(UnsupportedError, match="unknown function 'nope'"):
        compile_expr(C("nope", L(1)))
    with pytest.raises(PlanError, match="ABS does not take 2"):
        compile_expr(C("abs", L(1), L(2)))


def test_unknown_column_names_it_with_a_hint() -> None:
    with pytest.raises(ExecutionError, match="column 'pricee'.*did you mean 'price'"):
        run(Col("pricee"), price=[1.0])


def test_type_errors_name_the_function_and_types() -> None:
    with pytest.raises(ExecutionError, match=r"UPPER\(int64\)"):
        run(C("upper", Col("x")), x=[1])
    with pytest.raises(ExecutionError, match=r"ADD\(string, bool\)"):
        run(C("add", Col("s"), Col("b")), s=["a"], b=[True])
    with pytest.raises(ExecutionError, match=r"AND\(int64"):
        run(C("and", Col("x"), L(True)), x=[1])


# ---------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(7, 2, 3), (-7, 2, -3), (7, -2, -3), (-7, -2, 3), (1, 3, 0), (5, 0, None), (None, 2, None)],
)
def test_integer_division_truncates_toward_zero_and_zero_gives_null(a, b, expected) -> None:
    assert run(C("div", Col("a"), Col("b")), a=pa.array([a], pa.int64()), b=[b]) == [expected]


def test_division_by_a_decimal_column_with_zeros() -> None:
    dec = pa.array([Decimal("1.50"), Decimal("0.00"), None], pa.decimal128(5, 2))
    assert run(C("div", Col("d"), Col("d")), d=dec)[1:] == [None, None]
    assert run(C("mod", Col("i"), Col("d")), i=[3, 3, 3], d=dec) == [Decimal("0.00"), None, None]


def test_division_by_zero_is_null_for_every_numeric_type() -> None:
    assert run(C("div", Col("f"), L(0)), f=[1.5, None]) == [None, None]
    assert run(C("div", Col("f"), Col("z")), f=[1.5, 3.0], z=[0.0, 2.0]) == [None, 1.5]
    assert one(C("div", D("1.50", 3, 2), D("0", 1, 0))) is None
    assert run(C("mod", Col("a"), Col("b")), a=[7, 7], b=[0, 4]) == [None, 3]


def test_modulo_takes_the_sign_of_the_dividend() -> None:
    assert run(C("mod", Col("a"), L(3)), a=[7, -7, 0]) == [1, -1, 0]
    assert run(C("mod", Col("f"), L(2.0)), f=[7.5, -7.5]) == [1.5, -1.5]


def test_integer_overflow_raises_instead_of_wrapping() -> None:
    with pytest.raises(ExecutionError, match="MUL"):
        run(C("mul", Col("a"), L(2**62)), a=[4])


def test_mixed_numeric_types_promote() -> None:
    assert run(C("add", Col("a"), L(0.5)), a=[1]) == [1.5]
    out = evaluate(C("add", Col("i"), Col("f")), pa.record_batch({"i": [1], "f": [0.25]}))
    assert out.type == pa.float64()


def test_unary_minus_abs_and_null_propagation() -> None:
    assert run(C("neg", Col("a")), a=[1, None, -3]) == [-1, None, 3]
    assert run(C("abs", Col("a")), a=[-1, None, 3]) == [1, None, 3]
    assert run(C("add", Col("a"), NULL), a=[1, 2]) == [None, None]
    assert one(C("mul", NULL, L(2))) is None


# ---------------------------------------------------------------- decimals


def test_decimal_multiplication_is_exact() -> None:
    batch = pa.record_batch({"p": pa.array([Decimal("123.45")], pa.decimal128(5, 2))})
    out = evaluate(C("mul", Col("p"), D("67.89", 4, 2)), batch)
    assert pa.types.is_decimal128(out.type)
    assert out.to_pylist() == [Decimal("8381.0205")]
    assert str(out[0].as_py()) == "8381.0205"


def test_decimal_with_integer_stays_decimal_and_with_float_becomes_float() -> None:
    dec = pa.array([Decimal("1.05"), Decimal("-2.50")], pa.decimal128(5, 2))
    plus_int = evaluate(C("add", Col("d"), L(1)), pa.record_batch({"d": dec}))
    assert pa.types.is_decimal(plus_int.type)
    assert plus_int.to_pylist() == [Decimal("2.05"), Decimal("-1.50")]
    times_col = evaluate(C("mul", Col("d"), Col("i")), pa.record_batch({"d": dec, "i": [3, 4]}))
    assert times_col.to_pylist() == [Decimal("3.15"), Decimal("-10.00")]
    plus_float = evaluate(C("add", Col("d"), L(0.5)), pa.record_batch({"d": dec}))
    assert plus_float.type == pa.float64()
    assert plus_float.to_pylist() == [1.55, -2.0]


def test_decimal_results_wider_than_38_digits_stay_exact() -> None:
    wide = pa.array([Decimal("123456789012345678901234567890.12")], pa.decimal128(38, 2))
    out = evaluate(C("mul", Col("w"), D("1.25", 3, 2)), pa.record_batch({"w": wide}))
    assert out.type == pa.decimal128(38, 4)  # exact scale kept
    assert out.to_pylist() == [Decimal("154320986265432098626543209862.6500")]
    summed = evaluate(C("add", Col("w"), Col("w")), pa.record_batch({"w": wide}))
    assert summed.to_pylist() == [Decimal("246913578024691357802469135780.24")]


def test_decimal_overflow_raises() -> None:
    big = pa.array([Decimal("9" * 36)], pa.decimal128(38, 0))
    with pytest.raises(ExecutionError, match="MUL"):
        run(C("mul", Col("w"), Col("w")), w=big)


def test_decimal_division_and_comparison() -> None:
    dec = pa.array([Decimal("123.45")], pa.decimal128(5, 2))
    assert run(C("div", Col("d"), L(2)), d=dec) == [Decimal("61.725")]
    assert run(C("gt", Col("d"), L(100)), d=dec) == [True]
    assert run(C("eq", Col("d"), D("123.450", 6, 3)), d=dec) == [True]
    assert run(C("lt", Col("d"), L(123.5)), d=dec) == [True]


_DECIMALS = st.decimals(
    min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False
)


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(_DECIMALS, min_size=1, max_size=20),
    b_scale=st.integers(0, 6),
    a_scale=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_decimal_add_sub_mul_match_python_decimal(a, a_scale, b_scale, seed) -> None:
    rng = np.random.default_rng(seed)
    quant_a = Decimal(1).scaleb(-a_scale)
    quant_b = Decimal(1).scaleb(-b_scale)
    left = [x.quantize(quant_a) for x in a]
    right = [Decimal(int(v)).scaleb(-b_scale) for v in rng.integers(-(10**15), 10**15, len(a))]
    right = [x.quantize(quant_b) for x in right]
    batch = pa.record_batch(
        {
            "a": pa.array(left, pa.decimal128(20, a_scale)),
            "b": pa.array(right, pa.decimal128(22, b_scale)),
        }
    )
    with localcontext() as ctx:
        ctx.prec = 100
        for fn, op in (
            ("add", Decimal.__add__),
            ("sub", Decimal.__sub__),
            ("mul", Decimal.__mul__),
        ):
            out = evaluate(C(fn, Col("a"), Col("b")), batch)
            assert pa.types.is_decimal128(out.type)
            assert out.to_pylist() == [op(x, y) for x, y in zip(left, right, strict=True)]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(_DECIMALS, min_size=1, max_size=10), k=st.integers(-(10**9), 10**9))
def test_decimal_plus_times_integer_match_python_decimal(values, k) -> None:
    vals = [v.quantize(Decimal("0.001")) for v in values]
    batch = pa.record_batch({"a": pa.array(vals, pa.decimal128(18, 3))})
    with localcontext() as ctx:
        ctx.prec = 100
        assert run_batch(C("add", Col("a"), L(k)), batch) == [v + k for v in vals]
        assert run_batch(C("mul", Col("a"), L(k)), batch) == [v * k for v in vals]


def run_batch(expr: Expr, batch: pa.RecordBatch) -> list[Any]:
    return evaluate(expr, batch).to_pylist()


# ---------------------------------------------------------------- rounding


def test_round_half_away_from_zero_for_floats() -> None:
    halves = [0.5, 1.5, 2.5, -0.5, -2.5, None]
    assert run(C("round", Col("f")), f=halves) == [1.0, 2.0, 3.0, -1.0, -3.0, None]
    assert run(C("round", Col("f"), L(2)), f=[0.125, -0.125, 0.375]) == [0.13, -0.13, 0.38]


def test_round_half_away_from_zero_for_decimals_and_integers() -> None:
    dec = pa.array(
        [Decimal(s) for s in ("2.345", "-2.345", "99.995", "0.005")], pa.decimal128(5, 3)
    )
    out = evaluate(C("round", Col("d"), L(2)), pa.record_batch({"d": dec}))
    assert out.type == pa.decimal128(5, 2)
    assert out.to_pylist() == [Decimal(s) for s in ("2.35", "-2.35", "100.00", "0.01")]
    assert run(C("round", Col("d")), d=dec) == [Decimal(s) for s in ("2", "-2", "100", "0")]
    assert run(C("round", Col("i"), L(-1)), i=[15, -15, 14]) == [20, -20, 10]
    assert run(C("round", Col("i")), i=[7]) == [7]


def test_floor_and_ceil() -> None:
    assert run(C("floor", Col("f")), f=[1.5, -1.5, None]) == [1.0, -2.0, None]
    assert run(C("ceil", Col("f")), f=[1.5, -1.5, None]) == [2.0, -1.0, None]
    dec = pa.array([Decimal("9.5"), Decimal("-0.5")], pa.decimal128(2, 1))
    assert run(C("ceil", Col("d")), d=dec) == [Decimal("10"), Decimal("0")]
    assert run(C("floor", Col("d")), d=dec) == [Decimal("9"), Decimal("-1")]
    assert run(C("floor", Col("i")), i=[3]) == [3]


# ---------------------------------------------------------------- logic


T, F, N = True, False, None
_KLEENE = [(T, T), (T, F), (T, N), (F, T), (F, F), (F, N), (N, T), (N, F), (N, N)]


def test_and_or_not_three_valued_logic() -> None:
    a = pa.array([x for x, _ in _KLEENE], pa.bool_())
    b = pa.array([y for _, y in _KLEENE], pa.bool_())
    assert run(C("and", Col("a"), Col("b")), a=a, b=b) == [T, F, N, F, F, F, N, F, N]
    assert run(C("or", Col("a"), Col("b")), a=a, b=b) == [T, T, T, T, F, N, T, N, N]
    assert run(C("not", Col("a")), a=pa.array([T, F, N])) == [F, T, N]
    assert run(C("and", Col("a"), NULL), a=pa.array([T, F])) == [N, F]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("eq", [F, T, F, N]),
        ("ne", [T, F, T, N]),
        ("lt", [T, F, F, N]),
        ("le", [T, T, F, N]),
        ("gt", [F, F, T, N]),
        ("ge", [F, T, T, N]),
    ],
)
def test_comparisons_with_null(fn, expected) -> None:
    assert run(C(fn, Col("x"), L(2)), x=[1, 2, 3, None]) == expected


def test_is_null_and_is_not_null() -> None:
    assert run(C("is_null", Col("x")), x=[1, None]) == [F, T]
    assert run(C("is_not_null", Col("x")), x=[1, None]) == [T, F]
    assert one(C("is_null", NULL)) is True
    with_null_value = pa.DictionaryArray.from_arrays(pa.array([0, 1, None]), pa.array(["a", None]))
    assert run(C("is_null", Col("k")), k=with_null_value) == [F, T, T]


def test_in_and_not_in_with_nulls() -> None:
    x = pa.array([1, 3, None])
    assert run(C("in", Col("x"), L(1), L(2)), x=x) == [T, F, N]
    assert run(C("in", Col("x"), L(1), NULL), x=x) == [T, N, N]
    assert run(C("not_in", Col("x"), L(1), L(2)), x=x) == [F, T, N]
    assert run(C("not_in", Col("x"), L(1), NULL), x=x) == [F, N, N]
    assert run(C("in", Col("x"), L(1.0), L(2.5)), x=x) == [T, F, N]
    assert run(C("in", Col("x"), Col("y"), L(3)), x=x, y=[1, 0, 0]) == [T, T, N]
    assert run(C("in", Col("s"), L("a"), L(1)), s=["a", "1", "b"]) == [T, T, F]


def test_between_is_inclusive() -> None:
    assert run(C("between", Col("x"), L(1), L(3)), x=[0, 1, 2, 3, 4, None]) == [F, T, T, T, F, N]
    assert run(C("between", Col("x"), NULL, L(3)), x=[5, 1]) == [F, N]


def test_like_wildcards() -> None:
    s = ["apple", "apply", "maple", "ap", None, "a_b", "A%"]
    assert run(C("like", Col("s"), L("ap%")), s=s) == [T, T, F, T, N, F, F]
    assert run(C("like", Col("s"), L("%pl_")), s=s) == [T, T, T, F, N, F, F]
    assert run(C("like", Col("s"), L("a\\_b")), s=s) == [F, F, F, F, N, T, F]
    assert run(C("not_like", Col("s"), L("ap%")), s=s) == [F, F, T, F, N, T, T]
    patterns = {"s": ["ab", "ab", "cd"], "p": ["a%", "%c", None]}
    assert run(C("like", Col("s"), Col("p")), **patterns) == [T, F, N]


def test_coalesce_and_nullif() -> None:
    cols = {"a": [1, None, None], "b": [9, 2, None]}
    assert run(C("coalesce", Col("a"), Col("b"), L(0)), **cols) == [1, 2, 0]
    assert run(C("coalesce", Col("a"), L(0.5)), a=[1, None]) == [1.0, 0.5]
    assert run(C("coalesce", NULL, L("x"))) == ["x"]
    assert run(C("nullif", Col("a"), L(1)), a=[1, 2, None]) == [None, 2, None]


# ---------------------------------------------------------------- coercion


def test_literals_are_cast_to_the_column_type() -> None:
    assert run(C("eq", Col("x"), L("2")), x=[1, 2]) == [F, T]
    assert run(C("eq", Col("s"), L(2)), s=["1", "2"]) == [F, T]
    assert run(C("gt", Col("f"), L("1.5")), f=[1.0, 2.0]) == [F, T]
    assert run(C("add", Col("x"), L("1")), x=[1]) == [2]
    with pytest.raises(ExecutionError, match=r"EQ\(int64, string\): cannot convert .abc."):
        run(C("eq", Col("x"), L("abc")), x=[1])


def test_timestamps_compare_with_epoch_ms_integers_and_iso_strings() -> None:
    ts = pa.array([0, 1500], pa.timestamp("ms"))
    assert run(C("ge", Col("t"), L(1000)), t=ts) == [F, T]
    assert run(C("ge", Col("t"), L("1970-01-01T00:00:01")), t=ts) == [F, T]
    assert run(C("in", Col("t"), L(1500)), t=ts) == [F, T]


# ---------------------------------------------------------------- strings


def test_upper_lower_length_count_characters() -> None:
    s = ["héllo", "ÄbC", None, ""]
    assert run(C("upper", Col("s")), s=s) == ["HÉLLO", "ÄBC", None, ""]
    assert run(C("lower", Col("s")), s=s) == ["héllo", "äbc", None, ""]
    assert run(C("length", Col("s")), s=s) == [5, 3, None, 0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((2, 3), "éll"),
        ((1,), "héllo"),
        ((3,), "llo"),
        ((0, 2), "h"),
        ((-1, 3), "h"),
        ((4, 10), "lo"),
        ((9, 2), ""),
        ((2, 0), ""),
    ],
)
def test_substring_is_one_based(args, expected) -> None:
    assert run(C("substring", Col("s"), *(L(a) for a in args)), s=["héllo"]) == [expected]


def test_substring_with_column_positions_and_null_arguments() -> None:
    cols = {"s": ["abcd"] * 3, "p": [1, 3, None]}
    assert run(C("substring", Col("s"), Col("p"), L(2)), **cols) == ["ab", "cd", None]
    assert run(C("substring", Col("s"), NULL), s=["abc"]) == [None]
    with pytest.raises(ExecutionError, match="negative length"):
        run(C("substring", Col("s"), L(1), L(-1)), s=["abc"])


def test_concat_skips_nulls_and_concat_operator_propagates_them() -> None:
    cols = {"a": ["x", None, None], "b": ["y", "z", None]}
    assert run(C("concat", Col("a"), L("-"), Col("b")), **cols) == ["x-y", "-z", "-"]
    assert run(C("concat_op", Col("a"), L("-"), Col("b")), **cols) == ["x-y", None, None]
    assert run(C("concat", Col("a"), Col("n")), a=["n=", "m="], n=[1, None]) == ["n=1", "m="]
    assert run(C("concat_op", Col("a"), Col("n")), a=["n=", "m="], n=[1, None]) == ["n=1", None]


def test_trim_variants() -> None:
    s = ["  a b  ", None]
    assert run(C("trim", Col("s")), s=s) == ["a b", None]
    assert run(C("ltrim", Col("s")), s=s) == ["a b  ", None]
    assert run(C("rtrim", Col("s")), s=s) == ["  a b", None]
    assert run(C("trim", Col("s"), L("xy")), s=["xyaxy"]) == ["a"]


def test_replace() -> None:
    assert run(C("replace", Col("s"), L("a"), L("XY")), s=["banana", None]) == ["bXYnXYnXY", None]
    assert run(C("replace", Col("s"), L(""), L("!")), s=["ab"]) == ["ab"]
    cols = {"s": ["ab", "ab"], "f": ["a", "b"]}
    assert run(C("replace", Col("s"), Col("f"), L("_")), **cols) == ["_b", "a_"]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, ["a", "", None, "solo"]),
        (2, ["b", "", None, ""]),
        (3, ["", "", None, ""]),
        (-1, ["b", "", None, "solo"]),
    ],
)
def test_split_part_out_of_range_is_empty(n, expected) -> None:
    assert run(C("split_part", Col("s"), L(","), L(n)), s=["a,b", "", None, "solo"]) == expected


def test_split_part_multichar_delimiter_and_zero_position() -> None:
    assert run(C("split_part", Col("s"), L("::"), L(2)), s=["a::b::c"]) == ["b"]
    with pytest.raises(ExecutionError, match="must not be zero"):
        run(C("split_part", Col("s"), L(","), L(0)), s=["a"])


def test_regexp_replace_first_match_by_default_all_with_g() -> None:
    s = ["banana", None]
    assert run(C("regexp_replace", Col("s"), L("a"), L("o")), s=s) == ["bonana", None]
    assert run(C("regexp_replace", Col("s"), L("a"), L("o"), L("g")), s=s) == ["bonono", None]
    assert run(C("regexp_replace", Col("s"), L("(b)(a)"), L("\\2\\1")), s=s) == ["abnana", None]
    assert run(C("regexp_replace", Col("s"), L("A"), L("o"), L("gi")), s=s) == ["bonono", None]
    with pytest.raises(ExecutionError, match="unknown flag"):
        run(C("regexp_replace", Col("s"), L("a"), L("o"), L("q")), s=s)


# ---------------------------------------------------------------- dictionary inputs

_WORDS = ["Apple", " pear ", "a,b,c", None, "Apple", "héllo", "a,b,c"]
_DICT_EXPRS = [
    C("upper", Col("s")),
    C("lower", Col("s")),
    C("length", Col("s")),
    C("substring", Col("s"), L(2), L(2)),
    C("trim", Col("s")),
    C("replace", Col("s"), L("p"), L("P")),
    C("split_part", Col("s"), L(","), L(2)),
    C("regexp_replace", Col("s"), L("[aeiou]"), L("_"), L("g")),
    C("like", Col("s"), L("%p%")),
    C("eq", Col("s"), L("Apple")),
    C("lt", L("b"), Col("s")),
    C("in", Col("s"), L("Apple"), L("héllo")),
    C("between", Col("s"), L("A"), L("b")),
    C("is_null", Col("s")),
    C("coalesce", Col("s"), L("?")),
    C("concat", Col("s"), L("!")),
    C("concat_op", Col("s"), Col("s")),
    C("nullif", Col("s"), L("Apple")),
    C("json_value", Col("s"), L("$.a")),
    Case(((C("eq", Col("s"), L("Apple")), Col("s")),), L("other")),
    Cast(Col("s"), pa.string()),
]


@pytest.mark.parametrize("expr", _DICT_EXPRS, ids=lambda e: getattr(e, "fn", type(e).__name__))
def test_dictionary_encoded_input_gives_the_same_values(expr) -> None:
    plain = pa.array(_WORDS)
    expected = run(expr, s=plain)
    assert run(expr, s=plain.dictionary_encode()) == expected


@pytest.mark.parametrize("expr", _DICT_EXPRS[:12], ids=lambda e: getattr(e, "fn", "case"))
def test_slice_of_a_large_dictionary_array(expr) -> None:
    words = pa.array([f"w{i}" for i in range(500)] + _WORDS)
    encoded = words.dictionary_encode().slice(500)  # dictionary far longer than the slice
    assert run(expr, s=encoded) == run(expr, s=pa.array(_WORDS))


def test_string_function_over_dictionary_stays_encoded_with_a_unique_dictionary() -> None:
    words = pa.array(["a", "b", "a"]).dictionary_encode()
    out = evaluate(C("upper", Col("s")), pa.record_batch({"s": words}))
    assert pa.types.is_dictionary(out.type)
    mixed = pa.array(["a", "A", None]).dictionary_encode()
    collapsed = evaluate(C("upper", Col("s")), pa.record_batch({"s": mixed}))
    assert pa.types.is_dictionary(collapsed.type)  # same output type whatever the data
    assert collapsed.dictionary.to_pylist() == ["A"]  # re-encoded: no duplicate entries
    assert collapsed.to_pylist() == ["A", "A", None]
    docs = pa.array(['{"a": 1}', "{}"]).dictionary_encode()
    values = evaluate(C("json_value", Col("j"), L("$.a")), pa.record_batch({"j": docs}))
    assert values.to_pylist() == ["1", None]
    assert values.is_null().to_pylist() == [False, True]  # NULL lives in the indices


# ---------------------------------------------------------------- time

_T0 = 1700000000123  # 2023-11-14 22:13:20.123 UTC, a Tuesday
_EXTRACT = {
    "YEAR": [2023, 1969],
    "MONTH": [11, 12],
    "DAY": [14, 31],
    "HOUR": [22, 23],
    "MINUTE": [13, 59],
    "SECOND": [20, 59],
    "MILLISECOND": [123, 999],
    "DOW": [2, 3],
    "DOY": [318, 365],
    "EPOCH": [1700000000, -1],
    "WEEK": [46, 1],
    "QUARTER": [4, 4],
}


@pytest.mark.parametrize(("unit", "expected"), _EXTRACT.items())
def test_extract_from_epoch_ms_timestamp_and_string(unit, expected) -> None:
    ms = pa.array([_T0, -1, None], pa.int64())
    assert run(C("extract", L(unit), Col("t")), t=ms) == [*expected, None]
    assert run(C("extract", L(unit), Col("t")), t=ms.cast(pa.timestamp("ms"))) == [*expected, None]
    iso = pa.array(["2023-11-14T22:13:20.123", "1969-12-31 23:59:59.999", None])
    assert run(C("extract", L(unit.lower()), Col("t")), t=iso) == [*expected, None]


def test_extract_rejects_unknown_units() -> None:
    with pytest.raises(ExecutionError, match="unknown unit 'fortnight'"):
        run(C("extract", L("fortnight"), Col("t")), t=[0])


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("second", dt.datetime(2023, 11, 14, 22, 13, 20)),
        ("minute", dt.datetime(2023, 11, 14, 22, 13)),
        ("hour", dt.datetime(2023, 11, 14, 22)),
        ("day", dt.datetime(2023, 11, 14)),
        ("week", dt.datetime(2023, 11, 13)),
        ("month", dt.datetime(2023, 11, 1)),
        ("quarter", dt.datetime(2023, 10, 1)),
        ("year", dt.datetime(2023, 1, 1)),
    ],
)
def test_date_trunc_keeps_the_input_kind(unit, expected) -> None:
    epoch_ms = int(expected.replace(tzinfo=dt.UTC).timestamp() * 1000)
    ms = pa.array([_T0, None], pa.int64())
    out = evaluate(C("date_trunc", L(unit.upper()), Col("t")), pa.record_batch({"t": ms}))
    assert out.type == pa.int64() and out.to_pylist() == [epoch_ms, None]
    ts = ms.cast(pa.timestamp("ms"))
    out = evaluate(C("date_trunc", L(unit), Col("t")), pa.record_batch({"t": ts}))
    assert out.type == pa.timestamp("ms") and out.to_pylist() == [expected, None]


def test_date_trunc_of_negative_epoch_ms_rounds_down() -> None:
    out = run(C("date_trunc", L("second"), Col("t")), t=[-1, -1000, -1001])
    assert out == [-1000, -1000, -2000]


def test_to_timestamp_and_from_unixtime() -> None:
    out = evaluate(C("to_timestamp", Col("t")), pa.record_batch({"t": [_T0, None]}))
    assert out.type == pa.timestamp("ms")
    assert out.to_pylist() == [dt.datetime(2023, 11, 14, 22, 13, 20, 123000), None]
    iso = [
        "2024-01-02T03:04:05Z",
        "2024-01-02 03:04:05.5",
        "2024-01-02T04:04:05+01:00",
        "junk",
        None,
    ]
    assert run(C("to_timestamp", Col("s")), s=iso) == [
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 500000),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        None,
        None,
    ]
    unix = evaluate(C("from_unixtime", Col("s")), pa.record_batch({"s": [1700000000, None]}))
    assert unix.type == pa.timestamp("ms")
    assert unix.to_pylist() == [dt.datetime(2023, 11, 14, 22, 13, 20), None]
    assert run(C("from_unixtime", Col("s")), s=[1.5]) == [dt.datetime(1970, 1, 1, 0, 0, 1, 500000)]


# ---------------------------------------------------------------- json

_DOCS = [
    '{"a": {"b": [10, {"c": "deep"}], "n": null}, "s": "x", "f": 1.5, "t": true, "k y": 7}',
    '{"a": "scalar"}',
    "not json",
    None,
]


@pytest.mark.parametrize(
    ("path", "value", "extract"),
    [
        ("$.s", ["x", None, None, None], ['"x"', None, None, None]),
        ("$.a.b[0]", ["10", None, None, None], ["10", None, None, None]),
        ("$.a.b[1].c", ["deep", None, None, None], ['"deep"', None, None, None]),
        (
            "$.a",
            [None, "scalar", None, None],
            ['{"b":[10,{"c":"deep"}],"n":null}', '"scalar"', None, None],
        ),
        ("$.a.n", [None, None, None, None], ["null", None, None, None]),
        ("$.f", ["1.5", None, None, None], ["1.5", None, None, None]),
        ("$.t", ["true", None, None, None], ["true", None, None, None]),
        ("$['k y']", ["7", None, None, None], ["7", None, None, None]),
        ("$.missing", [None, None, None, None], [None, None, None, None]),
        ("$.a.b[5]", [None, None, None, None], [None, None, None, None]),
    ],
)
def test_json_value_and_extract(path, value, extract) -> None:
    assert run(C("json_value", Col("j"), L(path)), j=_DOCS) == value
    assert run(C("json_extract", Col("j"), L(path)), j=_DOCS) == extract


def test_json_over_dictionary_and_column_paths() -> None:
    docs = pa.array(['{"a": 1}', '{"a": 2}', '{"a": 1}']).dictionary_encode()
    assert run(C("json_value", Col("j"), L("$.a")), j=docs) == ["1", "2", "1"]
    cols = {"j": ['{"a":1,"b":2}'] * 3, "p": ["$.a", "$.b", None]}
    assert run(C("json_value", Col("j"), Col("p")), **cols) == ["1", "2", None]
    with pytest.raises(ExecutionError, match="JSON path"):
        run(C("json_value", Col("j"), L("$.a[*]")), j=['{"a": 1}'])


# ---------------------------------------------------------------- case / cast


def test_case_picks_the_first_true_branch_null_conditions_are_not_true() -> None:
    expr = Case(
        ((C("gt", Col("x"), L(0)), L("pos")), (C("lt", Col("x"), L(0)), L("neg"))),
        L("zero"),
    )
    assert run(expr, x=[1, -1, 0, None]) == ["pos", "neg", "zero", "zero"]
    no_default = Case(((C("gt", Col("x"), L(0)), Col("x")),))
    assert run(no_default, x=[5, -5]) == [5, None]


def test_case_unifies_branch_types() -> None:
    expr = Case(((C("gt", Col("x"), L(0)), Col("x")),), L(0.5))
    assert run(expr, x=[2, -2]) == [2.0, 0.5]
    dec = Case(((C("gt", Col("x"), L(0)), D("1.25", 3, 2)),), L(1))
    assert run(dec, x=[1, -1]) == [Decimal("1.25"), Decimal("1.00")]


def test_cast_semantics() -> None:
    assert run(Cast(Col("f"), pa.int64()), f=[1.5, 2.5, -2.5, 2.6, None]) == [2, 2, -2, 3, None]
    halves = pa.array([Decimal("2.5"), Decimal("-2.5")], pa.decimal128(3, 1))
    assert run(Cast(Col("d"), pa.int64()), d=halves) == [3, -3]
    assert run(Cast(Col("s"), pa.int64()), s=["12", None]) == [12, None]
    out = run(Cast(Col("s"), pa.decimal128(5, 2)), s=["1.255", "3"])
    assert out == [Decimal("1.26"), Decimal("3.00")]
    assert run(Cast(Col("f"), pa.decimal128(6, 2)), f=[2.675]) == [Decimal("2.68")]
    assert run(Cast(Col("i"), pa.timestamp("ms")), i=[1000]) == [dt.datetime(1970, 1, 1, 0, 0, 1)]
    ts = pa.array([1500], pa.timestamp("ms"))
    assert run(Cast(Col("t"), pa.int64()), t=ts) == [1500]
    iso = ["2024-01-01T00:00:00Z"]
    assert run(Cast(Col("s"), pa.timestamp("ms")), s=iso) == [dt.datetime(2024, 1, 1)]
    assert run(Cast(Col("i"), pa.string()), i=[7, None]) == ["7", None]
    with pytest.raises(ExecutionError, match=r"CAST\(string AS int64\)"):
        run(Cast(Col("s"), pa.int64()), s=["x"])
    with pytest.raises(ExecutionError, match="CAST"):
        run(Cast(Col("s"), pa.timestamp("ms")), s=["junk"])


# ---------------------------------------------------------------- differential vs DuckDB


def _duck_table(n: int = 300) -> pa.Table:
    rng = np.random.default_rng(7)
    words = ["apple", "Banana", "cherry pie", " kiwi ", "a,b,c", "x,y", "héllo", "", "mango"]

    def with_nulls(values: list[Any]) -> list[Any]:
        return [None if rng.random() < 0.1 else v for v in values]

    return pa.table(
        {
            "a": pa.array(with_nulls(rng.integers(-50, 50, n).tolist()), pa.int64()),
            "b": pa.array(with_nulls(rng.integers(-5, 6, n).tolist()), pa.int64()),
            "f": pa.array(with_nulls((rng.integers(-2000, 2000, n) / 8).tolist()), pa.float64()),
            "d": pa.array(
                with_nulls([Decimal(int(v)).scaleb(-2) for v in rng.integers(-99999, 99999, n)]),
                pa.decimal128(7, 2),
            ),
            "s": pa.array(with_nulls(rng.choice(words, n).tolist())),
            "t": pa.array(with_nulls(rng.choice(words, n).tolist())),
            "ts": pa.array(with_nulls(rng.integers(-(10**11), 2 * 10**12, n).tolist()), pa.int64()),
            "j": pa.array(
                with_nulls(
                    [
                        f'{{"a": {{"b": [{int(v)}, "w{int(v) % 3}"]}}, "c": "z"}}'
                        for v in rng.integers(0, 9, n)
                    ]
                )
            ),
        }
    )


_STRING_FNS = ("upper", "lower", "length", "trim", "ltrim", "rtrim")
_PARTS = ("year", "month", "day", "hour", "minute", "second", "dow", "doy", "week", "quarter")
_DIFFERENTIAL: list[tuple[str, Expr]] = [
    ("a + b", C("add", Col("a"), Col("b"))),
    ("a - b * 3", C("sub", Col("a"), C("mul", Col("b"), L(3)))),
    ("a // b", C("div", Col("a"), Col("b"))),
    ("a % b", C("mod", Col("a"), Col("b"))),
    ("-a", C("neg", Col("a"))),
    ("abs(f)", C("abs", Col("f"))),
    ("f * 2.5 - a", C("sub", C("mul", Col("f"), L(2.5)), Col("a"))),
    ("d * d", C("mul", Col("d"), Col("d"))),
    ("d + a", C("add", Col("d"), Col("a"))),
    ("d - 1.25", C("sub", Col("d"), D("1.25", 3, 2))),
    ("round(f)", C("round", Col("f"))),
    ("round(f, 1)", C("round", Col("f"), L(1))),
    ("round(d, 1)", C("round", Col("d"), L(1))),
    ("floor(f)", C("floor", Col("f"))),
    ("ceil(d)", C("ceil", Col("d"))),
    ("a > b", C("gt", Col("a"), Col("b"))),
    ("a <> 3", C("ne", Col("a"), L(3))),
    ("(a > 0) AND (b > 0)", C("and", C("gt", Col("a"), L(0)), C("gt", Col("b"), L(0)))),
    ("(a > 0) OR (b > 0)", C("or", C("gt", Col("a"), L(0)), C("gt", Col("b"), L(0)))),
    ("NOT (a > 0)", C("not", C("gt", Col("a"), L(0)))),
    ("a IS NULL", C("is_null", Col("a"))),
    ("b IN (1, 2, NULL)", C("in", Col("b"), L(1), L(2), NULL)),
    ("b NOT IN (1, 2)", C("not_in", Col("b"), L(1), L(2))),
    ("a BETWEEN -10 AND 10", C("between", Col("a"), L(-10), L(10))),
    ("s LIKE '%an%'", C("like", Col("s"), L("%an%"))),
    ("s NOT LIKE '_a%'", C("not_like", Col("s"), L("_a%"))),
    ("coalesce(a, b, 0)", C("coalesce", Col("a"), Col("b"), L(0))),
    ("nullif(b, 0)", C("nullif", Col("b"), L(0))),
    *[(f"{fn}(s)", C(fn, Col("s"))) for fn in _STRING_FNS],
    ("substring(s, 2, 3)", C("substring", Col("s"), L(2), L(3))),
    ("substring(s, 3)", C("substring", Col("s"), L(3))),
    ("concat(s, '-', t)", C("concat", Col("s"), L("-"), Col("t"))),
    ("s || t", C("concat_op", Col("s"), Col("t"))),
    ("replace(s, 'a', 'A')", C("replace", Col("s"), L("a"), L("A"))),
    ("split_part(s, ',', 2)", C("split_part", Col("s"), L(","), L(2))),
    ("regexp_replace(s, '[aeiou]', '_')", C("regexp_replace", Col("s"), L("[aeiou]"), L("_"))),
    (
        "regexp_replace(s, '[aeiou]', '_', 'g')",
        C("regexp_replace", Col("s"), L("[aeiou]"), L("_"), L("g")),
    ),
    *[(f"extract({u} from epoch_ms(ts))", C("extract", L(u.upper()), Col("ts"))) for u in _PARTS],
    ("millisecond(epoch_ms(ts)) % 1000", C("extract", L("MILLISECOND"), Col("ts"))),
    ("floor(epoch(epoch_ms(ts)))::BIGINT", C("extract", L("EPOCH"), Col("ts"))),
    ("epoch_ms(date_trunc('hour', epoch_ms(ts)))", C("date_trunc", L("hour"), Col("ts"))),
    ("epoch_ms(date_trunc('week', epoch_ms(ts)))", C("date_trunc", L("week"), Col("ts"))),
    (
        "date_trunc('month', epoch_ms(ts))",
        C("date_trunc", L("month"), C("to_timestamp", Col("ts"))),
    ),
    ("epoch_ms(ts)", C("to_timestamp", Col("ts"))),
    ("to_timestamp(a)::TIMESTAMP", C("from_unixtime", Col("a"))),
    ("json_extract_string(j, '$.a.b[1]')", C("json_value", Col("j"), L("$.a.b[1]"))),
    ("json_extract(j, '$.a')::VARCHAR", C("json_extract", Col("j"), L("$.a"))),
    (
        "CASE WHEN a > 0 THEN 'pos' WHEN a < 0 THEN 'neg' ELSE 'zero' END",
        Case(((C("gt", Col("a"), L(0)), L("pos")), (C("lt", Col("a"), L(0)), L("neg"))), L("zero")),
    ),
    ("CAST(f AS BIGINT)", Cast(Col("f"), pa.int64())),
    ("CAST(d AS BIGINT)", Cast(Col("d"), pa.int64())),
    ("CAST(f AS DECIMAL(9, 1))", Cast(Col("f"), pa.decimal128(9, 1))),
    ("d / 4", C("div", Col("d"), L(4))),
    ("CAST(a AS VARCHAR)", Cast(Col("a"), pa.string())),
]


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, Decimal) and isinstance(theirs, float):  # DuckDB divides decimals as DOUBLE
        ours = float(ours)
    if isinstance(ours, float) and isinstance(theirs, float):
        return math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(ours, Decimal) or isinstance(theirs, Decimal):
        return ours is not None and theirs is not None and Decimal(ours) == Decimal(theirs)
    return bool(ours == theirs)


@pytest.mark.parametrize(("sql", "expr"), _DIFFERENTIAL, ids=[s for s, _ in _DIFFERENTIAL])
def test_matches_duckdb(sql, expr) -> None:
    table = _duck_table()
    con = duckdb.connect()
    con.execute("SET error_on_division_by_zero = false")
    con.register("tbl", table)
    theirs = [row[0] for row in con.execute(f"SELECT {sql} FROM tbl").fetchall()]
    ours = evaluate(expr, table.combine_chunks().to_batches()[0]).to_pylist()
    mismatches = [
        (i, o, t)
        for i, (o, t) in enumerate(zip(ours, theirs, strict=True))
        if not (o is t is None or _same(o, t))
    ]
    assert not mismatches, f"{sql}: first mismatches (row, ours, duckdb): {mismatches[:5]}"
