"""Syntax errors: line, column, token, hint; validate() keeps going."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowsql.errors import ConfigError, PlanError, SqlSyntaxError
from flowsql.sql import parse, parse_one, validate


def _syntax(sql: str) -> SqlSyntaxError:
    with pytest.raises(SqlSyntaxError) as err:
        parse(sql)
    return err.value


def test_misspelt_select_gets_a_hint() -> None:
    err = _syntax("SELEC a FROM t")
    assert (err.line, err.column, err.token) == (1, 1, "SELEC")
    assert "SELECT" in err.hint
    assert "^^^^^" in str(err)


def test_misspelt_from_gets_a_hint() -> None:
    err = _syntax("SELECT a\n  FORM t")
    assert (err.line, err.column, err.token) == (2, 3, "FORM")
    assert "FROM" in err.hint


def test_missing_from_points_at_the_next_clause() -> None:
    err = _syntax("SELECT a, b\nWHERE x > 1")
    assert "missing FROM" in err.message
    assert (err.line, err.column, err.token) == (2, 1, "WHERE")
    assert "FROM" in err.hint


def test_position_of_a_bad_token_on_a_later_line() -> None:
    err = _syntax("SELECT a,\n       b\nFROM t\nWHERE a = = 1")
    assert (err.line, err.column) == (4, 11)
    assert err.token == "="
    assert err.sql.startswith("SELECT a,")


def test_incomplete_where() -> None:
    err = _syntax("SELECT a FROM t\nWHERE")
    assert (err.line, err.column, err.token) == (2, 1, "WHERE")
    assert "WHERE" in err.hint


def test_unclosed_paren() -> None:
    err = _syntax("SELECT a FROM t WHERE (a > 1")
    assert "')'" in err.message
    assert err.line == 1


def test_unterminated_string_points_at_the_quote() -> None:
    err = _syntax("SELECT a FROM t\nWHERE s = 'abc")
    assert (err.line, err.column) == (2, 11)
    assert "unterminated string" in err.message


def test_bad_emit() -> None:
    err = _syntax("SELECT a FROM t EMIT SOON")
    assert (err.line, err.column, err.token) == (1, 22, "SOON")
    assert "CHANGES or FINAL" in err.message


def test_positions_in_a_later_statement_are_file_positions() -> None:
    err = _syntax("SELECT a FROM t;\n\nSELECT b FROM t\nWHERE")
    assert err.line == 4


def test_parse_one_wants_exactly_one_statement() -> None:
    with pytest.raises(SqlSyntaxError, match="exactly one statement"):
        parse_one("SELECT a FROM t; SELECT b FROM t")
    with pytest.raises(SqlSyntaxError, match="exactly one statement"):
        parse_one("-- nothing here\n")


def test_validate_reports_every_bad_statement() -> None:
    text = (
        "SELEC a FROM t;\n"
        "SELECT a FROM t;\n"
        "SELECT b FROM t WHERE;\n"
        "SELECT FOO(x) FROM t;\n"
        "SELECT COUNT(*) FROM t WINDOW TUMBLING(1s) WITH ('late.data.strategy'='x')"
    )
    errors = validate(text)
    assert [type(e) for e in errors] == [SqlSyntaxError, SqlSyntaxError, PlanError, ConfigError]
    lines = [getattr(e, "line", None) for e in errors]
    assert lines[:3] == [1, 3, 4]


def test_validate_of_good_sql_is_empty() -> None:
    assert validate("SELECT a FROM t; CREATE STREAM s AS SELECT b FROM u") == []


def test_str_marks_the_span() -> None:
    text = str(_syntax("SELECT a FROM t\nWHERE a = = 1"))
    assert "line 2, column 11" in text
    assert "  WHERE a = = 1\n" in text
    assert text.splitlines()[-2].strip() == "^"
    assert "operand" in text.splitlines()[-1]


@given(
    st.lists(st.sampled_from([" ", "\n", "\t", "-- note; 'x'\n", "/* c */"]), max_size=8),
    st.sampled_from([" ", "\n", "\n\n  "]),
)
def test_error_position_matches_the_text(prefix: list[str], gap: str) -> None:
    sql = "".join(prefix) + f"SELECT a,{gap}b FROM t WHERE a = = 1"
    err = _syntax(sql)
    offset = sql.rindex("= 1")
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    assert (err.line, err.column, err.token) == (line, column, "=")


@pytest.mark.parametrize("position", ["1.5e3", "1.5", "0.0"])
def test_order_by_position_that_is_not_a_whole_number(position: str) -> None:
    with pytest.raises(PlanError, match="a position must be a whole number"):
        parse_one(f"SELECT symbol FROM trades ORDER BY {position}")
