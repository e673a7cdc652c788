"""The SQL front end: text -> sqlglot AST -> logical plan.

- :func:`parse` / :func:`parse_one`: SQL text to planned
  :class:`~flowsql.plan.nodes.Statement` values.
- :func:`validate`: every error of a file, statement by statement.
- :func:`bind`: check a statement against input schemas and expand ``SELECT *``.
"""

from __future__ import annotations

from flowsql.errors import FlowSQLError, SqlSyntaxError
from flowsql.plan import options
from flowsql.plan.nodes import Statement
from flowsql.sql.binder import bind
from flowsql.sql.dialect import FlowSQL
from flowsql.sql.planner import plan_statement
from flowsql.sql.statements import SourceStatement, parse_tokens, read, too_deep

__all__ = ["FlowSQL", "bind", "parse", "parse_one", "validate"]


def parse(text: str) -> list[Statement]:
    """Parse and plan every ``;``-separated statement of ``text``.

    Raises:
        SqlSyntaxError: text that cannot be parsed (line/column of the token).
        PlanError: a query that parses but cannot be planned.
        ConfigError: a bad WITH property value or an unknown WITH key.
    """
    statements: list[Statement] = []
    for item in read(text):
        if isinstance(item, SqlSyntaxError):
            raise item
        statements.append(_plan(item))
    return statements


def parse_one(text: str) -> Statement:
    """Parse and plan text holding exactly one statement.

    Raises:
        SqlSyntaxError: no statement, several statements, or bad syntax.
    """
    statements = parse(text)
    if len(statements) != 1:
        line = statements[1].line if len(statements) > 1 else 1
        raise SqlSyntaxError(
            f"expected exactly one statement, found {len(statements)}",
            line=line,
            column=1 if len(statements) > 1 else 0,
            sql=text,
            hint="separate files per query, or use parse() for several statements",
        )
    return statements[0]


def validate(text: str) -> list[FlowSQLError]:
    """Every error found in ``text``; parsing goes on after a bad statement."""
    errors: list[FlowSQLError] = []
    try:
        items = read(text)
    except SqlSyntaxError as err:
        return [err]
    for item in items:
        if isinstance(item, FlowSQLError):
            errors.append(item)
            continue
        try:
            _plan(item)
        except FlowSQLError as err:
            errors.append(err)
    return errors


def _plan(source: SourceStatement) -> Statement:
    try:
        statement = plan_statement(source, parse_tokens(source))
    except RecursionError:  # the limits of parse_tokens leave room; a deep caller may not
        raise too_deep(source) from None
    options.validate(statement)
    return statement
