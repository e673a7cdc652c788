"""Sources and sinks of a statement, from the CLI and from SQL ``WITH``.

Keys follow the reference engine, prefixed by the stream name::

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

from flowsql.connectors.base import Sink, Source
from flowsql.connectors.files import format_of, open_sink, open_source
from flowsql.connectors.generator import KINDS, make_generator
from flowsql.connectors.paths import Roots
from flowsql.connectors.stdout import StdoutJsonlSink, TableSink
from flowsql.errors import ConfigError, ConnectorError
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetterSink

log = logging.getLogger(__name__)

SOURCE_TYPES = ("file_source", "generator", "kafka_source")
SINK_TYPES = ("file_sink", "kafka_sink", "stdout")

#: Per-stream keys that configure the engine rather than the connector.
_ENGINE_KEYS = ("type", "event.time.field", "event.time.format", "watermark.")
_GENERATOR_KEYS = {
    "kind": "kind",
    "records": "records",
    "symbols": "symbols",
    "keys": "symbols",
    "stations": "symbols",
    "customers": "symbols",
    "rate": "rate",
    "seed": "seed",
    "batch_size": "batch_size",
    "batch.size": "batch_size",
    "start": "start",
    "start_ms": "start_ms",
}


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
        options = dict(_pairs(spec.partition(":")[2]))
        return _generator(name, options, batch_size)
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
    kind = props.get(f"{name}.type") or ("file_source" if f"{name}.path" in props else None)
    if kind is None:
        raise ConnectorError(
            f"no input for '{name}': pass --input {name}=PATH, or declare it in WITH"
            f" ('{name}.type'='file_source', '{name}.path'='...')"
        )
    if kind == "file_source":
        path = props.get(f"{name}.path")
        if not path:
            raise ConfigError(f"{name}.path", None, "the path of the input file")
        options = _file_options(props, name)
        return open_source(
            _resolve(path, base_dir),
            name=name,
            format=props.get(f"{name}.format"),
            dead_letters=dead_letters,
            batch_size=batch_size,
            roots=roots,
            **options,
        )
    if kind == "generator":
        return _generator(name, _prefixed(props, name), batch_size)
    if kind == "kafka_source":
        from flowsql.connectors.kafka.client import kafka_source_from_properties

        return kafka_source_from_properties(name, props, dead_letters)
    raise ConfigError(f"{name}.type", kind, SOURCE_TYPES)


def _prefixed(props: Mapping[str, str], name: str) -> dict[str, str]:
    """The ``'<name>.key'`` properties as ``key -> value``, engine keys left out."""
    prefix = f"{name}."
    out = {}
    for key, value in props.items():
        if key.startswith(prefix):
            short = key[len(prefix) :]
            if not short.startswith(_ENGINE_KEYS):
                out[short] = value
    return out


def _file_options(props: Mapping[str, str], name: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    delimiter = props.get(f"{name}.delimiter")
    if delimiter:
        options["delimiter"] = "\t" if delimiter in ("\\t", "tab") else delimiter
    return options


def _generator(name: str, options: Mapping[str, str], batch_size: int) -> Source:
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    kind = name if name in KINDS else "trades"
    for key, value in options.items():
        if key in ("path", "format"):
            continue
        if key not in _GENERATOR_KEYS:
            raise ConfigError(f"{name}.{key}", value, sorted(set(_GENERATOR_KEYS)))
        if _GENERATOR_KEYS[key] == "kind":
            kind = value
        else:
            kwargs[_GENERATOR_KEYS[key]] = value
    return make_generator(kind, name=name, **kwargs)


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
    if output is not None:
        if str(output) == "-":
            return StdoutJsonlSink()
        fmt = _output_format(output, props.get(f"{stream}.format"))
        return open_sink(output, format=fmt, atomic=atomic, key="--output", roots=roots)
    kind = props.get(f"{stream}.type")
    if kind is None or kind == "stdout":
        return TableSink(console, title=statement.name if statement.kind != "select" else "")
    if kind == "file_sink":
        path = props.get(f"{stream}.path")
        if not path:
            raise ConfigError(f"{stream}.path", None, "the path of the output file")
        return open_sink(
            Path(path).expanduser(),
            format=props.get(f"{stream}.format"),
            atomic=atomic,
            key=f"{stream}.path",
            roots=roots,
        )
    if kind == "kafka_sink":
        from flowsql.connectors.kafka.client import kafka_sink_from_properties, output_key_columns

        return kafka_sink_from_properties(stream, props, output_key_columns(statement, stream))
    raise ConfigError(f"{stream}.type", kind, SINK_TYPES)


def sink_stream(statement: Statement) -> str:
    """The name the output's keys use: the created stream, or for a bare SELECT
    the one ``'<x>.type'`` that names a sink."""
    props = statement.properties
    if f"{statement.name}.type" in props:
        return statement.name
    declared = [
        k[: -len(".type")] for k, v in props.items() if k.endswith(".type") and v in SINK_TYPES
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
