"""Scalar expressions -> canonical Call/Lit/Case/Cast values."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from flowsql.errors import PlanError
from flowsql.plan.expr import SCALAR_FUNCTIONS, Call, Case, Cast, Col, Expr, Lit
from flowsql.plan.nodes import Filter, Project
from flowsql.sql import parse_one


def expr(sql: str) -> Expr:
    plan = parse_one(f"SELECT {sql} AS out FROM t").plan
    assert isinstance(plan, Project)
    return plan.exprs[0][1]


def i(v: int) -> Lit:
    return Lit(v, pa.int64())


def s(v: str) -> Lit:
    return Lit(v, pa.string())


A, B, C = Col("a"), Col("b"), Col("c")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("a + b", Call("add", (A, B))),
        ("a - b", Call("sub", (A, B))),
        ("a * b", Call("mul", (A, B))),
        ("a / b", Call("div", (A, B))),
        ("a % b", Call("mod", (A, B))),
        ("-a", Call("neg", (A,))),
        ("-5", i(-5)),
        ("a = b", Call("eq", (A, B))),
        ("a <> b", Call("ne", (A, B))),
        ("a != b", Call("ne", (A, B))),
        ("a < b", Call("lt", (A, B))),
        ("a <= b", Call("le", (A, B))),
        ("a > b", Call("gt", (A, B))),
        ("a >= b", Call("ge", (A, B))),
        ("a AND b OR c", Call("or", (Call("and", (A, B)), C))),
        ("NOT a", Call("not", (A,))),
        ("a IS NULL", Call("is_null", (A,))),
        ("a IS NOT NULL", Call("is_not_null", (A,))),
        ("a IN (1, 2)", Call("in", (A, i(1), i(2)))),
        ("a NOT IN (1, 2)", Call("not_in", (A, i(1), i(2)))),
        ("a BETWEEN 1 AND 2", Call("between", (A, i(1), i(2)))),
        ("a NOT BETWEEN 1 AND 2", Call("not", (Call("between", (A, i(1), i(2))),))),
        ("a LIKE 'x%'", Call("like", (A, s("x%")))),
        ("a NOT LIKE 'x%'", Call("not_like", (A, s("x%")))),
        ("(a + b) * c", Call("mul", (Call("add", (A, B)), C))),
        ("COALESCE(a, b, 0)", Call("coalesce", (A, B, i(0)))),
        ("NULLIF(a, 0)", Call("nullif", (A, i(0)))),
        ("ABS(a)", Call("abs", (A,))),
        ("ROUND(a)", Call("round", (A,))),
        ("ROUND(a, 2)", Call("round", (A, i(2)))),
        ("FLOOR(a)", Call("floor", (A,))),
        ("CEIL(a)", Call("ceil", (A,))),
        ("CEILING(a)", Call("ceil", (A,))),
        ("UPPER(a)", Call("upper", (A,))),
        ("LOWER(a)", Call("lower", (A,))),
        ("LENGTH(a)", Call("length", (A,))),
        ("CHAR_LENGTH(a)", Call("length", (A,))),
        ("SUBSTRING(a, 2)", Call("substring", (A, i(2)))),
        ("SUBSTRING(a, 2, 3)", Call("substring", (A, i(2), i(3)))),
        ("SUBSTRING(a FROM 2 FOR 3)", Call("substring", (A, i(2), i(3)))),
        ("SUBSTR(a, 2, 3)", Call("substring", (A, i(2), i(3)))),
        ("CONCAT(a, b, c)", Call("concat", (A, B, C))),
        ("a || b", Call("concat_op", (A, B))),
        ("TRIM(a)", Call("trim", (A,))),
        ("LTRIM(a)", Call("ltrim", (A,))),
        ("RTRIM(a)", Call("rtrim", (A,))),
        ("REPLACE(a, 'x', 'y')", Call("replace", (A, s("x"), s("y")))),
        ("SPLIT_PART(a, ',', 2)", Call("split_part", (A, s(","), i(2)))),
        ("REGEXP_REPLACE(a, 'x+', 'y')", Call("regexp_replace", (A, s("x+"), s("y")))),
        ("REGEXP_REPLACE(a, 'x', 'y', 'g')", Call("regexp_replace", (A, s("x"), s("y"), s("g")))),
        ("EXTRACT(HOUR FROM a)", Call("extract", (s("HOUR"), A))),
        ("EXTRACT(epoch FROM a)", Call("extract", (s("EPOCH"), A))),
        ("DATE_TRUNC('minute', a)", Call("date_trunc", (s("MINUTE"), A))),
        ("TO_TIMESTAMP(a)", Call("to_timestamp", (A,))),
        ("FROM_UNIXTIME(a)", Call("from_unixtime", (A,))),
        ("JSON_VALUE(a, '$.x.y[0]')", Call("json_value", (A, s("$.x.y[0]")))),
        ("JSON_EXTRACT(a, '$.x')", Call("json_extract", (A, s("$.x")))),
    ],
)
def test_scalar(sql: str, expected: Expr) -> None:
    got = expr(sql)
    assert got == expected
    if isinstance(got, Call):
        assert got.fn in SCALAR_FUNCTIONS


def test_literals() -> None:
    assert expr("42") == Lit(42, pa.int64())
    assert expr("'it''s'") == Lit("it's", pa.string())
    assert expr("TRUE") == Lit(True, pa.bool_())
    assert expr("FALSE") == Lit(False, pa.bool_())
    assert expr("NULL") == Lit(None, pa.null())
    assert expr("1.5e3") == Lit(1500.0, pa.float64())
    assert expr("123.45") == Lit(Decimal("123.45"), pa.decimal128(5, 2))
    assert expr("0.05") == Lit(Decimal("0.05"), pa.decimal128(2, 2))
    assert expr("-2.5") == Lit(Decimal("-2.5"), pa.decimal128(2, 1))


def test_decimal_literals_stay_exact() -> None:
    got = expr("123.45 * 67.89")
    assert isinstance(got, Call) and got.fn == "mul"
    left, right = got.args
    assert isinstance(left, Lit) and isinstance(right, Lit)
    assert left.value * right.value == Decimal("8381.0205")


@pytest.mark.parametrize(
    ("type_sql", "arrow"),
    [
        ("BIGINT", pa.int64()),
        ("INT", pa.int64()),
        ("INTEGER", pa.int64()),
        ("DOUBLE", pa.float64()),
        ("FLOAT", pa.float64()),
        ("VARCHAR", pa.string()),
        ("STRING", pa.string()),
        ("TEXT", pa.string()),
        ("BOOLEAN", pa.bool_()),
        ("DECIMAL(10, 2)", pa.decimal128(10, 2)),
        ("DECIMAL(12)", pa.decimal128(12, 0)),
        ("TIMESTAMP", pa.timestamp("ms")),
        ("DATE", pa.date32()),
    ],
)
def test_cast_types(type_sql: str, arrow: pa.DataType) -> None:
    assert expr(f"CAST(a AS {type_sql})") == Cast(A, arrow)


def test_case_searched_and_simple() -> None:
    assert expr("CASE WHEN a > 1 THEN 'hi' ELSE 'lo' END") == Case(
        ((Call("gt", (A, i(1))), s("hi")),), s("lo")
    )
    assert expr("CASE a WHEN 1 THEN 'one' WHEN 2 THEN 'two' END") == Case(
        ((Call("eq", (A, i(1))), s("one")), (Call("eq", (A, i(2))), s("two"))), None
    )


def test_expression_positions_are_recorded() -> None:
    plan = parse_one("SELECT a\nFROM t\nWHERE  b > 1").plan
    assert isinstance(plan, Project)
    where = plan.input
    assert isinstance(where, Filter)
    assert isinstance(where.predicate, Call)
    col = where.predicate.args[0]
    assert (col.pos.line, col.pos.column) == (3, 8)


def test_unknown_function_has_position_and_hint() -> None:
    with pytest.raises(PlanError, match="unknown function UPPR") as err:
        parse_one("SELECT a,\n   UPPR(a) FROM t")
    assert (err.value.line, err.value.column) == (2, 4)
    assert "UPPER" in err.value.hint


def test_is_true_is_never_null() -> None:
    true = Lit(True, pa.bool_())
    assert expr("a IS TRUE") == Call("coalesce", (Call("eq", (A, true)), Lit(False, pa.bool_())))
    assert expr("a IS NOT TRUE") == Call("not", (expr("a IS TRUE"),))


def test_quoted_identifiers_keep_case_and_spaces() -> None:
    plan = parse_one('SELECT `my col`, "Other" FROM `trades`').plan
    assert isinstance(plan, Project)
    assert plan.exprs == (("my col", Col("my col")), ("Other", Col("Other")))
