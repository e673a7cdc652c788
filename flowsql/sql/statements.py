"""Split a SQL file into statements and parse each into a sqlglot AST.

Token positions always refer to the whole file, so every error reports the
line and column of the original text. Two forms are rewritten on the token
stream before sqlglot sees it:

- ``CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [WITH (...)] AS`` is
  stripped (kind, name and properties are kept on the :class:`SourceStatement`).
- ``OVER (ROWS WINDOW BUFFER n ROWS ...)`` becomes ``OVER (... ROWS BETWEEN n-1
  PRECEDING AND CURRENT ROW)``.

Hostile SQL fails with a syntax error at the offending token, never with a
``RecursionError`` nor an hour of parsing. sqlglot's parser recurses 10-32
Python frames per level of nesting and Python allows 1000, so the token stream
is checked first (:data:`MAX_NESTING`, :data:`MAX_TYPE_NESTING`); the parsed
tree is then checked too (:data:`MAX_EXPRESSION_DEPTH`), after long AND/OR
chains (which sqlglot parses without recursing) are rebuilt as balanced trees,
so that the planner and the executor, which recurse about 3 frames per level,
stay within bounds as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from flowsql.errors import ConfigError, SqlSyntaxError
from flowsql.sql.diagnostics import error_at, from_parse_error, keyword_hint, position
from flowsql.sql.dialect import FlowSQL

_ANNOTATION = re.compile(r"^\s*--\s*@([\w.\-]+)\s*:\s*(.*?)\s*$", re.MULTILINE)
_WORD = re.compile(r"^[A-Za-z_][\w$]*$")
_STARTS = (TokenType.SELECT, TokenType.CREATE, TokenType.L_PAREN)
_CLAUSES = (
    TokenType.WHERE,
    TokenType.GROUP_BY,
    TokenType.HAVING,
    TokenType.WINDOW,
    TokenType.ORDER_BY,
    TokenType.LIMIT,
)

DIALECT = FlowSQL()

#: Deepest nesting of parentheses, brackets, braces and CASE ... END, counting
#: each pending prefix operator (NOT, unary -, + and ~) as a level too. sqlglot
#: needs up to 32 Python frames per level (``a = ANY(``); 24 levels stay within
#: Python's default limit of 1000 with room for a caller's own frames.
MAX_NESTING = 24
#: Of those levels, the ones opened right after a type name (``DATE(``,
#: ``ARRAY[``, ``DECIMAL(``...): sqlglot tries each as a type before a function,
#: which doubles the parse time per level.
MAX_TYPE_NESTING = 4
#: Deepest expression tree (sqlglot nodes from the SELECT down) once long
#: AND/OR chains are balanced: a chain of 400 ORs is 9 levels, of 400 ``+`` 400.
MAX_EXPRESSION_DEPTH = 128

_OPENS = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSES = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
_PREFIX = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})
#: Tokens that end an operand: a -, + or NOT after one is binary.
_OPERAND_ENDS = (
    frozenset(
        {
            TokenType.VAR,
            TokenType.IDENTIFIER,
            TokenType.NUMBER,
            TokenType.STRING,
            TokenType.NULL,
            TokenType.TRUE,
            TokenType.FALSE,
            TokenType.STAR,
            TokenType.PLACEHOLDER,
        }
    )
    | _CLOSES
    | DIALECT.parser_class.TYPE_TOKENS
)
#: Tokens where a pending NOT has surely ended.
_SEPARATORS = frozenset(
    {
        TokenType.AND,
        TokenType.OR,
        TokenType.XOR,
        TokenType.COMMA,
        TokenType.WHEN,
        TokenType.THEN,
        TokenType.ELSE,
        TokenType.ALIAS,
        TokenType.SELECT,
        TokenType.FROM,
        TokenType.WHERE,
        TokenType.GROUP_BY,
        TokenType.HAVING,
        TokenType.ORDER_BY,
        TokenType.LIMIT,
        TokenType.WINDOW,
        TokenType.ON,
        TokenType.PARTITION_BY,
    }
)
_NESTING_HINT = "flatten it, e.g. one CASE with several WHEN instead of nested CASEs"


@dataclass(frozen=True)
class SourceStatement:
    """One statement of a file, ready to parse."""

    sql: str  # the whole file
    tokens: list[Token]
    kind: str = "select"
    name: str = "query"
    properties: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    start: int = 0  # offset of the statement's first token (CREATE included)
    end: int = 0  # offset just past its last token

    @property
    def text(self) -> str:
        """The statement's own text."""
        return self.sql[self.start : self.end]

    @property
    def line(self) -> int:
        """First line of the statement in the file."""
        return position(self.sql, self.start).line


