"""How every ``flowsql`` command reports an error: one masked line on stderr and
an exit status (2: it could not start, 1: it failed while running)."""

from __future__ import annotations

from typing import NoReturn

import typer

from flowsql.redaction import redact_text


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` (secrets masked) on stderr and exit with ``code``."""
    typer.echo(f"error: {redact_text(message)}", err=True)
    raise typer.Exit(code)
