"""The error hierarchy: one root, one subclass per phase.

Every error a user can cause derives from :class:`FlowSQLError`. Phase errors
also derive from the matching builtin (``ValueError`` for bad input) so callers
that do not know flowsql can still catch them sensibly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from difflib import get_close_matches
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

_T = TypeVar("_T")


class FlowSQLError(Exception):
    """Root of every flowsql error. ``line``/``column`` (1-based; 0 = unknown)
    say where in the SQL text it is, when it is about the text."""

    line: int = 0
    column: int = 0


class SqlSyntaxError(FlowSQLError, ValueError):
    """SQL text that cannot be parsed.

    Carries the 1-based ``line`` and ``column`` of the offending token, the
    token itself, the SQL text and an optional hint. ``str()`` shows the line
    with the bad span marked.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int = 0,
        column: int = 0,
        token: str = "",
        sql: str = "",
        hint: str = "",
    ) -> None:
        self.message = message
        self.line = line
        self.column = column
        self.token = token
        self.sql = sql
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" at line {self.line}, column {self.column}" if self.line else ""
        near = f" near '{self.token}'" if self.token else ""
        text = f"{self.message}{where}{near}"
        if self.sql and self.line:
            lines = self.sql.splitlines()
            if 0 < self.line <= len(lines):
                src = lines[self.line - 1]
                width = max(1, len(self.token))
                marker = " " * max(0, self.column - 1) + "^" * width
                text += f"\n  {src}\n  {marker}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class PlanError(FlowSQLError, ValueError):
    """A query that parses but cannot be planned (unknown column, bad types...).

    ``line``/``column`` point at the offending expression when known.
    """

    def __init__(self, message: str, *, line: int = 0, column: int = 0, hint: str = "") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.hint = hint
        where = f" at line {line}, column {column}" if line else ""
        tail = f"\nhint: {hint}" if hint else ""
        super().__init__(f"{message}{where}{tail}")


class PlanErrors(PlanError):
    """Several independent plan errors of one statement (e.g. two unknown columns).

    ``errors`` lists them in source order; ``line``/``column`` are the first one's.
    """

    def __init__(self, errors: list[PlanError]) -> None:
        first = errors[0]
        super().__init__(first.message, line=first.line, column=first.column, hint=first.hint)
        self.errors = list(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


def raise_all(errors: list[PlanError]) -> None:
    """Raise nothing, the one error, or :class:`PlanErrors` for several."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PlanErrors(errors)


def collect(errors: list[PlanError], step: Callable[..., _T], *args: object) -> _T | None:
    """``step(*args)``, or None with its error(s) added to ``errors``: how planning
    goes on after an error to report the independent ones too."""
    try:
        return step(*args)
    except PlanErrors as err:
        errors.extend(err.errors)
    except PlanError as err:
        errors.append(err)
    return None


class UnsupportedError(PlanError):
    """A construct flowsql recognises but does not implement."""


class ExecutionError(FlowSQLError, RuntimeError):
    """A failure while running a job; names the job, operator and offset when known."""


class ConnectorError(FlowSQLError, OSError):
    """A source or sink that cannot be opened, read or written."""


class ConfigError(FlowSQLError, ValueError):
    """A configuration value that is wrong: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str | Iterable[str]) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed if isinstance(allowed, str) else ", ".join(map(str, allowed))
        super().__init__(f"invalid value {value!r} for '{key}': allowed {self.allowed}")


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return a "did you mean 'x'?" hint for ``name`` or an empty string."""
    close = get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


class BatchError(ExecutionError):
    """A batch raised in a partition (bad data, e.g. a CAST that fails). The
    workers live on, as V1's engine would; the batch's outputs are dropped.

    With batches in flight the error surfaces on a later call: ``batch`` is the
    input batch that failed. ``process_batch`` raises it *before* accepting its
    own batch, so a caller applying a failure policy handles ``exc.batch`` and
    then gives its current batch again.
    """

    def __init__(self, message: str, batch: pa.RecordBatch | None) -> None:
        super().__init__(message)
        self.batch = batch