def tokenize(sql: str) -> list[Token]:
    """All tokens of ``sql``.

    Raises:
        SqlSyntaxError: e.g. an unterminated string, at its position.
    """
    tokenizer = DIALECT.tokenizer()
    try:
        return tokenizer.tokenize(sql)
    except TokenError as err:
        quote = unclosed_quote(sql)
        if quote is not None:
            kind = "string" if sql[quote] == "'" else "quoted identifier"
            raise error_at(
                f"unterminated {kind}", sql, None, end=quote, hint=f"close it with {sql[quote]}"
            ) from None
        end = int(getattr(tokenizer, "_start", len(sql)))
        raise error_at(f"cannot read the SQL text: {err}", sql, None, end=end) from None


def unclosed_quote(sql: str) -> int | None:
    """Offset of a quote that is never closed (comments skipped), else None."""
    i = 0
    while i < len(sql):
        if sql.startswith("--", i):
            i = _after(sql, "\n", i)
        elif sql.startswith("/*", i):
            i = _after(sql, "*/", i + 2)
        elif sql[i] in "'\"":
            close = _closing_quote(sql, i)
            if close is None:
                return i
            i = close + 1
        else:
            i += 1
    return None


def _after(sql: str, end: str, start: int) -> int:
    found = sql.find(end, start)
    return len(sql) if found < 0 else found + len(end)


def _closing_quote(sql: str, start: int) -> int | None:
    quote, i = sql[start], start + 1
    while i < len(sql):
        if sql[i] == quote:
            if sql.startswith(quote * 2, i):
                i += 2
                continue
            return i
        i += 1
    return None


def split(sql: str) -> list[list[Token]]:
    """The tokens of each ``;``-separated statement (empty statements dropped)."""
    groups: list[list[Token]] = [[]]
    for token in tokenize(sql):
        if token.token_type == TokenType.SEMICOLON:
            groups.append([])
        else:
            groups[-1].append(token)
    return [g for g in groups if g]


def annotations_before(sql: str, tokens: list[Token], previous_end: int) -> dict[str, str]:
    """``-- @key: value`` comments between the previous statement and this one."""
    region = sql[previous_end : tokens[0].start]
    return {m.group(1): m.group(2) for m in _ANNOTATION.finditer(region)}


#: Annotation values every way of running a job accepts (``flowsql run`` and the
#: server): key -> (check, what is allowed).
_ANNOTATION_VALUES: dict[str, tuple[Callable[[str], bool], str]] = {
    "job_mode": (lambda v: v.strip().lower() in ("v1", "v2"), "v1, v2"),
    "num_partitions": (
        lambda v: v.strip().isdigit() and 1 <= int(v) <= 1024,  # as the server's
        "an integer from 1 to 1024",
    ),
}


def check_annotations(source: SourceStatement) -> None:
    """Refuse a ``-- @job_mode`` / ``-- @num_partitions`` value no runner accepts,
    at the annotation's line and column.

    Raises:
        AnnotationError: the first bad value.
    """
    for key, value in source.annotations.items():
        check, allowed = _ANNOTATION_VALUES.get(key.lower(), (None, ""))
        if check is None or check(value):
            continue
        line, column = source.line, 1
        for match in _ANNOTATION.finditer(source.sql, 0, source.start):
            if match.group(1) == key:  # the last one before the statement is the one kept
                at = position(source.sql, match.start(1) - 1)
                line, column = at.line, at.column
        raise AnnotationError(f"{source.name}.@{key}", value, allowed, line=line, column=column)


