"""Nesting and depth limits of the SQL front end (issue 9).

At each limit a query parses, plans and runs; one level past it is a
:class:`SqlSyntaxError` at the offending token; never a ``RecursionError``,
whatever the construct or the mix. Long AND/OR chains run whatever their length.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsql import query
from flowsql.errors import FlowSQLError, SqlSyntaxError
from flowsql.sql import parse, validate
from flowsql.sql.statements import (
    MAX_EXPRESSION_DEPTH,
    MAX_NESTING,
    MAX_TYPE_NESTING,
    parse_tokens,
    read,
)

DATA = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "s": ["x", "y", "z"]})

#: Each construct nested ``n`` levels deep, as a whole query over t(a, s).
NESTED: dict[str, Callable[[int], str]] = {
    "parentheses": lambda n: f"SELECT {'(' * n}a{')' * n} AS x FROM t",
    "function calls": lambda n: f"SELECT {'ABS(' * n}a{')' * n} AS x FROM t",
    "two-argument calls": lambda n: f"SELECT {'COALESCE(' * n}a{', 1)' * n} AS x FROM t",
    "CASE": lambda n: f"SELECT {'CASE WHEN a > 0 THEN ' * n}a{' END' * n} AS x FROM t",
    "NOT": lambda n: f"SELECT a FROM t WHERE {'NOT ' * n}a > 5",
    "unary minus": lambda n: f"SELECT {'- ' * n}a AS x FROM t",
    "CAST": lambda n: f"SELECT {'CAST(' * n}a{' AS BIGINT)' * n} AS x FROM t",
}


def _syntax(sql: str) -> SqlSyntaxError:
    with pytest.raises(SqlSyntaxError) as err:
        parse(sql)
    return err.value


@pytest.mark.parametrize("construct", sorted(NESTED))
def test_at_the_limit_the_query_runs(construct: str) -> None:
    sql = NESTED[construct](MAX_NESTING)
    assert query(sql, {"t": DATA}).num_rows == (0 if construct == "NOT" else 3)


@pytest.mark.parametrize("construct", sorted(NESTED))
def test_past_the_limit_a_syntax_error_at_the_token(construct: str) -> None:
    sql = NESTED[construct](MAX_NESTING + 1)
    err = _syntax(sql)
    assert f"more than {MAX_NESTING} levels" in err.message
    assert err.line == 1 and err.column > 1 and err.token
    assert sql[err.column - 1 :].startswith(err.token)
    assert [str(e) for e in validate(sql)] == [str(err)]


@pytest.mark.parametrize("levels", [60, 2_000])
def test_far_past_the_limit_is_the_same_error(levels: int) -> None:
    for make in NESTED.values():
        assert "nested too deep" in _syntax(make(levels)).message


def test_prefix_operators_add_to_the_depth_of_what_follows() -> None:
    half = MAX_NESTING // 2
    assert query(f"SELECT a FROM t WHERE {'NOT (' * half}a > 0{')' * half}", {"t": DATA})
    _syntax(f"SELECT a FROM t WHERE {'NOT (' * (half + 1)}a > 0{')' * (half + 1)}")


def test_siblings_do_not_add_up() -> None:
    """Levels close again: many shallow expressions side by side are fine."""
    terms = " + ".join(f"ABS({'(' * 10}a{')' * 10})" for _ in range(30))
    where = " AND ".join(f"NOT a = {i}" for i in range(10, 110))
    assert query(f"SELECT {terms} AS x FROM t WHERE {where}", {"t": DATA}).num_rows == 3


@pytest.mark.parametrize("connector", ["OR", "AND"])
@pytest.mark.parametrize("terms", [400, 5_000])
def test_long_and_or_chains_run(connector: str, terms: int) -> None:
    if connector == "OR":
        where = " OR ".join(f"a = {i}" for i in range(2, terms + 2))
        expected = [2, 3]
    else:
        where = " AND ".join(f"a <> {i}" for i in range(3, terms + 3))
        expected = [1, 2]
    out = query(f"SELECT a FROM t WHERE {where}", {"t": DATA})
    assert out.column("a").to_pylist() == expected


def test_balanced_chain_keeps_the_terms_and_their_meaning() -> None:
    where = " OR ".join(f"(a = {i} AND s = '{c}')" for i, c in [(1, "x"), (2, "q"), (3, "z")] * 50)
    out = query(f"SELECT a, s FROM t WHERE {where} OR a IS NULL", {"t": DATA})
    assert out.to_pylist() == [{"a": 1, "s": "x"}, {"a": 3, "s": "z"}]


def test_expression_depth_limit() -> None:
    """A chain of ``+`` is as deep as it is long: it runs up to the limit (the
    SELECT and its alias take two levels), past it the error points at the item."""
    fits = " + ".join(["a"] * (MAX_EXPRESSION_DEPTH - 3))
    assert query(f"SELECT {fits} AS x FROM t", {"t": DATA}).column("x").to_pylist()[0] == len(
        fits.split(" + ")
    )
    err = _syntax("SELECT s,\n  " + " + ".join(["a"] * (MAX_EXPRESSION_DEPTH + 5)) + " AS x FROM t")
    assert f"more than {MAX_EXPRESSION_DEPTH} levels" in err.message
    assert (err.line, err.column, err.token) == (2, 3, "a")


def test_type_named_calls_are_limited() -> None:
    """sqlglot tries DATE(, ARRAY[... as a type first, then as a call: the time
    doubles per level (ARRAY[ nested 24 deep took hours)."""
    n = MAX_TYPE_NESTING
    body = " + ".join(["a"] * 100)
    parse_tokens(read(f"SELECT {'DATE(ABS(' * n}{body}{'))' * n} AS x FROM t")[0])
    err = _syntax(f"SELECT {'ARRAY[' * (n + 1)}a{']' * (n + 1)} FROM t")
    assert f"more than {n} nested calls named after a type" in err.message
    assert (err.column, err.token) == (len("SELECT ") + 6 * n + 6, "[")
    _syntax(f"SELECT {'ARRAY[' * MAX_NESTING}a{']' * MAX_NESTING} FROM t")  # at once


def test_a_caller_deep_in_its_own_stack_gets_a_clean_error() -> None:
    """The limits leave room for a caller's frames; one that took nearly all of
    them still gets a syntax error, not a RecursionError."""
    sql = NESTED["function calls"](MAX_NESTING)

    def nest(frames: int) -> None:
        if frames:
            nest(frames - 1)
        else:
            parse(sql)

    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    with pytest.raises(SqlSyntaxError, match="nested too deep"):
        nest(sys.getrecursionlimit() - depth - 60)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a FROM t WINDOW TUMBLING((1s))",
        "SELECT a FROM t WINDOW SLIDING(1s, (2s))",
        "SELECT a FROM t WINDOW TUMBLING(f(ts), 1s)",
        "SELECT a FROM t WITH (",
        "SELECT a FROM t WITH ('k' =",
        "SELECT a FROM t EMIT",
        "SELECT { : } FROM t",
        "SELECT ROW_NUMBER() . FROM t",
    ],
)
def test_malformed_clauses_are_syntax_errors(sql: str) -> None:
    err = _syntax(sql)
    assert err.line == 1


# -- fuzz ---------------------------------------------------------------------------

#: One level of nesting around ``x``, and how many levels it counts.
WRAPPERS: list[tuple[str, str, int]] = [
    ("(", ")", 1),
    ("ABS(", ")", 1),
    ("COALESCE(", ", 0)", 1),
    ("CASE WHEN a > 1 THEN ", " ELSE 0 END", 1),
    ("- (", ")", 2),
    ("CAST(", " AS BIGINT)", 1),
    ("(a + ", ")", 1),
]
CONDITIONS: list[tuple[str, str, int]] = [("NOT ", "", 1), ("NOT (", ")", 2), ("(", ")", 1)]


@st.composite
def nested_query(draw: st.DrawFn) -> tuple[str, int]:
    """A query nesting random wrappers (to about twice the limit) and its depth:
    the WHERE condition wraps the SELECT's expression in more levels."""
    levels = draw(st.lists(st.sampled_from(WRAPPERS), max_size=2 * MAX_NESTING))
    conditions = draw(st.lists(st.sampled_from(CONDITIONS), max_size=MAX_NESTING))
    expr = "a"
    for head, tail, _ in reversed(levels):
        expr = f"{head}{expr}{tail}"
    cond = f"{expr} > 0"
    for head, tail, _ in reversed(conditions):
        cond = f"{head}{cond}{tail}"
    depth = sum(w for _, _, w in levels) + sum(w for _, _, w in conditions)
    return f"SELECT {expr} AS x FROM t WHERE {cond}", depth


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested_query())
def test_fuzz_nesting_gives_rows_or_a_clean_error(case: tuple[str, int]) -> None:
    sql, depth = case
    try:
        out = query(sql, {"t": DATA})
    except SqlSyntaxError as err:
        assert depth > MAX_NESTING, err
        assert "nested too deep" in err.message and err.line == 1 and err.column > 0
    except FlowSQLError as err:  # a type error of the random mix, never a crash
        assert "nested too deep" not in str(err)
    else:
        assert depth <= MAX_NESTING
        assert out.num_rows <= 3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["(", ")", "NOT", "-", "CASE", "END", "a", "+", "[", "]"]), max_size=400
    )
)
def test_fuzz_token_soup_never_crashes(tokens: list[str]) -> None:
    with contextlib.suppress(FlowSQLError):
        parse(f"SELECT {' '.join(tokens)} AS x FROM t")
