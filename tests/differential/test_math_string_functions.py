"""The math and string function families against DuckDB, over random inputs
with NULLs, NaN, infinities, signed zeros, negatives, empty strings and
boundary values, at batch sizes 1, 7 and 10,000; V2 gives V1's rows.

Where flowsql deliberately differs from DuckDB the DuckDB side spells out
flowsql's rule: TRIM strips all whitespace (DuckDB: spaces only), INITCAP
(missing in DuckDB) is checked against a Python model of the rule.
"""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowsql

from .harness import BATCH_SIZES, check_differential, run_flowsql

NAN, INF = float("nan"), float("inf")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SPECIAL_FLOATS = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 1e308, -1e308, 5e-324]
_SPECIAL_INTS = [0, 1, -1, 2, -2, 10, 17, -17, 100, 2**31 - 1, -(2**31)]
_WHITESPACE = " \t\n\r\x0b\x0c"
_STRINGS = [
    "",
    " ",
    "\t a b \n",
    "hello wORLD",
    "o'neil 1st",
    "a-b c_d x.y",
    "  lead",
    "trail \t",
    "ÉCOLE été",
    "x2y",
    "42",
    "__",
]


#: Characters for generated strings (one-to-one case mappings only: Python
#: upper-cases 'ß' to 'SS', Arrow to 'ẞ').
_ALPHABET = "aBcXyZ019 _-.'\t\néÉàÖ中"


def _table(seed: int, n: int = 400) -> pa.Table:
    rng = random.Random(seed)

    def maybe(value: object) -> object:
        return None if rng.random() < 0.1 else value

    def f() -> float:
        r = rng.random()
        if r < 0.3:
            return rng.choice(_SPECIAL_FLOATS)
        if r < 0.6:
            return rng.uniform(-2, 2)
        return rng.uniform(-1e6, 1e6)

    def i() -> int:
        return rng.choice(_SPECIAL_INTS) if rng.random() < 0.4 else rng.randint(-1000, 1000)

    def s() -> str:
        if rng.random() < 0.5:
            return rng.choice(_STRINGS)
        alphabet = "abcXYZ -_.'1é\t\n"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    return pa.table(
        {
            "id": list(range(n)),
            "x": pa.array([maybe(f()) for _ in range(n)], pa.float64()),
            "y": pa.array([maybe(f()) for _ in range(n)], pa.float64()),
            "i": pa.array([maybe(i()) for _ in range(n)], pa.int64()),
            "s": pa.array([maybe(s()) for _ in range(n)], pa.string()),
            "u": pa.array([maybe(s()) for _ in range(n)], pa.string()),
            "sep": pa.array([maybe(rng.choice(["", ",", " - "])) for _ in range(n)], pa.string()),
        }
    )


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _table(12)


UNARY_MATH = [
    "EXP",
    "LN",
    "LOG",
    "LOG10",
    "LOG2",
    "SQRT",
    "CBRT",
    "SIN",
    "COS",
    "TAN",
    "ASIN",
    "ACOS",
    "ATAN",
    "DEGREES",
    "RADIANS",
    "SIGN",
    "TRUNC",
]


@pytest.mark.parametrize("fn", UNARY_MATH)
def test_unary_math(fn: str, table: pa.Table) -> None:
    exprs = f"id, {fn}(x) AS fx, {fn}(i) AS fi"
    if fn == "TRUNC":  # DuckDB keeps INTEGER; flowsql's integers are BIGINT
        exprs = "id, TRUNC(x) AS fx, TRUNC(i) AS fi"
    check_differential(f"SELECT {exprs} FROM t", table, f"SELECT {exprs} FROM t")


@pytest.mark.parametrize(
    "exprs",
    [
        "POWER(x, y) AS p, POW(i, 2) AS p2, POWER(x, 0.5) AS p3, POWER(i, -1) AS p4",
        "ATAN2(x, y) AS a, ATAN2(i, x) AS b",
        "LOG(2, x) AS l2, LOG(y, x) AS lb, LOG(i, 8.0) AS li",
        "TRUNC(x, 2) AS t2, TRUNC(x, -2) AS tm2, TRUNC(x, 0) AS t0, TRUNC(i, -1) AS ti",
        "PI() AS pi, PI() * x AS px",
        "SIGN(x - y) AS sd, SIGN(-0.0) AS sz, SIGN(CAST('nan' AS DOUBLE)) AS sn",
    ],
)
def test_binary_math(exprs: str, table: pa.Table) -> None:
    sql = f"SELECT id, {exprs} FROM t"
    check_differential(sql, table, sql)