class AnnotationError(ConfigError):
    """A bad ``-- @key: value`` annotation: a :class:`ConfigError` (key
    ``<job>.@<key>``, as the server names it) with the annotation's position."""

    def __init__(self, key: str, value: str, allowed: str, *, line: int, column: int) -> None:
        self.line = line
        self.column = column
        super().__init__(key, value, allowed)
        self.args = (f"{self.args[0]} at line {line}, column {column}",)


def prepare(sql: str, tokens: list[Token], previous_end: int = 0) -> SourceStatement:
    """Check the statement's start, strip a CREATE prefix and rewrite BUFFER frames."""
    notes = annotations_before(sql, tokens, previous_end)
    first = tokens[0]
    if first.token_type not in _STARTS:
        hint = keyword_hint(first.text)
        raise error_at(
            "a statement must start with SELECT or CREATE STREAM|TABLE name AS SELECT",
            sql,
            first,
            hint=hint or "write SELECT ... FROM ...",
        )
    kind, name, body = "select", "query", tokens
    props: dict[str, str] = {}
    if first.token_type == TokenType.CREATE:
        kind, name, props, body = _strip_create(sql, tokens)
    _check_from(sql, body)
    body = _rewrite_buffers(sql, body)
    return SourceStatement(sql, body, kind, name, props, notes, first.start, tokens[-1].end + 1)


def parse_tokens(source: SourceStatement) -> exp.Select:
    """Parse one prepared statement into a sqlglot SELECT.

    Raises:
        SqlSyntaxError: with the position of the offending token.
    """
    check_nesting(source)
    parser = DIALECT.parser()
    try:
        trees = parser.parse(source.tokens, source.sql)
    except ParseError as err:
        token = getattr(parser, "flow_error_token", None)
        raise from_parse_error(err, source.sql, token, source.tokens) from None
    except RecursionError:  # only from a caller already deep in its own stack
        raise too_deep(source) from None
    tree = trees[0] if len(trees) == 1 else None
    if not isinstance(tree, exp.Select):
        raise error_at(
            "only SELECT queries are supported (UNION, VALUES and others are not)",
            source.sql,
            source.tokens[0],
        )
    if tree.args.get("from_") is None:  # the FROM token went into an expression
        from_ = next(t for t in source.tokens if t.token_type == TokenType.FROM)
        raise error_at(
            "expected FROM <stream> here", source.sql, from_, hint="check what comes before FROM"
        )
    balance_connectors(tree)
    check_depth(source, tree)
    return tree


# -- limits on nesting ----------------------------------------------------------------


