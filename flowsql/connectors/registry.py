"""Sources and sinks of a statement, from the CLI and from SQL ``WITH``.

Keys follow the reference engine, prefixed by the stream name, and are declared
with their defaults in :mod:`flowsql.plan.options` (docs/configuration.md)::

    'trades.type' = 'file_source', 'trades.path' = 'trades.jsonl',
    'trades.format' = 'jsonl'              -- jsonl | json | csv | parquet
    'trades.type' = 'generator', 'trades.kind' = 'trades',
    'trades.records' = '1000000', 'trades.symbols' = '100',
    'trades.rate' = '100000', 'trades.seed' = '42'
    'trades.type' = 'kafka_source', 'trades.topic' = ...  -- see connectors.kafka
    'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'out.format' = 'jsonl'
    'out.type' = 'kafka_sink' | 'stdout'

where ``trades`` is a FROM name and ``out`` the name of ``CREATE STREAM out``.
CLI inputs (``--input trades=PATH``) take precedence over ``WITH``; a CLI
input may also be ``generator`` or ``generator:kind=orders,records=1000``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from flowsql.connectors import generator
from flowsql.connectors.base import Sink, Source
from flowsql.connectors.files import format_of, open_sink, open_source
from flowsql.connectors.kafka.client import (
    kafka_sink_from_properties,
    kafka_source_from_properties,
    output_key_columns,
)
from flowsql.connectors.paths import Roots
from flowsql.connectors.stdout import StdoutJsonlSink, TableSink
from flowsql.errors import ConfigError, ConnectorError
from flowsql.plan import options
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink

log = logging.getLogger(__name__)

#: Every spelling of the generator's keys, of the keys every stream takes (its type
#: and event-time column), and of the job keys (a source named ``dlq`` has
#: ``'dlq.path'`` among its keys).
_GENERATOR_KEYS = frozenset(s for o in options.CONNECTOR_OPTIONS["generator"] for s in o.spellings)
_STREAM_KEYS = frozenset(
    s for o in (options.STREAM_TYPE, options.STREAM_EVENT_TIME_FIELD) for s in o.spellings
)
_JOB_KEYS = frozenset(s for o in options.JOB_OPTIONS for s in o.spellings)


def sources_for(
    statement: Statement,
    cli_inputs: Mapping[str, str] | None = None,
    *,
    dead_letters: DeadLetterSink | None = None,
    batch_size: int = 10_000,
    base_dir: str | Path | None = None,
    roots: Roots = None,
) -> dict[str, Source]:
    """One source per FROM name of ``statement``.

    Args:
        statement: the planned statement.
        cli_inputs: FROM name -> file path (or generator spec); wins over WITH.
        dead_letters: where sources send undecodable records.
        batch_size: rows per batch.
        base_dir: also tried for relative paths not found from the working
            directory (the SQL file's folder).
        roots: directories file sources must be in each time they open their
            file (the job server's ``server.file_roots``); None = anywhere.

    Raises:
        ConnectorError: an input bound nowhere, or a path that does not exist.
        ConfigError: a bad connector type, format or option.
    """
    cli_inputs = cli_inputs or {}
    sources: dict[str, Source] = {}
    for name in dict.fromkeys(statement.sources):
        if name in cli_inputs:
            spec = cli_inputs[name]
            sources[name] = _cli_source(name, spec, dead_letters, batch_size, base_dir)
        else:
            sources[name] = _declared_source(
                statement, name, dead_letters, batch_size, base_dir, roots
            )
    return sources


def _cli_source(
    name: str,
    spec: str,
    dead_letters: DeadLetterSink | None,
    batch_size: int,
    base_dir: str | Path | None,
) -> Source:
    if spec == "generator" or spec.startswith("generator:"):
        pairs = {f"{name}.{key}": value for key, value in _pairs(spec.partition(":")[2])}
        return _generator(name, pairs, batch_size)
    path = _resolve(spec, base_dir)
    return open_source(path, name=name, dead_letters=dead_letters, batch_size=batch_size)


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError("generator input", item, "key=value pairs, e.g. records=1000")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _declared_source(
    statement: Statement,
    name: str,
    dead_letters: DeadLetterSink | None,
    batch_size: int,
    base_dir: str | Path | None,
    roots: Roots = None,
) -> Source:
    props = statement.properties
    kind = _connector(props, name, options.SOURCE_TYPES)
    if kind is None and options.find(props, options.FILE_PATH, name):
        kind = "file_source"
    if kind is None:
        raise ConnectorError(
            f"no input for '{name}': pass --input {name}=PATH, or declare it in WITH"
            f" ('{name}.type'='file_source', '{name}.path'='...')"
        )
    if kind == "file_source":
        path = options.get(props, options.FILE_PATH, name)
        if not path:
            raise ConfigError(f"{name}.path", None, "the path of the input file")
        return open_source(
            _resolve(path, base_dir),
            name=name,
            format=options.get(props, options.FILE_FORMAT, name),
            dead_letters=dead_letters,
            batch_size=batch_size,
            roots=roots,
            **_file_options(props, name),
        )
    if kind == "generator":
        return _generator(name, props, batch_size)
    return kafka_source_from_properties(name, props, dead_letters)


def _connector(props: Mapping[str, str], stream: str, allowed: tuple[str, ...]) -> str | None:
    """The declared ``'<stream>.type'`` (one of ``allowed``), or None when unset."""
    found = options.find(props, options.STREAM_TYPE, stream)
    if found is None or not found[1].strip():
        return None
    key, raw = found
    kind = raw.strip().lower()
    if kind not in allowed:
        raise ConfigError(key, raw, allowed)
    return kind


def _file_options(props: Mapping[str, str], name: str) -> dict[str, Any]:
    found = options.find(props, options.FILE_DELIMITER, name)
    if found is None or not found[1]:
        return {}  # the source's own default
    delimiter = found[1]
    return {"delimiter": "\t" if delimiter in ("\\t", "tab") else delimiter}


def _generator(name: str, props: Mapping[str, str], batch_size: int) -> Source:
    """A generator from the ``'<name>.<key>'`` pairs of ``props`` (other keys are
    another stream's or the job's); a key the generator does not take is refused."""
    prefix = f"{name}."
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    for key, value in props.items():
        short = key.removeprefix(prefix)
        if short == key or short in _STREAM_KEYS or key in _JOB_KEYS:
            continue
        if short not in _GENERATOR_KEYS:
            allowed = [o.name for o in options.CONNECTOR_OPTIONS["generator"]]
            raise ConfigError(key, value, allowed)
        if short not in options.GENERATOR_KIND.spellings:
            kwargs[short] = value
    kind = options.get(props, options.GENERATOR_KIND, name)
    if kind is None:
        kind = name if name in generator.KINDS else "trades"
    return generator.make_generator(kind, name=name, **kwargs)


def _resolve(path: str, base_dir: str | Path | None) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or base_dir is None:
        return p
    alt = Path(base_dir) / p
    return alt if alt.exists() else p


def sink_for(
    statement: Statement,
    output: str | Path | None = None,
    *,
    console: Console | None = None,
    atomic: bool = True,
    roots: Roots = None,
) -> Sink:
    """Where ``statement``'s results go.

    ``output`` (``--output``) wins: a file path (format by extension, else
    ``'<stream>.format'``) or ``-`` for JSON lines on stdout. Else the sink
    declared for the stream in WITH, else a table on the console. File sinks
    are ``atomic`` by default: the file appears when the job closes it. A file
    sink never takes a name Python or a shell could run, and with ``roots`` it
    is checked against them when it opens its file
    (:mod:`flowsql.connectors.paths`).
    """
    props = statement.properties
    stream = sink_stream(statement)
    declared_format = options.get(props, options.FILE_FORMAT, stream)
    if output is not None:
        if str(output) == "-":
            return StdoutJsonlSink()
        fmt = _output_format(output, declared_format)
        return open_sink(output, format=fmt, atomic=atomic, key="--output", roots=roots)
    kind = _connector(props, stream, options.SINK_TYPES)
    if kind is None or kind == "stdout":
        return TableSink(console, title=statement.name if statement.kind != "select" else "")
    if kind == "file_sink":
        path = options.get(props, options.FILE_PATH, stream)
        if not path:
            raise ConfigError(f"{stream}.path", None, "the path of the output file")
        return open_sink(
            Path(path).expanduser(),
            format=declared_format,
            atomic=atomic,
            key=f"{stream}.path",
            roots=roots,
        )
    return kafka_sink_from_properties(stream, props, output_key_columns(statement, stream))


def sink_stream(statement: Statement) -> str:
    """The name the output's keys use: the created stream, or for a bare SELECT
    the one ``'<x>.type'`` that names a sink."""
    props = statement.properties
    if options.find(props, options.STREAM_TYPE, statement.name):
        return statement.name
    suffix = f".{options.STREAM_TYPE.name}"
    declared = [
        k.removesuffix(suffix)
        for k, v in props.items()
        if k.endswith(suffix) and v.strip().lower() in options.SINK_TYPES
    ]
    return declared[0] if len(declared) == 1 else statement.name


def _output_format(output: str | Path, declared: str | None) -> str | None:
    try:
        format_of(output)
        return None
    except ConfigError:
        if declared:
            return declared
        raise