def test_trunc_decimal() -> None:
    table = pa.table({"d": pa.array([None, 2.789, -2.789, 0.0, 999.999], pa.float64())})
    sql = "SELECT d, TRUNC(CAST(d AS DECIMAL(6, 3))) AS t, TRUNC(CAST(d AS DECIMAL(6, 3)), 2) AS t2 FROM t"
    check_differential(sql, table, sql)


@pytest.mark.parametrize(
    "exprs",
    [
        "CONCAT_WS(',', s, u) AS c",
        "CONCAT_WS(sep, s, u, i) AS c",
        "CONCAT_WS(' ', s, NULL, u, i) AS c",
        "CONCAT_WS('-', NULL, NULL) AS c",
        "CONCAT(s, u) AS c, CONCAT(s, NULL) AS c2",
        "UPPER(s) AS up, LOWER(s) AS lo, LENGTH(s) AS n",
    ],
)
def test_strings(exprs: str, table: pa.Table) -> None:
    sql = f"SELECT id, {exprs} FROM t"
    check_differential(sql, table, sql)


def test_trim_strips_whitespace(table: pa.Table) -> None:
    chars = "".join(f"chr({ord(c)})" + " || " for c in _WHITESPACE)[:-4]
    sql = "SELECT id, TRIM(s) AS a, LTRIM(s) AS b, RTRIM(s) AS c, TRIM(LEADING FROM s) AS d FROM t"
    duck = (
        f"SELECT id, trim(s, {chars}) AS a, ltrim(s, {chars}) AS b, "
        f"rtrim(s, {chars}) AS c, ltrim(s, {chars}) AS d FROM t"
    )
    check_differential(sql, table, duck)


def test_trim_given_characters(table: pa.Table) -> None:
    sql = (
        "SELECT id, TRIM(s, 'a ') AS a, LTRIM(s, 'x_') AS b, RTRIM(s, '-') AS c, "
        "TRIM(BOTH 'ab' FROM s) AS d, TRIM(TRAILING ' ' FROM s) AS e FROM t"
    )
    check_differential(sql, table, sql)


def _initcap_model(s: str | None) -> str | None:
    """Flink's/PostgreSQL's rule: a word is a run of letters and digits."""
    if s is None:
        return None
    out, in_word = [], False
    for ch in s:
        out.append(ch.lower() if in_word else ch.upper())
        in_word = ch.isalnum()
    return "".join(out)


def test_initcap(table: pa.Table) -> None:
    want = [{"id": r["id"], "c": _initcap_model(r["s"])} for r in table.to_pylist()]
    for bs in BATCH_SIZES:
        got = run_flowsql("SELECT id, INITCAP(s) AS c FROM t", table, bs)
        assert got == want, bs


def test_initcap_dictionary_and_constants() -> None:
    table = pa.table({"s": pa.array(["ab cd", None, "ab cd", "x1y"]).dictionary_encode()})
    got = flowsql.query("SELECT INITCAP(s) AS c, INITCAP('mIxED up') AS k FROM t", {"t": table})
    assert got.column("c").to_pylist() == ["Ab Cd", None, "Ab Cd", "X1y"]
    assert got.column("k").to_pylist() == ["Mixed Up"] * 4


@SETTINGS
@given(
    st.lists(
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        min_size=1,
        max_size=30,
    )
)
def test_math_property(values: list[float | None]) -> None:
    table = pa.table({"x": pa.array(values, pa.float64()), "id": list(range(len(values)))})
    sql = (
        "SELECT id, EXP(x) AS e, LN(x) AS l, SQRT(x) AS q, CBRT(x) AS c, SIGN(x) AS g, "
        "TRUNC(x, 1) AS t, ASIN(x) AS a, DEGREES(x) AS d FROM t"
    )
    check_differential(sql, table, sql, batch_sizes=(1, 7))


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text(_ALPHABET, max_size=8)), min_size=1, max_size=20))
def test_string_property(values: list[str | None]) -> None:
    table = pa.table({"s": pa.array(values, pa.string()), "id": list(range(len(values)))})
    sql = "SELECT id, CONCAT_WS('|', s, s) AS w, CONCAT(s, 'x') AS c FROM t"
    check_differential(sql, table, sql, batch_sizes=(1, 7))
    got = run_flowsql("SELECT id, INITCAP(s) AS c FROM t", table, 7)
    assert [r["c"] for r in got] == [_initcap_model(v) for v in values]


def test_domain_errors_are_nan_not_errors() -> None:
    table = pa.table({"x": [-1.0, 0.0, 2.0]})
    row = flowsql.query(
        "SELECT LN(x) AS l, SQRT(x) AS q, ASIN(x) AS a, LOG(x) AS g FROM t", {"t": table}
    ).to_pylist()
    assert math.isnan(row[0]["l"]) and row[1]["l"] == -INF
    assert math.isnan(row[0]["q"]) and math.isnan(row[2]["a"]) and row[1]["g"] == -INF
