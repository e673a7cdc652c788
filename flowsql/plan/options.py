"""Every ``WITH`` key, declared once: name, type, default, allowed values, doc, aliases.

Two scopes:

- job keys (``'watermark.allowed_lateness'``, ``'failure.strategy'``, ...) configure
  the query or the job that runs it;
- stream keys ``'<stream>.<key>'`` configure one input or output; ``<stream>``
  is a FROM name, the created stream, or any name given a ``'<stream>.type'``.
  The stream's connector (its ``type``) decides which keys it takes; a Kafka
  stream passes everything under ``'<stream>.properties.'`` to its client,
  which checks it.

Readers call :func:`get` with a declared :class:`Option` and receive the typed
value (durations in ms, counts as int); old spellings are read as aliases.
:func:`validate` refuses a statement with an unknown key, naming the closest
known one. ``python -m flowsql.plan.options`` prints the reference table kept
in docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flowsql.errors import ConfigError, did_you_mean
from flowsql.plan.durations import parse_duration
from flowsql.plan.nodes import Statement

Kind = Literal["duration", "int", "bool", "string", "enum", "path", "columns"]

_ALLOWED_BY_KIND: dict[str, str] = {
    "duration": "a duration such as '500ms', '5s', '2 seconds', '1h' or a number of ms",
    "bool": "true or false",
    "string": "text",
    "path": "a file or directory path",
    "columns": "comma-separated column names",
}


@dataclass(frozen=True)
class Option:
    """One ``WITH`` key.

    ``default`` is written as in ``WITH`` (``'100ms'``) or None for "not set";
    ``aliases`` are older spellings that keep working.
    """

    name: str
    kind: Kind
    default: str | None
    doc: str
    allowed: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int | None = None

    @property
    def spellings(self) -> tuple[str, ...]:
        """The canonical name, then the aliases."""
        return (self.name, *self.aliases)

    def describe_allowed(self) -> str:
        """What a value may be, in words."""
        if self.allowed:
            return ", ".join(self.allowed)
        if self.kind == "int":
            upper = f" to {self.maximum}" if self.maximum is not None else " or more"
            return f"an integer {self.minimum}{upper}"
        return _ALLOWED_BY_KIND[self.kind]

    def parse(self, raw: str, key: str = "") -> Any:
        """The typed value of ``raw``: ms for a duration, int, bool or text.

        Raises:
            ConfigError: a value of the wrong type, naming ``key`` (default: the name).
        """
        if self.kind in ("string", "path", "columns"):
            return raw  # as written: connectors own their text
        try:
            return self._parse(str(raw).strip())
        except ValueError:
            raise ConfigError(key or self.name, raw, self.describe_allowed()) from None

    def _parse(self, text: str) -> Any:
        if self.kind == "duration":
            return parse_duration(text)
        if self.kind == "int":
            value = int(text)
            if value < self.minimum or (self.maximum is not None and value > self.maximum):
                raise ValueError(text)
            return value
        if self.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if self.kind == "enum":
            if text.lower() not in self.allowed:
                raise ValueError(text)
            return text.lower()
        raise ValueError(self.kind)


class UnknownOptionError(ConfigError):
    """A ``WITH`` key no job or connector takes."""

    def __init__(self, key: str, hint: str, known: Iterable[str]) -> None:
        super().__init__(key, None, sorted(known))
        self.hint = hint
        self.args = (f"unknown WITH key '{key}'" + (f"; {hint}" if hint else ""),)


# -- job keys ------------------------------------------------------------------------

ALLOWED_LATENESS = Option(
    "watermark.allowed_lateness",
    "duration",
    "0",
    "how far behind the largest event time the watermark trails",
)
LATE_DATA_STRATEGY = Option(
    "late.data.strategy",
    "enum",
    "drop",
    "what happens to a record of a closed window: counted, or counted and dead-lettered",
    allowed=("drop", "dlq"),
)
EVENT_TIME_FIELD = Option(
    "event.time.field", "string", None, "the event-time column of every input (else _timestamp)"
)
FAILURE_STRATEGY = Option(
    "failure.strategy",
    "enum",
    "send_to_dlq",
    "what happens when a batch raises while being processed",
    allowed=("send_to_dlq", "log_and_continue", "fail_batch", "retry_with_backoff"),
    aliases=("failure_strategy",),
)
MAX_RETRIES = Option(
    "retry.max_retries",
    "int",
    "3",
    "attempts after the first, for retry_with_backoff",
    aliases=("max_retries",),
    maximum=1000,
)
RETRY_BACKOFF = Option(
    "retry.backoff",
    "duration",
    "100ms",
    "wait before the first retry; doubled after each",
    aliases=("retry_backoff",),
)
DLQ_PATH = Option(
    "dlq.path", "path", None, "also write the job's dead letters to this file as JSON lines"
)
DLQ_TOPIC = Option("dlq.topic", "string", None, "Kafka topic for the job's dead letters")
DLQ_BOOTSTRAP = Option(
    "dlq.bootstrap.servers",
    "string",
    None,
    "cluster of dlq.topic (default: the source's)",
)
HEARTBEAT_TIMEOUT = Option(
    "v2.heartbeat.timeout",
    "duration",
    "10s",
    "a V2 worker silent this long is stopped and the job fails; 0 turns the check off",
)
PROCESSING_GUARANTEE = Option(
    "processing.guarantee",
    "enum",
    "at_least_once",
    "Kafka jobs: exactly_once uses Kafka transactions",
    allowed=("at_least_once", "exactly_once"),
)
CHECKPOINT_INTERVAL = Option(
    "checkpoint.interval", "duration", "5s", "Kafka jobs: time between checkpoints"
)
CHECKPOINT_DIR = Option(
    "checkpoint.dir",
    "path",
    None,
    "Kafka jobs: checkpoint directory (default $FLOWSQL_CHECKPOINT_DIR or .flowsql/checkpoints)",
)
RESTART_ATTEMPTS = Option(
    "restart.attempts", "int", "0", "Kafka jobs on the server: restarts from the last checkpoint"
)
RESTART_BACKOFF = Option(
    "restart.backoff", "duration", "1s", "Kafka jobs on the server: wait between restarts"
)
STATE_PARTITIONING = Option(
    "state.partitioning",
    "enum",
    None,
    "Kafka jobs: keep state by source partition or repartition by the routing key"
    " (default: chosen from the query)",
    allowed=("partition", "repartition"),
)
INSTANCE_ID = Option(
    "instance.id",
    "string",
    None,
    "Kafka jobs: this instance's part of the transactional.id (default $FLOWSQL_INSTANCE"
    " or the host name)",
)
BOOTSTRAP_SERVERS = Option(
    "bootstrap.servers",
    "string",
    None,
    "Kafka cluster of every Kafka stream without its own (default $FLOWSQL_KAFKA_BOOTSTRAP"
    " or localhost:9092)",
)
GROUP_ID = Option(
    "group.id", "string", None, "consumer group of every Kafka source without its own"
)
AUTO_OFFSET_RESET = Option(
    "auto.offset.reset",
    "enum",
    "earliest",
    "where a Kafka source without committed offsets starts",
    allowed=("earliest", "latest"),
)
BATCH_SIZE = Option("batch.size", "int", "10000", "rows per Kafka batch", minimum=1)

JOB_OPTIONS: tuple[Option, ...] = (
    ALLOWED_LATENESS,
    LATE_DATA_STRATEGY,
    EVENT_TIME_FIELD,
    FAILURE_STRATEGY,
    MAX_RETRIES,
    RETRY_BACKOFF,
    DLQ_PATH,
    DLQ_TOPIC,
    DLQ_BOOTSTRAP,
    HEARTBEAT_TIMEOUT,
    PROCESSING_GUARANTEE,
    CHECKPOINT_INTERVAL,
    CHECKPOINT_DIR,
    RESTART_ATTEMPTS,
    RESTART_BACKOFF,
    STATE_PARTITIONING,
    INSTANCE_ID,
    BOOTSTRAP_SERVERS,
    GROUP_ID,
    AUTO_OFFSET_RESET,
    BATCH_SIZE,
)

# -- stream keys ('<stream>.<key>') -------------------------------------------------

SOURCE_TYPES = ("file_source", "generator", "kafka_source")
SINK_TYPES = ("file_sink", "kafka_sink", "stdout")

STREAM_TYPE = Option("type", "enum", None, "the connector", allowed=(*SOURCE_TYPES, *SINK_TYPES))
STREAM_EVENT_TIME_FIELD = Option(
    "event.time.field", "string", None, "this input's event-time column"
)
FILE_PATH = Option("path", "path", None, "the file (a source: also a directory or glob)")
FILE_FORMAT = Option(
    "format", "string", None, "jsonl (also json, ndjson), csv or parquet; default by extension"
)
FILE_DELIMITER = Option("delimiter", "string", ",", "CSV field separator ('tab' or '\\t' = tab)")

GENERATOR_KIND = Option(
    "kind",
    "enum",
    None,
    "what to generate (default: the stream name when it is a kind, else trades)",
    allowed=("trades", "orders", "market_data", "readings"),
)
GENERATOR_RECORDS = Option(
    "records", "string", "1000000", "records to produce; 'unbounded' = no end"
)
GENERATOR_SYMBOLS = Option(
    "symbols",
    "int",
    None,
    "distinct keys (default by kind: 100 symbols, 10000 customers, 413 stations)",
    aliases=("keys", "stations", "customers"),
    minimum=1,
    maximum=(1 << 31) - 1,
)
GENERATOR_RATE = Option("rate", "string", "100000", "event-time events per second (> 0)")
GENERATOR_SEED = Option("seed", "int", "42", "random seed")
GENERATOR_BATCH = Option(
    "batch_size",
    "int",
    None,
    "rows per batch (default: the run's batch size)",
    aliases=("batch.size",),
    minimum=1,
)
GENERATOR_START = Option(
    "start", "string", "2024-01-01T00:00:00Z", "first event time: ISO-8601 or epoch ms"
)
GENERATOR_START_MS = Option("start_ms", "int", None, "first event time in epoch ms")

KAFKA_TOPIC = Option("topic", "string", None, "the topic (default: the stream name)")
KAFKA_BOOTSTRAP = Option("bootstrap.servers", "string", None, "the cluster (see job key)")
KAFKA_GROUP = Option("group.id", "string", None, "consumer group (default flowsql-<job>)")
KAFKA_OFFSET_RESET = Option(
    "auto.offset.reset",
    "enum",
    "earliest",
    "where to start without committed offsets",
    allowed=("earliest", "latest"),
)
KAFKA_BOUNDED = Option(
    "bounded",
    "enum",
    None,
    "latest = stop at the offsets found at start",
    allowed=("latest", "none", "false"),
)
KAFKA_FORMAT = Option("format", "string", "json", "json, avro, protobuf, string, bytes or raw")
KAFKA_BATCH_SIZE = Option("batch.size", "int", "10000", "rows per batch", minimum=1)
KAFKA_MAX_WAIT = Option(
    "batch.max.wait.ms", "int", "100", "longest wait to fill a batch, in ms", minimum=1
)
KAFKA_KEY = Option("key", "columns", None, "sink: the columns that key each message")
KAFKA_KEY_COLUMNS = Option(
    "key.columns", "columns", None, "source: the columns the message key holds"
)
KAFKA_PARTITIONS = Option("partitions", "string", None, "source: only these partitions, e.g. '0,2'")
KAFKA_IDLE_TIMEOUT = Option(
    "idle.timeout",
    "duration",
    "10s",
    "source: a partition silent this long stops holding the watermark back",
)
KAFKA_MAX_RATE = Option(
    "max.rate", "string", "0", "source: records per second at most; 0 = no limit"
)
AVRO_SCHEMA = Option(
    "avro.schema", "string", None, "Avro record schema (JSON)", aliases=("schema",)
)
AVRO_SCHEMA_FILE = Option(
    "avro.schema.file", "path", None, "file of the Avro schema", aliases=("schema.file",)
)
AVRO_CONFLUENT = Option(
    "avro.confluent", "bool", "false", "Confluent wire format (magic byte and schema id)"
)
PROTO_FILE = Option(
    "proto.file", "path", None, ".proto file (protobuf format)", aliases=("schema.file",)
)
PROTO_MESSAGE = Option("proto.message", "string", None, "message name in the .proto file")

#: Under ``'<stream>.properties.'``: passed to the Kafka client, which checks it.
PASSTHROUGH = "properties."

_COMMON = (STREAM_TYPE, STREAM_EVENT_TIME_FIELD)
_FILE = (FILE_PATH, FILE_FORMAT)
_SERDE = (AVRO_SCHEMA, AVRO_SCHEMA_FILE, AVRO_CONFLUENT, PROTO_FILE, PROTO_MESSAGE)
_KAFKA = (KAFKA_TOPIC, KAFKA_BOOTSTRAP, KAFKA_FORMAT, KAFKA_BATCH_SIZE, KAFKA_MAX_WAIT, *_SERDE)

#: The keys each connector takes, by ``'<stream>.type'``.
CONNECTOR_OPTIONS: dict[str, tuple[Option, ...]] = {
    "file_source": (*_COMMON, *_FILE, FILE_DELIMITER),
    "file_sink": (*_COMMON, *_FILE),
    "generator": (
        *_COMMON,
        GENERATOR_KIND,
        GENERATOR_RECORDS,
        GENERATOR_SYMBOLS,
        GENERATOR_RATE,
        GENERATOR_SEED,
        GENERATOR_BATCH,
        GENERATOR_START,
        GENERATOR_START_MS,
    ),
    "kafka_source": (
        *_COMMON,
        *_KAFKA,
        KAFKA_GROUP,
        KAFKA_OFFSET_RESET,
        KAFKA_BOUNDED,
        KAFKA_KEY_COLUMNS,
        KAFKA_PARTITIONS,
        KAFKA_MAX_RATE,
        KAFKA_IDLE_TIMEOUT,
    ),
    "kafka_sink": (*_COMMON, *_KAFKA, KAFKA_KEY),
    "stdout": _COMMON,
}
_PASSTHROUGH_TYPES = ("kafka_source", "kafka_sink")


# -- reading ---------------------------------------------------------------------


def find(props: Mapping[str, str], option: Option, stream: str = "") -> tuple[str, str] | None:
    """``(key as written, value)`` of ``option`` (of ``stream``, when given), or None."""
    prefix = f"{stream}." if stream else ""
    for spelling in option.spellings:
        key = prefix + spelling
        if key in props:
            return key, props[key]
    return None


def get(props: Mapping[str, str], option: Option, stream: str = "", job: str = "") -> Any:
    """The typed value of ``option`` in ``props``, else its typed default (None if unset).

    Args:
        props: a statement's WITH pairs.
        option: the declared key.
        stream: read ``'<stream>.<key>'``.
        job: prefixed to the key in errors (``'<job>.<key>'``).

    Raises:
        ConfigError: a value of the wrong type, naming the key as written.
    """
    found = find(props, option, stream)
    if found is None:
        return None if option.default is None else option.parse(option.default)
    key, raw = found
    return option.parse(raw, f"{job}.{key}" if job else key)


# -- validation ------------------------------------------------------------------


def validate(statement: Statement) -> None:
    """Refuse a statement whose WITH holds a key no job or connector takes.

    Raises:
        UnknownOptionError: the first unknown key, with the closest known key.
    """
    props = statement.properties
    streams = stream_names(statement)
    for key in props:
        if not _is_known(key, props, streams):
            known = known_keys(props, streams)
            raise UnknownOptionError(key, _hint(key, known, streams), known)


def stream_names(statement: Statement) -> tuple[str, ...]:
    """Names that take stream keys: the created stream, FROM names, and names declared
    a sink (a bare SELECT's output); a source type on another name is a typo."""
    declared = [
        k[: -len(".type")]
        for k, v in statement.properties.items()
        if k.endswith(".type") and v.strip().lower() not in SOURCE_TYPES
    ]
    return tuple(dict.fromkeys([statement.name, *statement.sources, *declared]))


def connector_options(connector: str | None) -> tuple[Option, ...]:
    """The stream keys of ``connector``; all of them when it is not known (yet): an
    input without a type may be bound on the command line."""
    if connector in CONNECTOR_OPTIONS:
        return CONNECTOR_OPTIONS[connector]
    every = (o for options in CONNECTOR_OPTIONS.values() for o in options)
    return tuple(dict.fromkeys(every))


def known_keys(props: Mapping[str, str], streams: Iterable[str]) -> list[str]:
    """Every canonical key a statement with these streams could take."""
    keys = [o.name for o in JOB_OPTIONS]
    for stream in streams:
        keys += [f"{stream}.{o.name}" for o in connector_options(_connector(props, stream))]
    return keys


_JOB_SPELLINGS = frozenset(s for o in JOB_OPTIONS for s in o.spellings)


def _is_known(key: str, props: Mapping[str, str], streams: tuple[str, ...]) -> bool:
    if key in _JOB_SPELLINGS:
        return True
    stream, _, rest = key.partition(".")
    if stream not in streams or not rest:
        return False
    connector = _connector(props, stream)
    if rest.startswith(PASSTHROUGH) and len(rest) > len(PASSTHROUGH):
        return connector is None or connector in _PASSTHROUGH_TYPES
    return any(rest in o.spellings for o in connector_options(connector))


def _connector(props: Mapping[str, str], stream: str) -> str | None:
    declared = props.get(f"{stream}.type")
    if declared is not None:
        return declared.strip().lower()
    return "file_source" if f"{stream}.path" in props else None


def _hint(key: str, known: list[str], streams: tuple[str, ...]) -> str:
    hint = did_you_mean(key, known)
    if hint:
        return hint
    short = key.lower().replace("_", ".")
    for stream in streams:
        hint = did_you_mean(f"{stream}.{short.removeprefix('kafka.')}", known)
        if hint:
            return hint
    return ""


# -- reference ---------------------------------------------------------------------


def markdown() -> str:
    """The reference tables of every key (kept in docs/configuration.md)."""
    lines = ["### Job keys", "", *_table(JOB_OPTIONS, "")]
    for connector, options in CONNECTOR_OPTIONS.items():
        lines += ["", f"### `'<stream>.type' = '{connector}'`", "", *_table(options, "<stream>.")]
        if connector in _PASSTHROUGH_TYPES:
            lines.append(
                f"| `<stream>.{PASSTHROUGH}<name>` | | a librdkafka client setting"
                " | passed to the Kafka client, which checks it |"
            )
    return "\n".join(lines) + "\n"


def _table(options: Iterable[Option], prefix: str) -> list[str]:
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for o in options:
        key = f"`{prefix}{o.name}`" + "".join(f" (alias `{prefix}{a}`)" for a in o.aliases)
        default = f"`{o.default}`" if o.default is not None else ""
        rows.append(f"| {key} | {default} | {o.describe_allowed()} | {o.doc} |")
    return rows


if __name__ == "__main__":
    print(markdown(), end="")
