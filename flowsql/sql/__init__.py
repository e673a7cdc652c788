"""The SQL front end: text -> sqlglot AST -> logical plan.

- :func:`parse` / :func:`parse_one`: SQL text to planned
  :class:`~flowsql.plan.nodes.Statement` values.
- :func:`validate`: every error of a file, statement by statement.
- :func:`bind`: check a statement against input schemas and expand ``SELECT *``.
"""

from __future__ import annotations

from flowsql.errors import FlowSQLError, PlanErrors, SqlSyntaxError
from flowsql.plan import options
from flowsql.plan.nodes import Statement
from flowsql.sql.binder import bind
from flowsql.sql.dialect import FlowSQL
from flowsql.sql.planner import plan_statement
from flowsql.sql.statements import (
    SourceStatement,
    check_annotations,
    parse_tokens,
    read,
    too_deep,
)

__all__ = ["FlowSQL", "bind", "parse", "parse_one", "validate"]


def parse(text: str, *, annotations: bool = False) -> list[Statement]:
    """Parse and plan every ``;``-separated statement of ``text``.

    ``annotations=True`` checks ``-- @job_mode`` / ``-- @num_partitions`` values
    too (``flowsql run`` and ``validate``; the server checks them per job as it
    deploys, with its own defaults).

    Raises:
        SqlSyntaxError: text that cannot be parsed (line/column of the token).
        PlanError: a query that parses but cannot be planned.
        ConfigError: a bad WITH property value or an unknown WITH key.
    """
    statements: list[Statement] = []
    for item in read(text):
        if isinstance(item, SqlSyntaxError):
            raise item
        statements.append(_plan(item, annotations=annotations))
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
    """Every error found in ``text``, in the order of the file: each statement is
    checked on its own, and within one its independent errors are all listed.

    The checks are those of :func:`parse` (which ``flowsql run`` and the server
    use), so what validates also plans, plus the annotation values that ``run``
    and the server check when they pick a processor
    (:func:`~flowsql.sql.statements.check_annotations`). An error without a
    position of its own (a bad WITH value) gets ``line``/``column`` of its statement.
    """
    errors: list[FlowSQLError] = []
    try:
        items = read(text)
    except SqlSyntaxError as err:
        return [err]
    for item in items:
        if isinstance(item, FlowSQLError):
            errors.append(item)
            continue
        found: list[FlowSQLError] = []
        try:
            check_annotations(item)
        except FlowSQLError as err:
            found.append(err)
        try:
            _plan(item)
        except PlanErrors as err:
            found.extend(err.errors)
        except FlowSQLError as err:
            found.append(err)
        for problem in found:
            if not problem.line:
                problem.line, problem.column = item.line, 1
        errors.extend(found)
    return errors


def _plan(source: SourceStatement, *, annotations: bool = False) -> Statement:
    if annotations:
        check_annotations(source)
    try:
        statement = plan_statement(source, parse_tokens(source))
    except RecursionError:  # the limits of parse_tokens leave room; a deep caller may not
        raise too_deep(source) from None
    options.validate(statement)
    return statement