def check_nesting(source: SourceStatement) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` (or :data:`MAX_TYPE_NESTING`
    type-named calls) before sqlglot recurses into it.

    A level weighs 1 plus the prefix operators pending when it opens (``NOT (``
    is two levels); a pending unary -, + or ~ ends with its operand, a NOT at
    the next AND, OR, comma, WHEN, THEN, ELSE or clause keyword.

    Raises:
        SqlSyntaxError: at the token that goes one level too deep.
    """
    stack: list[tuple[int, int, bool]] = []  # per open level: weight, NOTs before it, typed
    depth = typed = unary = nots = 0
    previous: Token | None = None
    for token in source.tokens:
        kind = token.token_type
        if kind in _PREFIX and (previous is None or previous.token_type not in _OPERAND_ENDS):
            nots += kind == TokenType.NOT
            unary += kind != TokenType.NOT
        elif kind in _OPENS:
            is_type = kind != TokenType.CASE and _is_type_name(previous)
            stack.append((1 + unary + nots, nots, is_type))
            depth, typed, unary, nots = depth + 1 + unary + nots, typed + is_type, 0, 0
        elif kind in _CLOSES and stack:
            weight, nots, is_type = stack.pop()
            depth, typed, unary = depth - weight, typed - is_type, 0
        elif kind in _SEPARATORS:
            unary = nots = 0
        elif kind in _OPERAND_ENDS:
            unary = 0
        _check_level(source, token, depth + unary + nots, typed)
        previous = token


def _is_type_name(token: Token | None) -> bool:
    return token is not None and token.token_type in DIALECT.parser_class.TYPE_TOKENS


def _check_level(source: SourceStatement, token: Token, depth: int, typed: int) -> None:
    if depth > MAX_NESTING:
        raise error_at(
            f"query nested too deep: more than {MAX_NESTING} levels of parentheses,"
            " CASE, function calls and prefix operators",
            source.sql,
            token,
            hint=_NESTING_HINT,
        )
    if typed > MAX_TYPE_NESTING:
        raise error_at(
            f"more than {MAX_TYPE_NESTING} nested calls named after a type"
            " (DATE(, ARRAY[, DECIMAL(...)",
            source.sql,
            token,
            hint="compute the inner value in another expression or query",
        )


def balance_connectors(tree: exp.Expr) -> None:
    """Rebuild chains of AND and of OR as balanced trees (same terms, same order).

    sqlglot parses ``a OR b OR c ...`` into a tree as deep as the chain is long;
    AND and OR are associative, so a balanced tree means the same and is only
    log2(n) deep for the planner and the executor.
    """
    for node in list(tree.find_all(exp.And, exp.Or)):
        if type(node.parent) is type(node):
            continue  # inside a chain: rebuilt with its top
        terms = _chain(node)
        if len(terms) > 2:
            node.replace(_balanced(type(node), terms))


def _chain(top: exp.Expr) -> list[exp.Expr]:
    """The terms of a chain of one connector, left to right (without recursion)."""
    terms: list[exp.Expr] = []
    stack = [top]
    while stack:
        node = stack.pop()
        if type(node) is type(top):
            stack += [node.expression, node.this]
        else:
            terms.append(node)
    return terms


def _balanced(kind: type[exp.Connector], terms: list[exp.Expr]) -> exp.Expr:
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    return kind(this=_balanced(kind, terms[:middle]), expression=_balanced(kind, terms[middle:]))


def check_depth(source: SourceStatement, tree: exp.Expr) -> None:
    """Refuse a parsed tree deeper than :data:`MAX_EXPRESSION_DEPTH`.

    Raises:
        SqlSyntaxError: at the first token of the clause or SELECT item holding
            the expression that is too deep.
    """
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            while node.parent is not None and node.parent is not tree:
                node = node.parent
            raise error_at(
                f"expression nested too deep: more than {MAX_EXPRESSION_DEPTH} levels",
                source.sql,
                _first_token(source, node),
                hint="split it over several expressions (long AND/OR chains are fine)",
                end=source.end,
            )
        stack += [(child, depth + 1) for child in node.iter_expressions()]


def _first_token(source: SourceStatement, node: exp.Expr) -> Token | None:
    starts = [int(sub.meta["start"]) for sub in node.walk() if sub.meta and "start" in sub.meta]
    if not starts:
        return None
    return next((t for t in source.tokens if t.start == min(starts)), None)


def too_deep(source: SourceStatement) -> SqlSyntaxError:
    """The error for a statement that exhausted Python's stack all the same."""
    return error_at(
        "query nested too deep for the stack left to parse and plan it",
        source.sql,
        source.tokens[0],
        hint=_NESTING_HINT,
    )


# -- CREATE STREAM|TABLE name [WITH (...)] AS ---------------------------------------


def _strip_create(sql: str, tokens: list[Token]) -> tuple[str, str, dict[str, str], list[Token]]:
    i = 1
    if _text(tokens, i) == "OR" and _text(tokens, i + 1) == "REPLACE":
        i += 2
    kind = _text(tokens, i)
    if kind not in ("STREAM", "TABLE"):
        raise _create_error(sql, tokens, i)
    i += 1
    if [_text(tokens, j) for j in range(i, i + 3)] == ["IF", "NOT", "EXISTS"]:
        i += 3
    if i >= len(tokens) or not _is_name(tokens[i]):
        raise _create_error(sql, tokens, i)
    name = tokens[i].text
    i += 1
    props: dict[str, str] = {}
    if _text(tokens, i) == "WITH" and _text(tokens, i + 1) == "(":
        props, i = _token_properties(sql, tokens, i + 2)
    if _text(tokens, i) != "AS" or i + 1 >= len(tokens):
        raise _create_error(sql, tokens, i + 1 if _text(tokens, i) == "AS" else i)
    return kind.lower(), name, props, tokens[i + 1 :]


def _is_name(token: Token) -> bool:
    return token.token_type == TokenType.IDENTIFIER or bool(_WORD.match(token.text))


def _text(tokens: list[Token], i: int) -> str:
    return tokens[i].text.upper() if i < len(tokens) else ""


def _create_error(sql: str, tokens: list[Token], i: int) -> SqlSyntaxError:
    token = tokens[i] if i < len(tokens) else None
    return error_at(
        "expected CREATE STREAM|TABLE name AS SELECT ...",
        sql,
        token,
        hint=keyword_hint(token.text) if token else "",
        end=tokens[-1].end + 1,
    )


def _token_properties(sql: str, tokens: list[Token], i: int) -> tuple[dict[str, str], int]:
    """ksqlDB's ``CREATE STREAM s WITH (k = 'v', ...) AS``: parse up to the ')'."""
    props: dict[str, str] = {}
    while i + 2 < len(tokens) and tokens[i + 1].token_type == TokenType.EQ:
        props[tokens[i].text] = tokens[i + 2].text
        i += 3
        if _text(tokens, i) != ",":
            break
        i += 1
    if _text(tokens, i) != ")":
        raise error_at("expected WITH ('key' = 'value', ...)", sql, tokens[min(i, len(tokens) - 1)])
    return props, i + 1


# -- FROM must be there -------------------------------------------------------------


def _check_from(sql: str, tokens: list[Token]) -> None:
    if any(t.token_type == TokenType.FROM for t in tokens):
        return
    typo = next((t for t in tokens if keyword_hint(t.text) == "did you mean FROM?"), None)
    if typo is not None:
        raise error_at("missing FROM clause", sql, typo, hint=f"'{typo.text}': did you mean FROM?")
    clause = next((t for t in tokens if t.token_type in _CLAUSES), None)
    raise error_at(
        "missing FROM clause",
        sql,
        clause,
        hint="add FROM <stream> after the SELECT list",
        end=tokens[-1].end + 1,
    )


# -- OVER (ROWS WINDOW BUFFER n ROWS ...) -------------------------------------------


def _rewrite_buffers(sql: str, tokens: list[Token]) -> list[Token]:
    out = list(tokens)
    i = 0
    while i + 4 < len(out):
        words = [out[j].text.upper() for j in range(i, i + 5)]
        if words[:3] == ["ROWS", "WINDOW", "BUFFER"] and words[4] == "ROWS":
            out = _rewrite_buffer_at(sql, out, i)
        i += 1
    return out


def _rewrite_buffer_at(sql: str, tokens: list[Token], i: int) -> list[Token]:
    size_token = tokens[i + 3]
    if size_token.token_type != TokenType.NUMBER or not size_token.text.isdigit():
        raise error_at("ROWS WINDOW BUFFER needs a whole number of rows", sql, size_token)
    if int(size_token.text) < 1:
        raise error_at("ROWS WINDOW BUFFER needs at least 1 row", sql, size_token)
    close = _closing_paren(tokens, i + 5)
    if close is None:
        raise error_at("expected ')' to close OVER (...)", sql, None, end=tokens[-1].end + 1)
    frame = _frame_tokens(int(size_token.text) - 1, size_token)
    return tokens[:i] + tokens[i + 5 : close] + frame + tokens[close:]


def _closing_paren(tokens: list[Token], start: int) -> int | None:
    depth = 0
    for j in range(start, len(tokens)):
        kind = tokens[j].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            if depth == 0:
                return j
            depth -= 1
    return None


def _frame_tokens(preceding: int, at: Token) -> list[Token]:
    frame = DIALECT.tokenizer().tokenize(f"ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW")
    return [Token(t.token_type, t.text, at.line, at.col, at.start, at.end) for t in frame]


def read(sql: str) -> list[SourceStatement | SqlSyntaxError]:
    """Every statement of a file, prepared; a statement that cannot be prepared
    is returned as its error so callers can keep going."""
    out: list[SourceStatement | SqlSyntaxError] = []
    previous_end = 0
    for tokens in split(sql):
        try:
            out.append(prepare(sql, tokens, previous_end))
        except SqlSyntaxError as err:
            out.append(err)
        previous_end = tokens[-1].end + 1
    return out
