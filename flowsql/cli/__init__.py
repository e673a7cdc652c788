"""The ``flowsql`` command.

One module per group of commands, each registering itself on :data:`app`:
run/demo/explain/validate (``flowsql.cli.run``), the job server and its client
commands (``flowsql.cli.server``) and benchmarks (``flowsql.cli.bench``).
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

from flowsql.redaction import install_log_redaction

app = typer.Typer(
    name="flowsql",
    help="Streaming SQL over Kafka topics, files and generated data.",
    no_args_is_help=True,
    add_completion=False,
)

_COMMAND_MODULES = ("flowsql.cli.run", "flowsql.cli.server", "flowsql.cli.bench")


def _register() -> None:
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)


def main() -> None:
    """Entry point of the console script."""
    # One core per engine: V1 is single-threaded, decode included, and V2 gets
    # its parallelism from partitions (each worker single-threaded too). polars
    # would otherwise decode JSON on every core. Set POLARS_MAX_THREADS to
    # override; it must be set before polars is imported.
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    install_log_redaction()
    _register()
    try:
        app()
    except Exception:  # a bug: its traceback goes through the log, secrets masked
        logging.getLogger("flowsql").critical("flowsql crashed", exc_info=True)
        raise SystemExit(1) from None
