"""The flowsql SQL dialect: sqlglot's parser plus streaming clauses.

Added to a SELECT (as extra query modifiers, so they may appear in any order
after FROM):

- ``WINDOW TUMBLING([time_col,] size)``, ``SLIDING``/``HOPPING([time_col,] size,
  advance)``, ``SESSION([time_col,] gap)``, and ksqlDB's ``TUMBLING (SIZE 1
  SECOND)``, ``HOPPING (SIZE 10 SECONDS, ADVANCE BY 1 SECOND)``,
  ``SESSION (5 SECONDS)`` -> :class:`StreamWindow` under ``select.args["windows"]``.
- ``EMIT CHANGES | EMIT FINAL`` -> :class:`EmitClause` under ``"emit"``.
- a trailing ``WITH ('k' = 'v', ...)`` -> :class:`StreamProperties` under ``"stream_props"``.
- Flink's ``FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))``
  (and HOP, SESSION) -> :class:`WindowTable` as the FROM item.

Durations are resolved to milliseconds while parsing, so a bad unit is a
syntax error at the right token.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.parser import Parser
from sqlglot.tokens import Token, Tokenizer, TokenType

from flowsql.errors import FlowSQLError
from flowsql.sql.durations import duration_ms, is_unit, parse_duration

WINDOW_KINDS: dict[str, str] = {
    "TUMBLING": "tumbling",
    "SLIDING": "sliding",
    "HOPPING": "sliding",
    "SESSION": "session",
}
FLINK_WINDOW_KINDS: dict[str, str] = {"TUMBLE": "tumbling", "HOP": "sliding", "SESSION": "session"}


class StreamWindow(exp.Expression):
    """An event-time window clause; durations are ``exp.Literal`` numbers of ms."""

    arg_types = {
        "kind": True,
        "time_column": False,
        "size": False,
        "advance": False,
        "gap": False,
        "grace": False,
    }


class WindowTable(StreamWindow):
    """Flink's windowing table function in FROM; ``this`` is the source table."""

    arg_types = {**StreamWindow.arg_types, "this": True, "partition_by": False, "alias": False}


class EmitClause(exp.Expression):
    """``EMIT CHANGES`` / ``EMIT FINAL``; ``this`` is "changes" or "final"."""

    arg_types = {"this": True}


class StreamProperties(exp.Expression):
    """Trailing ``WITH ('k' = 'v', ...)``: ``expressions`` are ``exp.Property``."""

    arg_types = {"expressions": True}


def _ms(value: int) -> exp.Literal:
    return exp.Literal(this=str(value), is_string=False)


