"""The settings of a Kafka job, read from its statement's WITH pairs
(:class:`KafkaJobSpec`), and its counters (:class:`JobStats`)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flowsql.connectors.kafka.client import TopicSpec
from flowsql.errors import ConfigError
from flowsql.plan import nodes as n
from flowsql.plan import options
from flowsql.plan.routing import routing
from flowsql.records import DeadLetter, DeadLetterSink
from flowsql.runtime.driver import Counters
from flowsql.state.checkpoint import CHECKPOINT_DIR_ENV

log = logging.getLogger(__name__)

GUARANTEES = options.PROCESSING_GUARANTEE.allowed
#: Environment variable naming this process's instance (part of its transactional.id).
INSTANCE_ENV = "FLOWSQL_INSTANCE"

# -- settings ----------------------------------------------------------------


@dataclass(frozen=True)
class KafkaJobSpec:
    """What a Kafka job needs to know, read from the statement's WITH pairs."""

    job: str
    source: TopicSpec
    output: TopicSpec | None
    group_id: str
    guarantee: str = "at_least_once"
    checkpoint_interval_ms: int = 5_000
    checkpoint_dir: str = ".flowsql/checkpoints"
    repartition: bool = False
    route_columns: tuple[str, ...] = ()
    repartition_topic: str = ""
    max_rate: float = 0.0
    dlq_topic: str | None = None
    static_partitions: tuple[int, ...] = ()
    restart_attempts: int = 0  # on the job server: restarts from the last checkpoint
    restart_backoff_ms: int = 1_000
    idle_timeout_ms: int = 10_000

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"

    instance: str = ""

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted instance fences (aborts) its predecessor's
        open transaction at once. Instances of one job need distinct ``instance.id``s."""
        return f"{self.group_id}.{self.job}.{self.instance}"

    @classmethod
    def from_statement(cls, statement: n.Statement) -> KafkaJobSpec:
        props = statement.properties
        name = _kafka_source_name(statement)
        source = TopicSpec.from_properties(name, props)
        group = source.group_id or f"flowsql-{statement.name}"
        guarantee = options.get(props, options.PROCESSING_GUARANTEE)
        repartition, columns = _partitioning(statement, name)
        return cls(
            job=statement.name,
            source=source,
            output=_kafka_output(statement),
            group_id=group,
            guarantee=guarantee,
            checkpoint_interval_ms=options.get(props, options.CHECKPOINT_INTERVAL),
            checkpoint_dir=options.get(props, options.CHECKPOINT_DIR)
            or os.environ.get(CHECKPOINT_DIR_ENV, ".flowsql/checkpoints"),
            repartition=repartition,
            route_columns=columns,
            repartition_topic=f"{group}.{statement.name}.repartition",
            max_rate=float(options.get(props, options.KAFKA_MAX_RATE, name) or 0),
            dlq_topic=options.get(props, options.DLQ_TOPIC),
            static_partitions=_int_list(props, name),
            instance=_instance(props, name),
            restart_attempts=options.get(props, options.RESTART_ATTEMPTS),
            restart_backoff_ms=options.get(props, options.RESTART_BACKOFF),
            idle_timeout_ms=options.get(props, options.KAFKA_IDLE_TIMEOUT, name),
        )


def is_kafka_job(statement: n.Statement) -> bool:
    """True when the statement reads a Kafka source declared in WITH."""
    props = statement.properties
    return any(props.get(f"{s}.type") == "kafka_source" for s in statement.sources)


def _kafka_source_name(statement: n.Statement) -> str:
    for source in statement.sources:
        if statement.properties.get(f"{source}.type") == "kafka_source":
            return source
    raise ConfigError(
        f"{statement.sources[0] if statement.sources else 'source'}.type",
        None,
        "'kafka_source' for a Kafka job",
    )


def _kafka_output(statement: n.Statement) -> TopicSpec | None:
    props = statement.properties
    for key, value in props.items():
        if key.endswith(".type") and value == "kafka_sink":
            return TopicSpec.from_properties(key[: -len(".type")], props)
    return None


def _partitioning(statement: n.Statement, source: str) -> tuple[bool, tuple[str, ...]]:
    """(repartition?, routing columns). No columns with repartition = all rows to partition 0."""
    forced = options.get(statement.properties, options.STATE_PARTITIONING) or ""
    route = routing(statement)
    if forced == "partition" or (not forced and route.strategy == "hash" and not route.key_columns):
        return False, route.key_columns
    if route.strategy != "hash":
        return True, ()
    declared = options.get(statement.properties, options.KAFKA_KEY_COLUMNS, source) or ""
    keyed = {c.strip() for c in declared.split(",") if c.strip()}
    if forced != "repartition" and (
        set(route.key_columns) == {"_key"} or (keyed and keyed == set(route.key_columns))
    ):
        return False, route.key_columns
    return True, route.key_columns


def _instance(props: Mapping[str, str], source: str) -> str:
    explicit = options.get(props, options.INSTANCE_ID) or os.environ.get(INSTANCE_ENV)
    if explicit:
        return explicit
    static = (options.get(props, options.KAFKA_PARTITIONS, source) or "").replace(",", "-")
    static = static.replace(" ", "")
    return socket.gethostname() + (f"-p{static}" if static else "")


def _int_list(props: Mapping[str, str], source: str) -> tuple[int, ...]:
    raw = options.get(props, options.KAFKA_PARTITIONS, source) or ""
    try:
        return tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        key = f"{source}.{options.KAFKA_PARTITIONS.name}"
        raise ConfigError(key, raw, "comma-separated partition numbers, e.g. '0,2'") from None


# -- counters ----------------------------------------------------------------


@dataclass
class JobStats(Counters):
    """Counters of a Kafka job (exposed in status and metrics), written by the job
    thread only; other threads read them without a lock."""

    dead_lettered: int = 0
    late_records: int = 0
    checkpoints: int = 0
    rebalances: int = 0
    restored_partitions: int = 0
    max_in_flight: int = 0
    #: rows read back from the repartition topic (``records_in`` counts each
    #: input record once, when it is decoded from the source topic)
    records_repartitioned: int = 0
    #: per source partition: its watermark (max event time - lateness; None:
    #: nothing seen yet), over every task that saw its rows
    partition_watermarks: dict[int, int | None] = field(default_factory=dict)
    #: the lowest watermark over the tasks (the one holding results back)
    watermark: int | None = None
    max_event_time: int | None = None


class CountingLetters:
    """Counts dead letters into the job's stats, then passes them on (or logs them)."""

    def __init__(self, inner: Sequence[DeadLetterSink], stats: JobStats) -> None:
        self.inner = list(inner)
        self.stats = stats

    def write(self, letters: list[DeadLetter]) -> None:
        self.stats.dead_lettered += len(letters)
        for sink in self.inner:
            sink.write(letters)
        if self.inner:
            return
        for letter in letters:
            log.warning(
                "dead letter from %s at %s: %s", letter.source, letter.position, letter.error
            )
