"""Turn sqlglot's errors into :class:`~flowsql.errors.SqlSyntaxError` with the
1-based line and column of the offending token in the original text, and a hint
where one is obvious (a misspelt keyword, an incomplete clause). Secret values
(``'sasl.password' = '...'``) are masked in everything an error shows."""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import get_close_matches

from sqlglot.errors import ParseError
from sqlglot.tokens import Token, TokenType

from flowsql.errors import SqlSyntaxError
from flowsql.plan.expr import Pos
from flowsql.redaction import redact_keeping_positions, redact_text, values_in_text

#: Keywords a user may misspell; a bare word close to one of them gets a hint.
KEYWORDS: tuple[str, ...] = (
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "HAVING",
    "WINDOW",
    "ORDER",
    "LIMIT",
    "EMIT",
    "CHANGES",
    "FINAL",
    "TUMBLING",
    "SLIDING",
    "HOPPING",
    "SESSION",
    "INTERVAL",
    "DISTINCT",
    "CREATE",
    "STREAM",
    "TABLE",
    "PARTITION",
    "BETWEEN",
    "PRECEDING",
    "FOLLOWING",
)

_CLAUSE_NAMES = frozenset({"WHERE", "HAVING", "GROUP", "ORDER", "LIMIT", "FROM", "SELECT"})
_REQUIRED = re.compile(r"Required keyword: '\w+' missing for <class '[\w.]*\.(\w+)'>")


def position(sql: str, offset: int) -> Pos:
    """1-based line and column of a 0-based character ``offset`` in ``sql``."""
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return Pos(line, column)


def keyword_hint(word: str) -> str:
    """``did you mean SELECT?`` when ``word`` looks like a misspelt keyword."""
    upper = word.upper()
    if not upper.isalpha() or upper in KEYWORDS or len(upper) < 3:
        return ""
    close = get_close_matches(upper, KEYWORDS, n=1, cutoff=0.75)
    return f"did you mean {close[0]}?" if close else ""


def error_at(
    message: str, sql: str, token: Token | None, *, hint: str = "", end: int | None = None
) -> SqlSyntaxError:
    """A syntax error at ``token`` (or at offset ``end`` when there is no token).

    Secrets never reach the error: the SQL it keeps and shows is masked character
    for character (lines and columns stay right), the message and hint are masked
    too, also when a value's closing quote is missing.
    """
    values = values_in_text(sql)
    shown = redact_keeping_positions(sql, values)
    if token:
        pos = position(sql, token.start)
        text = shown[token.start : token.end + 1]
    else:
        pos = position(sql, len(sql) if end is None else end)
        text = ""
    return SqlSyntaxError(
        redact_text(message, values),
        line=pos.line,
        column=pos.column,
        token=text,
        sql=shown,
        hint=redact_text(hint, values),
    )


def from_parse_error(
    err: ParseError, sql: str, token: Token | None, tokens: Sequence[Token]
) -> SqlSyntaxError:
    """Translate sqlglot's ``ParseError`` raised while parsing ``tokens``."""
    description = err.errors[0].get("description", str(err)) if err.errors else str(err)
    message, hint = _describe(description)
    hint = hint or _misspelling_hint(token, tokens)
    end = tokens[-1].end + 1 if tokens else len(sql)
    if token and token.token_type == TokenType.SENTINEL:
        token = None
    return error_at(message, sql, token, hint=hint, end=end)


def _describe(description: str) -> tuple[str, str]:
    if description.startswith("Invalid expression / Unexpected token"):
        return "unexpected token", ""
    if description.startswith("Expecting )"):
        return "expected ')'", "check that every '(' is closed"
    required = _REQUIRED.match(description)
    if required:
        clause = required.group(1).upper()
        if clause in _CLAUSE_NAMES:
            return f"incomplete {clause}", f"{clause} needs an expression after it"
        return "incomplete expression", "an operator or function is missing an operand"
    return description, ""


def _misspelling_hint(token: Token | None, tokens: Sequence[Token]) -> str:
    candidates: list[Token] = [token] if token else []
    candidates += [t for t in tokens if t.token_type == TokenType.VAR]
    for candidate in candidates:
        hint = keyword_hint(candidate.text)
        if hint:
            return f"'{candidate.text}': {hint}"
    return ""