class FlowParser(Parser):
    """sqlglot's parser with flowsql's streaming clauses."""

    FUNCTIONS = {
        **Parser.FUNCTIONS,
        # Keep the JSONPath text as written: the executor evaluates it.
        "JSON_EXTRACT": lambda args: exp.Anonymous(this="JSON_EXTRACT", expressions=args),
    }

    QUERY_MODIFIER_PARSERS = {
        **Parser.QUERY_MODIFIER_PARSERS,
        TokenType.WINDOW: lambda self: self._parse_stream_window_clause(),
    }

    # -- hooks into sqlglot ---------------------------------------------------------

    def parse(self, raw_tokens: list[Token], sql: str) -> list[exp.Expr | None]:
        """sqlglot's parse; where sqlglot itself slips on malformed text (an
        ``AttributeError`` deep inside), a syntax error at the current token."""
        try:
            return super().parse(raw_tokens, sql)
        except (ParseError, FlowSQLError):
            raise
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            self.raise_error("Invalid expression / Unexpected token")
            raise  # not reached: the error level is IMMEDIATE

    def raise_error(self, message: str, token: Token | None = None) -> None:  # type: ignore[override]
        """Remember the offending token (its offset gives an exact line/column)."""
        self.flow_error_token = token or self._curr or self._prev
        super().raise_error(message, token or self._curr or self._prev)

    def _parse_query_modifiers(self, this: Any) -> Any:
        this = super()._parse_query_modifiers(this)
        while isinstance(this, exp.Select) and self._curr:
            if self._curr.text.upper() == "EMIT":
                self._set_once(this, "emit", self._parse_emit())
            elif (
                self._curr.token_type == TokenType.WITH
                and self._next.token_type == TokenType.L_PAREN
            ):
                self._set_once(this, "stream_props", self._parse_stream_properties())
            else:
                break
            this = super()._parse_query_modifiers(this)
        return this

    def _parse_group(self, skip_group_by_token: bool = False) -> exp.Group | None:
        token = self._curr
        group = super()._parse_group(skip_group_by_token)
        if group is not None and not any(group.args.values()):
            self.raise_error("GROUP BY needs at least one expression", token)
        return group

    def _parse_table_hints(self) -> list[exp.Expr] | None:
        # A trailing WITH (...) holds stream properties, never T-SQL table hints.
        return None

    def _parse_table_alias(self, alias_tokens: Any = None) -> exp.TableAlias | None:
        if self._curr.text.upper() == "EMIT":
            return None
        return super()._parse_table_alias(alias_tokens)

    def _parse_table(self, *args: Any, **kwargs: Any) -> exp.Expr | None:
        if self._at_flink_window_table():
            return self._parse_window_table()
        return super()._parse_table(*args, **kwargs)

    # -- EMIT and WITH --------------------------------------------------------------

    def _set_once(self, select: exp.Select, key: str, value: exp.Expr) -> None:
        if select.args.get(key) is not None:
            name = "EMIT" if key == "emit" else "WITH"
            self.raise_error(f"Found multiple '{name}' clauses", self._prev)
        select.set(key, value)

    def _parse_emit(self) -> EmitClause:
        self._advance()
        mode = self._curr.text.upper() if self._curr else ""
        if mode not in ("CHANGES", "FINAL"):
            self.raise_error("EMIT must be followed by CHANGES or FINAL")
        self._advance()
        return EmitClause(this=mode.lower())

    def _parse_stream_properties(self) -> StreamProperties:
        self._advance()  # WITH
        self._match_l_paren()
        props = self._parse_csv(self._parse_stream_property)
        self._match_r_paren()
        return StreamProperties(expressions=props)

    def _parse_stream_property(self) -> exp.Property | None:
        key = self._curr
        if key is None:
            self.raise_error("expected ')' to close WITH (...)")
        if key.token_type == TokenType.R_PAREN:
            return None
        self._advance()
        if not self._match(TokenType.EQ):
            self.raise_error("expected '=' in WITH ('key' = 'value')")
        value = self._curr
        if value is None:
            self.raise_error("expected a value after '=' in WITH ('key' = 'value')")
        self._advance()
        return exp.Property(this=exp.Literal.string(key.text), value=exp.Literal.string(value.text))

    # -- WINDOW TUMBLING / SLIDING / SESSION ----------------------------------------

    def _parse_stream_window_clause(self) -> tuple[str, Any]:
        kind_token = self._next
        if kind_token.text.upper() not in WINDOW_KINDS:
            self.raise_error(
                "expected TUMBLING, SLIDING, HOPPING or SESSION after WINDOW "
                "(named windows are not supported)",
                kind_token or self._curr,
            )
        self._advance(2)
        if not self._match(TokenType.L_PAREN):
            self.raise_error(f"expected '(' after {kind_token.text.upper()}")
        items = self._parse_csv(self._parse_window_item)
        self._match_r_paren()
        window = self._build_window(WINDOW_KINDS[kind_token.text.upper()], items, kind_token)
        window.update_positions(kind_token)
        return "windows", window

    def _parse_window_item(self) -> exp.Expr | None:
        """One argument: a duration, ``SIZE d``, ``ADVANCE BY d``, ``GRACE PERIOD d``
        or a time column. Durations come back as ``exp.Tuple(name, ms)``."""
        word = self._curr.text.upper()
        for name, words in (
            ("size", ("SIZE",)),
            ("advance", ("ADVANCE", "BY")),
            ("grace", ("GRACE", "PERIOD")),
            ("retention", ("RETENTION",)),
        ):
            if word == words[0] and self._next.token_type not in (
                TokenType.COMMA,
                TokenType.R_PAREN,
            ):
                self._match_text_seq(*words)
                return self._named_duration(name)
        duration = self._named_duration("")
        if duration is not None:
            return duration
        token = self._curr
        column = self._parse_column()
        if column is not None and not isinstance(column, exp.Column):
            self.raise_error("expected a duration (e.g. 1s) or the time column", token)
        return column if isinstance(column, exp.Column) else None

    def _named_duration(self, name: str) -> exp.Tuple | None:
        token = self._curr
        ms = self._parse_duration()
        if ms is None:
            if name:
                self.raise_error(f"expected a duration after {name.upper()}", token)
            return None
        return exp.Tuple(expressions=[exp.Literal.string(name), _ms(ms)])

    def _parse_duration(self) -> int | None:
        """A duration in ms, or None (nothing consumed) when none starts here."""
        token = self._curr
        try:
            if token.token_type == TokenType.INTERVAL:
                return self._interval_ms(token)
            if token.token_type == TokenType.STRING:
                self._advance()
                return parse_duration(token.text)
            if token.token_type == TokenType.NUMBER:
                return self._number_with_unit_ms(token)
        except ValueError as err:
            self.raise_error(str(err), token)
        return None

    def _interval_ms(self, token: Token) -> int:
        interval = self._parse_interval()
        if not isinstance(interval, exp.Interval):
            raise ValueError("expected INTERVAL 'n' UNIT")
        unit = interval.args.get("unit")
        amount = interval.this.name if interval.this else ""
        if unit is None:
            return parse_duration(amount)
        return duration_ms(amount, unit.name)

    def _number_with_unit_ms(self, token: Token) -> int:
        self._advance()
        unit = self._curr
        if unit.text.isalpha() and unit.start == token.end + 1 and not is_unit(unit.text):
            self.raise_error(f"unknown time unit '{unit.text}' (use ms, s, m, h or d)", unit)
        if not (unit.text.isalpha() and is_unit(unit.text)):
            self.raise_error(
                "a window duration needs a unit, e.g. 1s, 500ms or INTERVAL '1' SECOND",
                token,
            )
        self._advance()
        return duration_ms(token.text, unit.text)

    def _build_window(self, kind: str, items: list[exp.Expr], at: Token) -> StreamWindow:
        """Assign positional and named arguments to the window's parameters."""
        args: dict[str, Any] = {"kind": kind}
        positional: list[exp.Expr] = []
        for item in items:
            if isinstance(item, exp.Column):
                if positional or "time_column" in args:
                    self.raise_error("the time column must be the first window argument", at)
                args["time_column"] = item
            elif isinstance(item, exp.Tuple) and item.expressions[0].name:
                args[item.expressions[0].name] = item.expressions[1]
            else:
                positional.append(item.expressions[1])
        names = {"tumbling": ["size"], "sliding": ["size", "advance"], "session": ["gap"]}[kind]
        if kind == "session" and "size" in args:
            args["gap"] = args.pop("size")
        missing = [n for n in names if n not in args]
        if len(positional) != len(missing):
            self._window_arity_error(kind, at)
        args.update(zip(missing, positional, strict=True))
        args.pop("retention", None)
        return StreamWindow(**args)

    def _window_arity_error(self, kind: str, at: Token) -> None:
        usage = {
            "tumbling": "TUMBLING([time_col,] size)",
            "sliding": "SLIDING([time_col,] size, advance)",
            "session": "SESSION([time_col,] gap)",
        }[kind]
        self.raise_error(f"wrong window arguments: expected {usage}", at)

    # -- Flink window table functions -----------------------------------------------

    def _at_flink_window_table(self) -> bool:
        if self._curr.token_type != TokenType.TABLE or self._next.token_type != TokenType.L_PAREN:
            return False
        ahead = self._index + 2
        return ahead < len(self._tokens) and self._tokens[ahead].text.upper() in (
            *FLINK_WINDOW_KINDS,
            "CUMULATE",
        )

    def _parse_window_table(self) -> WindowTable:
        self._advance(2)  # TABLE (
        kind_token = self._curr
        if kind_token.text.upper() not in FLINK_WINDOW_KINDS:
            self.raise_error("CUMULATE windows are not supported (use TUMBLE, HOP or SESSION)")
        kind = FLINK_WINDOW_KINDS[kind_token.text.upper()]
        self._advance()
        self._match_l_paren()
        args: dict[str, Any] = {"kind": kind}
        durations: list[exp.Expr] = []
        for name, value in self._parse_csv(self._parse_window_table_arg):
            if name == "duration":
                durations.append(value)
            else:
                args[name] = value
        self._match_r_paren()
        self._match_r_paren()
        self._assign_flink_durations(kind, durations, args, kind_token)
        if "this" not in args:
            self.raise_error(f"{kind_token.text.upper()} needs TABLE <name>", kind_token)
        args["alias"] = self._parse_table_alias()
        window = WindowTable(**args)
        window.update_positions(kind_token)
        return window

    def _parse_window_table_arg(self) -> tuple[str, Any]:
        named = ""
        if self._next.token_type == TokenType.FARROW:
            named = self._curr.text.upper()
            self._advance(2)
        if self._match(TokenType.TABLE):
            table = self._parse_table_parts()
            self._flink_partition = self._parse_flink_partition()
            return "this", table
        if self._curr.text.upper() == "DESCRIPTOR":
            self._advance()
            return "time_column", self._parse_wrapped(self._parse_column)
        token = self._curr
        ms = self._parse_duration()
        if ms is None:
            self.raise_error("expected TABLE t, DESCRIPTOR(col) or a duration", token)
        key = {"SIZE": "size", "SLIDE": "advance", "GAP": "gap"}.get(named, "duration")
        return key, _ms(ms or 0)

    def _parse_flink_partition(self) -> list[exp.Expr]:
        if not self._match(TokenType.PARTITION_BY):
            return []
        if self._match(TokenType.L_PAREN, advance=False):
            return list(self._parse_wrapped_csv(self._parse_column))
        column = self._parse_column()
        return [column] if column else []

    def _assign_flink_durations(
        self, kind: str, durations: list[exp.Expr], args: dict[str, Any], at: Token
    ) -> None:
        # Flink's HOP takes the slide before the size.
        names = {"tumbling": ["size"], "sliding": ["advance", "size"], "session": ["gap"]}[kind]
        missing = [n for n in names if n not in args]
        if len(durations) != len(missing):
            usage = {
                "tumbling": "TUMBLE(TABLE t, DESCRIPTOR(ts), size)",
                "sliding": "HOP(TABLE t, DESCRIPTOR(ts), slide, size)",
                "session": "SESSION(TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap)",
            }[kind]
            self.raise_error(f"wrong window arguments: expected {usage}", at)
        args.update(zip(missing, durations, strict=True))
        partition = getattr(self, "_flink_partition", None)
        if partition:
            args["partition_by"] = partition
        self._flink_partition = []


class FlowSQL(Dialect):
    """The flowsql dialect (sqlglot default dialect plus streaming clauses)."""

    NULL_ORDERING = "nulls_are_last"

    class Tokenizer(Tokenizer):
        # Flink and ksqlDB quote identifiers with backticks, standard SQL with ".
        IDENTIFIERS = ['"', "`"]

    Parser = FlowParser
