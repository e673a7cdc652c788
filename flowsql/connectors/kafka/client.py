"""Kafka sources and sinks (confluent-kafka), declared in SQL ``WITH``.

Keys follow the reference engine, prefixed by the stream name::

    'trades.type' = 'kafka_source', 'trades.topic' = 'trades',
    'trades.format' = 'json', 'trades.bootstrap.servers' = 'host:9092',
    'trades.group.id' = 'job-1', 'trades.auto.offset.reset' = 'earliest',
    'trades.bounded' = 'latest'
    'out.type' = 'kafka_sink', 'out.topic' = 'results', 'out.format' = 'json'

Any librdkafka setting can be passed as ``'<stream>.properties.<key>'``.
A record's key, timestamp, partition and offset become the system columns
``_key``, ``_timestamp``, ``_partition`` and ``_offset``. A sink keys its
messages by the query's GROUP BY columns, by ``'<stream>.key'`` (comma
separated columns) or by a selected ``_key`` column, and stamps each message
with its row's event time when the rows carry it (``MESSAGE_TIME``, see
:mod:`flowsql.plan.message_time`), else with the wall clock.

This module holds the plain :class:`KafkaSource` (all partitions merged into
one stream, no offset commits: for bounded reads, backfills and previews) and
:class:`KafkaSink`; ``flowsql.runtime.kafka_job`` runs Kafka jobs with
checkpoints, consumer groups and exactly-once on top of the same pieces.
"""

from __future__ import annotations

import logging
import operator
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from flowsql.connectors.serde import Deserializer, Serializer, deserializer_for, serializer_for
from flowsql.errors import ConfigError, ConnectorError
from flowsql.plan import nodes as n
from flowsql.plan.message_time import MESSAGE_TIME
from flowsql.records import KEY, OFFSET, PARTITION, TIMESTAMP, DeadLetter, DeadLetterSink

log = logging.getLogger(__name__)


class _OncePerMessage(logging.Filter):
    """Passes a client log message once per ``window_s``: librdkafka repeats
    the same line (a refused connection) many times a second."""

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        text = text.split("]: ", 1)[-1]  # without the thread/client prefix
        now = time.monotonic()
        if now - self._seen.get(text, -self.window_s) < self.window_s:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[text] = now
        return True


#: Where librdkafka's own log lines go (instead of raw lines on stderr), each
#: distinct line once a minute.
CLIENT_LOG = logging.getLogger("flowsql.kafka.client")
CLIENT_LOG.addFilter(_OncePerMessage())


def admin_config(bootstrap: str) -> dict[str, Any]:
    """librdkafka admin client settings."""
    return {"bootstrap.servers": bootstrap, "logger": CLIENT_LOG}


SOURCE_TYPE = "kafka_source"
SINK_TYPE = "kafka_sink"
#: Environment fallback for ``bootstrap.servers``.
BOOTSTRAP_ENV = "FLOWSQL_KAFKA_BOOTSTRAP"
DEFAULT_BATCH = 10_000
#: Header names on dead-letter messages.
DLQ_ERROR, DLQ_SOURCE, DLQ_POSITION, DLQ_OPERATOR = (
    "flowsql.error",
    "flowsql.source",
    "flowsql.position",
    "flowsql.operator",
)

ck: Any
try:  # confluent-kafka is the 'kafka' extra
    import confluent_kafka as ck
    import confluent_kafka.admin  # noqa: F401 - loads ck.admin
except ImportError:  # pragma: no cover - exercised only without the extra
    ck = None


def require_client() -> Any:
    """The confluent_kafka module, or a ConnectorError naming the extra to install."""
    if ck is None:
        raise ConnectorError("Kafka needs confluent-kafka: pip install 'flowsql[kafka]'")
    return ck


# -- clients -----------------------------------------------------------------
#
# A client that cannot be built, or a cluster that cannot be reached, is a
# ConfigError / ConnectorError (a user's mistake, never a traceback), and a
# failure leaves no client behind: consumers and producers are closed, admin
# clients dropped before the error is raised (a traceback would keep them, and
# their librdkafka threads and sockets, alive until the garbage collector runs).

#: Seconds to wait for a cluster's metadata before it counts as unreachable.
METADATA_TIMEOUT_S = 5.0
#: Seconds between two looks at the client's errors while metadata is awaited.
METADATA_STEP_S = 0.25
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
_PROPERTY = re.compile(r'property:? "([^"]+)"')


class ClientErrors:
    """A client's ``error_cb``: keeps the most telling error, and whether the
    client gave up on the cluster (every broker down, authentication failed, a
    fatal error), so a wait for metadata ends at once instead of at its timeout."""

    def __init__(self) -> None:
        self.last: str | None = None
        self.hopeless = False

    def __call__(self, err: Any) -> None:
        down = err.code() == ck.KafkaError._ALL_BROKERS_DOWN
        if not down or self.last is None:  # "1/1 brokers are down" says less than why
            self.last = err.str()
        if down or err.code() == ck.KafkaError._AUTHENTICATION or err.fatal():
            self.hopeless = True


def new_client(kind: str, conf: Mapping[str, Any], stream: str = "") -> Any:
    """A confluent-kafka client: ``kind`` is "consumer", "producer" or "admin".

    Args:
        conf: librdkafka settings.
        stream: the WITH stream whose ``'<stream>.properties.*'`` ``conf`` holds
            (named in errors).

    Raises:
        ConfigError: librdkafka refused a setting (an unknown property, a bad
            value, an unsupported ``sasl.mechanism``); names the WITH key.
        ConnectorError: librdkafka refused the settings for another reason.
    """
    client = require_client()
    makers = {
        "consumer": client.Consumer,
        "producer": client.Producer,
        "admin": client.admin.AdminClient,
    }
    try:
        return makers[kind](dict(conf))
    except client.KafkaException as exc:
        reason = _reason(exc).removeprefix(f"Failed to create {kind}: ")
    raise _refused_setting(reason, conf, stream, kind)


def _reason(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else None
    return str(err.str()) if isinstance(err, ck.KafkaError) else str(exc)


def _refused_setting(
    reason: str, conf: Mapping[str, Any], stream: str, kind: str
) -> ConfigError | ConnectorError:
    prefix = f"{stream}.properties" if stream else "properties"
    match = _PROPERTY.search(reason)
    if match:
        name = match.group(1)
        allowed = f"a setting the Kafka {kind} accepts ({reason})"
        return ConfigError(f"{prefix}.{name}", conf.get(name), allowed)
    if "SASL mechanism" in reason:
        name = "sasl.mechanism" if "sasl.mechanism" in conf else "sasl.mechanisms"
        allowed = f"{', '.join(SASL_MECHANISMS)} ({reason})"
        return ConfigError(f"{prefix}.{name}", conf.get(name), allowed)
    return ConnectorError(f"the Kafka {kind} refused its settings ('{prefix}.*'): {reason}")


def fetch_metadata(
    client: Any, errors: ClientErrors, topic: str | None = None, timeout: float = METADATA_TIMEOUT_S
) -> tuple[Any, str | None]:
    """``(metadata, None)`` of the cluster (of ``topic`` only, when given), or
    ``(None, why)`` after ``timeout`` s, or sooner once ``errors`` (the client's
    ``error_cb``) says the cluster cannot be reached. Never raises, so no
    traceback holds on to ``client``."""
    deadline = time.monotonic() + timeout
    while True:
        step = max(0.01, min(METADATA_STEP_S, deadline - time.monotonic()))
        try:
            return client.list_topics(topic, timeout=step), None
        except ck.KafkaException as exc:
            why = _reason(exc)
        client.poll(0)  # serves error_cb
        if errors.hopeless or time.monotonic() >= deadline:
            return None, errors.last or why


def unreachable(bootstrap: str, why: str | None) -> ConnectorError:
    """The error of a cluster that did not answer."""
    return ConnectorError(f"Kafka cluster at {bootstrap} cannot be reached: {why}")


def close_producer(producer: Any, timeout: float) -> int:
    """Wait up to ``timeout`` s for ``producer``'s messages, drop the rest and
    destroy it (its librdkafka threads and sockets end). Returns the messages dropped."""
    left = int(producer.flush(timeout))
    if left:
        producer.purge()
    close = getattr(producer, "close", None)  # older confluent-kafka: destroyed when unreferenced
    if close is not None:
        close()
    return left


# -- settings ----------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka stream as declared in WITH: where it is and how it is encoded.

    ``name`` is the stream name (the WITH prefix), ``props`` all WITH pairs.
    """

    name: str
    topic: str
    bootstrap: str
    format: str = "json"
    group_id: str | None = None
    offset_reset: str = "earliest"
    bounded: bool = False
    batch_size: int = DEFAULT_BATCH
    max_wait_ms: int = 100
    client: dict[str, str] = field(default_factory=dict)
    props: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_properties(cls, name: str, props: Mapping[str, str]) -> TopicSpec:
        """Read ``'<name>.*'`` keys (falling back to unprefixed ones for shared settings)."""

        def get(key: str, default: str | None = None) -> str | None:
            return props.get(f"{name}.{key}", props.get(key, default))

        topic = props.get(f"{name}.topic") or name
        bootstrap = (
            get("bootstrap.servers")
            or _any_bootstrap(props)
            or os.environ.get(BOOTSTRAP_ENV)
            or "localhost:9092"
        )
        reset = (get("auto.offset.reset", "earliest") or "earliest").lower()
        if reset not in ("earliest", "latest"):
            raise ConfigError(f"{name}.auto.offset.reset", reset, ("earliest", "latest"))
        bounded = (props.get(f"{name}.bounded") or "").lower()
        if bounded not in ("", "latest", "none", "false"):
            raise ConfigError(f"{name}.bounded", bounded, ("latest", "none"))
        prefix = f"{name}.properties."
        client = {k[len(prefix) :]: v for k, v in props.items() if k.startswith(prefix)}
        return cls(
            name=name,
            topic=topic,
            bootstrap=bootstrap,
            format=(props.get(f"{name}.format") or "json").lower(),
            group_id=get("group.id"),
            offset_reset=reset,
            bounded=bounded == "latest",
            batch_size=_int(props, f"{name}.batch.size", _int(props, "batch.size", DEFAULT_BATCH)),
            max_wait_ms=_int(props, f"{name}.batch.max.wait.ms", 100),
            client=client,
            props=dict(props),
        )

    def deserializer(self) -> Deserializer:
        return deserializer_for(self.props, self.name)

    def serializer(self) -> Serializer:
        return serializer_for(self.props, self.name)


def _any_bootstrap(props: Mapping[str, str]) -> str | None:
    """Another stream's ``bootstrap.servers``: a sink without its own uses its source's cluster."""
    return next((v for k, v in sorted(props.items()) if k.endswith(".bootstrap.servers")), None)


def _int(props: Mapping[str, str], key: str, default: int) -> int:
    raw = props.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(key, raw, "a positive integer") from None
    if value <= 0:
        raise ConfigError(key, raw, "a positive integer")
    return value


def consumer_config(
    spec: TopicSpec, *, group_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """librdkafka consumer settings: manual commits, bounded prefetch, eager rebalancing.

    ``queued.max.messages.kbytes`` caps what the client prefetches, so a slow
    job holds a bounded amount of unprocessed data. The 'range' assignor is
    used because it gives whole-partition moves (state is kept per partition).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": spec.bootstrap,
        "group.id": group_id or spec.group_id or f"flowsql-{spec.name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": spec.offset_reset,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 60000,
        "partition.assignment.strategy": "range",
        "queued.max.messages.kbytes": 16384,
        "fetch.max.bytes": 8 * 1024 * 1024,
        "logger": CLIENT_LOG,
    }
    conf.update(extra)
    conf.update(spec.client)
    return conf


def producer_config(
    bootstrap: str,
    client: Mapping[str, str] | None = None,
    failures: DeliveryFailures | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """librdkafka producer settings: idempotent, batched, bounded queue (backpressure).

    Delivery reports come back only for failed messages, into ``failures``
    (no Python call per delivered message).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 20,
        "enable.idempotence": True,
        "queue.buffering.max.messages": 100_000,
        "queue.buffering.max.kbytes": 65536,
        "compression.type": "none",
        "logger": CLIENT_LOG,
    }
    if failures is not None:
        conf["delivery.report.only.error"] = True
        conf["on_delivery"] = failures
    conf.update(extra)
    conf.update(client or {})
    return conf


class DeliveryFailures:
    """Collects failed deliveries of a producer; ``check()`` raises if there were any."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")

    def check(self, what: str) -> None:
        if self.errors:
            first, count = self.errors[0], len(self.errors)
            self.errors = []
            raise ConnectorError(f"{count} messages to {what} failed, first: {first}")


# -- messages -> Arrow -------------------------------------------------------


@dataclass
class MessageBatch:
    """The data messages of one ``consume()`` call, as columns.

    Every accessor is read with ``map`` over the unbound method, so the loop
    over messages runs in C; everything after that is vectorized.
    ``topics`` is only filled when a consumer reads several topics.
    """

    msgs: list[Any]
    values: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    topics: list[str] | None = None

    @classmethod
    def of(cls, msgs: list[Any], with_topics: bool = False) -> MessageBatch:
        n = len(msgs)
        m = ck.Message
        return cls(
            msgs=msgs,
            values=list(map(m.value, msgs)),
            partitions=np.fromiter(map(m.partition, msgs), np.int32, n),
            offsets=np.fromiter(map(m.offset, msgs), np.int64, n),
            topics=list(map(m.topic, msgs)) if with_topics else None,
        )

    def __len__(self) -> int:
        return len(self.msgs)

    def take(self, idx: np.ndarray) -> MessageBatch:
        """The rows at ``idx`` (in that order)."""
        if len(idx) == len(self.msgs) and (len(idx) == 0 or (np.diff(idx) == 1).all()):
            return self
        pick = idx.tolist()
        return MessageBatch(
            msgs=[self.msgs[i] for i in pick],
            values=[self.values[i] for i in pick],
            partitions=self.partitions[idx],
            offsets=self.offsets[idx],
            topics=None if self.topics is None else [self.topics[i] for i in pick],
        )

    def groups(self, default_topic: str) -> list[tuple[tuple[str, int], np.ndarray]]:
        """((topic, partition), row indices in arrival order) for each partition present."""
        if not len(self.msgs):
            return []
        codes, names = self._codes(default_topic)
        first = codes[0]
        if (codes == first).all():
            return [(names[int(first)], np.arange(len(codes)))]
        order = np.argsort(codes, kind="stable")
        cuts = np.flatnonzero(np.diff(codes[order])) + 1
        return [(names[int(codes[chunk[0]])], chunk) for chunk in np.split(order, cuts)]

    def _codes(self, default_topic: str) -> tuple[np.ndarray, dict[int, tuple[str, int]]]:
        parts = self.partitions.astype(np.int64)
        if self.topics is None:
            return parts, {int(p): (default_topic, int(p)) for p in np.unique(parts)}
        index: dict[str, int] = {}
        topic_ids = np.fromiter(
            (index.setdefault(t, len(index)) for t in self.topics), np.int64, len(self.topics)
        )
        codes = topic_ids << 32 | parts
        by_id = {v: k for k, v in index.items()}
        return codes, {int(c): (by_id[int(c) >> 32], int(c) & 0xFFFFFFFF) for c in np.unique(codes)}

    def reached(self) -> dict[int, int]:
        """Per partition: the offset after the last message of this batch."""
        if not len(self.msgs):
            return {}
        order = np.argsort(self.partitions, kind="stable")
        parts = self.partitions[order]
        last = np.append(np.flatnonzero(np.diff(parts)), len(parts) - 1)
        return {int(parts[i]): int(self.offsets[order][i]) + 1 for i in last}


def messages_to_batch(
    mb: MessageBatch,
    deserializer: Deserializer,
    source: str,
    dead_letters: DeadLetterSink | None,
) -> tuple[pa.RecordBatch | None, int]:
    """Decode data messages into one batch with the system columns.

    Undecodable messages go to ``dead_letters`` with their original bytes and
    partition/offset. Returns the batch (None when nothing decoded) and how
    many messages were dead-lettered.
    """
    if not len(mb):
        return None, 0
    decoded = deserializer.decode(mb.values)
    if decoded.errors:
        _dead_letter(mb, decoded.errors, source, dead_letters)
        if decoded.rows is not None and not len(decoded.rows):
            return None, len(decoded.errors)
    kept = mb if decoded.rows is None else mb.take(decoded.rows)
    batch = decoded.batch
    for name, column in system_columns(kept).items():
        if name not in batch.schema.names:
            batch = batch.append_column(name, column)
    return batch, len(decoded.errors)


def system_columns(mb: MessageBatch) -> dict[str, pa.Array]:
    """``_key`` (text, or bytes when not UTF-8), ``_timestamp``, ``_partition``, ``_offset``."""
    n, m = len(mb), ck.Message
    keys = pa.array(list(map(m.key, mb.msgs)), pa.binary())
    try:
        key_col = keys.cast(pa.string())
    except pa.ArrowInvalid:
        key_col = keys
    stamps = np.fromiter(map(_SECOND, map(m.timestamp, mb.msgs)), np.int64, n)
    return {
        KEY: key_col,
        TIMESTAMP: pa.array(stamps),
        PARTITION: pa.array(mb.partitions),
        OFFSET: pa.array(mb.offsets),
    }


_SECOND = operator.itemgetter(1)


def _dead_letter(
    mb: MessageBatch,
    errors: list[tuple[int, str]],
    source: str,
    sink: DeadLetterSink | None,
) -> None:
    letters = [
        DeadLetter(
            error=why,
            original=mb.values[i] or b"",
            source=f"{source} ({mb.msgs[i].topic()})",
            position=f"partition={mb.partitions[i]} offset={mb.offsets[i]}",
            operator="decode",
        )
        for i, why in errors
    ]
    if sink is None:
        for letter in letters:
            log.warning("undecodable message at %s: %s", letter.position, letter.error)
        return
    sink.write(letters)


def split_events(msgs: list[Any]) -> tuple[list[Any], list[Any]]:
    """(data messages, error/EOF events). Raises on a fatal consumer error."""
    errors = list(map(ck.Message.error, msgs))
    if next(filter(None, errors), None) is None:  # no error events (the usual case)
        return msgs, []
    data, events = [], []
    for m, err in zip(msgs, errors, strict=True):
        if err is None:
            data.append(m)
            continue
        if err.code() != ck.KafkaError._PARTITION_EOF and (err.fatal() or not err.retriable()):
            if err.code() in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._UNKNOWN_TOPIC):
                raise ConnectorError(f"Kafka topic {m.topic()!r} does not exist: {err.str()}")
            if err.fatal():
                raise ConnectorError(f"Kafka consumer failed: {err.str()}")
            log.warning("Kafka consumer error: %s", err.str())
        events.append(m)
    return data, events


def end_of_partition(events: list[Any], topic: str) -> list[int]:
    """Partitions of ``topic`` whose end-of-partition event is among ``events``."""
    return [
        m.partition()
        for m in events
        if m.topic() == topic and m.error().code() == ck.KafkaError._PARTITION_EOF
    ]


# -- admin -------------------------------------------------------------------


def topic_partitions(
    bootstrap: str,
    topic: str,
    timeout: float = METADATA_TIMEOUT_S,
    *,
    client: Any = None,
    errors: ClientErrors | None = None,
) -> list[int]:
    """Partition ids of ``topic``, asked through ``client`` (a consumer not yet
    subscribed nor assigned asks with its own security settings; ``errors`` is
    its ``error_cb``), else through a short-lived admin client.

    Raises:
        ConnectorError: the topic does not exist, or the cluster did not answer
            within ``timeout`` s (at once when every broker refused the connection).
    """
    if client is None:
        errors = ClientErrors()
        client = new_client("admin", {**admin_config(bootstrap), "error_cb": errors})
    md, why = fetch_metadata(client, errors or ClientErrors(), topic, timeout)
    client = None  # an admin client ends here, not when a traceback lets go of it
    if md is None:
        raise unreachable(bootstrap, why)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ConnectorError(f"Kafka topic {topic!r} not found on {bootstrap}")
    return sorted(meta.partitions)


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1, timeout: float = 10.0) -> None:
    """Create ``topic`` when it does not exist (an existing topic is left as it is).

    Raises:
        ConnectorError: the cluster cannot be reached, or refused to create it.
    """
    errors = ClientErrors()
    admin = new_client("admin", {**admin_config(bootstrap), "error_cb": errors})
    md, why = fetch_metadata(admin, errors, None, min(timeout, METADATA_TIMEOUT_S))
    failure = unreachable(bootstrap, why) if md is None else None
    if md is not None and topic not in md.topics:
        failure = _create_topic(admin, topic, partitions, timeout)
    admin = None  # ends here, not when a traceback lets go of it
    if failure is not None:
        raise failure


def _create_topic(admin: Any, topic: str, partitions: int, timeout: float) -> ConnectorError | None:
    futures = admin.create_topics([ck.admin.NewTopic(topic, partitions, 1)])
    for fut in futures.values():
        try:
            fut.result(timeout)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                return ConnectorError(f"cannot create topic {topic!r}: {_reason(exc)}")
    return None


# -- source ------------------------------------------------------------------


def start_offsets(consumer: Any, spec: TopicSpec, parts: Sequence[int]) -> list[Any]:
    """Where each partition starts: the group's committed offset, else ``auto.offset.reset``."""
    tps = [ck.TopicPartition(spec.topic, p) for p in parts]
    committed = consumer.committed(tps, timeout=10) if spec.group_id else tps
    reset = ck.OFFSET_BEGINNING if spec.offset_reset == "earliest" else ck.OFFSET_END
    return [
        ck.TopicPartition(spec.topic, c.partition, c.offset if c.offset >= 0 else reset)
        for c in committed
    ]


class EndTracker:
    """Knows when a bounded read ('latest') has reached the end of every partition.

    The end of a partition is its high watermark as reported by the first
    fetch response that reaches it (the broker's ListOffsets answer is not
    used: Tansu 0.6 answers it with the base offset of the last record batch,
    not the end of the log). A partition is done at its end-of-partition event
    or once a record at ``end - 1`` or later has been read.
    """

    def __init__(self, consumer: Any, topic: str, parts: Sequence[int]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.ends: dict[int, int | None] = dict.fromkeys(parts)

    @property
    def done(self) -> bool:
        return not self.ends

    def update(self, reached: Mapping[int, int], ended: Sequence[int]) -> list[int]:
        """Record progress (partition -> offset after the last record read, and the
        partitions that hit their end-of-partition event); return those now finished."""
        finished = [p for p in ended if p in self.ends]
        for part, offset in reached.items():
            end = self._end(part)
            if end is not None and offset >= end:
                finished.append(part)
        finished = sorted(set(finished))
        for part in finished:
            self.ends.pop(part, None)
        return finished

    def _end(self, part: int) -> int | None:
        if part not in self.ends:
            return None
        end = self.ends[part]
        if end is None:
            tp = ck.TopicPartition(self.topic, part)
            high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high is not None and high[1] >= 0:
                end = self.ends[part] = high[1]
        return end


class KafkaSource:
    """All partitions of one topic as a single stream of record batches.

    Bounded (``'<name>.bounded'='latest'``): reads every partition from the
    group's committed offset (else ``auto.offset.reset``) up to the end offset
    that existed at start, then ends. Unbounded: joins the consumer group and
    reads until closed. This source never commits offsets; jobs that need
    restarts without loss run through ``flowsql.runtime.kafka_job``.
    """

    def __init__(self, spec: TopicSpec, dead_letters: DeadLetterSink | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.dead_lettered = 0
        self.records = 0
        self.dead_letters = dead_letters
        self.deserializer = spec.deserializer()
        self.errors = ClientErrors()
        conf = {**consumer_config(spec), "error_cb": self.errors}
        self.consumer = new_client("consumer", conf, spec.name)
        self._closed = False
        self._bound: EndTracker | None = None
        try:
            if spec.bounded:
                self._assign_bounded()
            else:
                self.consumer.subscribe([spec.topic])
        except BaseException:
            self.close()
            raise

    def _assign_bounded(self) -> None:
        spec = self.spec
        parts = topic_partitions(
            spec.bootstrap, spec.topic, client=self.consumer, errors=self.errors
        )
        start = start_offsets(self.consumer, self.spec, parts)
        self._bound = EndTracker(self.consumer, self.spec.topic, parts)
        self.consumer.assign(start)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Micro-batches of up to ``batch.size`` records (waiting at most ``batch.max.wait.ms``)."""
        timeout = self.spec.max_wait_ms / 1000
        while not self._closed and not (self._bound is not None and self._bound.done):
            msgs = self.consumer.consume(self.spec.batch_size, timeout)
            data, events = split_events(msgs)
            mb = MessageBatch.of(data)
            if self._bound is not None:
                ended = end_of_partition(events, self.spec.topic)
                for part in self._bound.update(mb.reached(), ended):
                    self.consumer.incremental_unassign([ck.TopicPartition(self.spec.topic, part)])
            batch, bad = messages_to_batch(mb, self.deserializer, self.name, self.dead_letters)
            self.dead_lettered += bad
            if batch is not None and batch.num_rows:
                self.records += batch.num_rows
                yield batch

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.consumer.close()


# -- sink --------------------------------------------------------------------


class _ProducerOwner:
    """A sink that writes through a producer it either made (and so destroys on
    :meth:`close`) or was handed (a job's transactional producer, which the job closes)."""

    producer: Any
    _own: bool
    _closed: bool

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush, and destroy the producer if the sink made it."""
        if not self._own or self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            close_producer(self.producer, 0)


class KafkaSink(_ProducerOwner):
    """Writes result rows to a topic, keyed by the GROUP BY / KEY columns and
    stamped with each row's event time (:func:`message_timestamps`).

    ``write`` blocks while the producer's queue is full (backpressure: a slow
    broker slows the job, memory stays bounded). ``flush`` waits for every
    message to be acknowledged and raises ``ConnectorError`` if any failed.

    Args:
        spec: the output stream's settings.
        key_columns: columns forming the message key (``_key`` wins when selected).
        producer: an existing producer (the job runner passes its transactional
            one); otherwise the sink creates an idempotent producer.
    """

    def __init__(
        self,
        spec: TopicSpec,
        key_columns: Sequence[str] = (),
        producer: Any | None = None,
    ) -> None:
        self.spec = spec
        self.topic = spec.topic
        self.key_columns = tuple(key_columns)
        self.serializer = spec.serializer()
        self._own = producer is None
        self._closed = False
        self.failures = DeliveryFailures()
        self.producer = producer or new_client(
            "producer", producer_config(spec.bootstrap, spec.client, self.failures), spec.name
        )
        self.records_out = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch, stamps = message_timestamps(batch)
        keys = encode_keys(batch, self.key_columns)
        value_batch = _without(batch, (KEY,))
        values = self.serializer.encode(value_batch)
        produce_all(self.producer, self.topic, values, keys, timestamps=stamps)
        self.records_out += len(values)

    def flush(self) -> None:
        pending = self.producer.flush(60)
        if pending:
            raise ConnectorError(f"{pending} messages to {self.topic!r} not delivered after 60s")
        self.failures.check(repr(self.topic))

    def abort(self) -> None:
        """As :meth:`close`: a message handed to Kafka cannot be taken back (a
        transactional producer is aborted by the job that owns it)."""
        self.close()


#: ``Producer.produce(topic, value, key, partition, on_delivery, callback,
#: timestamp, headers)`` by position: partition -1 (RD_KAFKA_PARTITION_UA) lets
#: the configured partitioner pick, None callbacks keep the producer's own
#: ``on_delivery``. tests/integration/kafka/test_kafka_event_time.py checks the
#: timestamps arrive.
_ANY_PARTITION = -1


def produce_all(
    producer: Any,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes | None] | None = None,
    *,
    partition: int | None = None,
    headers: Any = None,
    timestamps: Sequence[int] | None = None,
) -> None:
    """Produce messages, waiting (serving callbacks) while the local queue is full.

    ``timestamps``: each message's timestamp in epoch ms (0 = the wall clock);
    None stamps them all with the wall clock.
    """
    produce = producer.produce
    keyed = keys if keys is not None else repeat(None)
    if partition is None and headers is None and timestamps is None:
        for value, key in zip(values, keyed, strict=False):
            try:
                produce(topic, value, key)
            except BufferError:  # queue full: wait for acknowledgements, then retry
                _retry(producer, topic, value, key=key)
    elif partition is None and headers is None:
        for value, key, stamp in zip(values, keyed, timestamps or (), strict=False):
            try:  # by position: ~1.5x the rate of timestamp=stamp (see _ANY_PARTITION)
                produce(topic, value, key, _ANY_PARTITION, None, None, stamp)
            except BufferError:
                _retry(producer, topic, value, key=key, timestamp=stamp)
    else:
        for i, value in enumerate(values):
            kwargs = {"key": keys[i] if keys is not None else None, "headers": headers}
            if partition is not None:
                kwargs["partition"] = partition
            if timestamps is not None:
                kwargs["timestamp"] = timestamps[i]
            try:
                produce(topic, value, **kwargs)
            except BufferError:
                _retry(producer, topic, value, **kwargs)
    producer.poll(0)


def _retry(producer: Any, topic: str, value: bytes, **kwargs: Any) -> None:
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, value, **kwargs)
            return
        except BufferError:
            continue


def message_timestamps(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[int] | None]:
    """``(batch without MESSAGE_TIME, each row's message timestamp in ms)``.

    The timestamps are the rows' event times, from the :data:`MESSAGE_TIME`
    column that :func:`flowsql.plan.message_time.with_message_time` adds; None
    (the wall clock) when the batch has none. An event time at or before the
    epoch (or missing) cannot be a Kafka create time: that message gets the
    wall clock (timestamp 0).
    """
    idx = batch.schema.get_field_index(MESSAGE_TIME)
    if idx < 0:
        return batch, None
    stamps = batch.column(idx).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    return batch.remove_column(idx), np.maximum(stamps, 0).tolist()


def encode_keys(batch: pa.RecordBatch, key_columns: Sequence[str]) -> list[bytes | None] | None:
    """Message keys: ``_key`` if selected, else the key columns (one: its text; several: a JSON array)."""
    names = batch.schema.names
    if KEY in names:
        return _key_column(batch.column(KEY))
    cols = [c for c in key_columns if c in names]
    if not cols:
        return None
    if len(cols) == 1:
        return _key_column(batch.column(cols[0]))
    rows = zip(*(batch.column(c).to_pylist() for c in cols), strict=True)
    enc = msgspec.json.Encoder(decimal_format="string")
    return [enc.encode(list(r)) for r in rows]


def _key_column(col: pa.Array) -> list[bytes | None]:
    """One key column as message keys; strings and numbers are cast in Arrow."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return col.to_pylist()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t):
        return col.cast(pa.string()).cast(pa.binary()).to_pylist()
    return [_key_bytes(v) for v in col.to_pylist()]


def _key_bytes(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v
    return str(v).encode()


def _without(batch: pa.RecordBatch, drop: Sequence[str]) -> pa.RecordBatch:
    idx = [i for i, name in enumerate(batch.schema.names) if name not in drop]
    return batch if len(idx) == batch.num_columns else batch.select(idx)


def output_key_columns(statement: n.Statement, stream: str | None = None) -> tuple[str, ...]:
    """The output key: ``'<stream>.key'`` when given, else the GROUP BY key names."""
    stream = stream or statement.name
    explicit = statement.properties.get(f"{stream}.key")
    if explicit:
        return tuple(c.strip() for c in explicit.split(",") if c.strip())
    for node in n.walk(statement.plan):
        if isinstance(node, n.Aggregate):
            return tuple(name for name, _ in node.keys)
    return ()


# -- dead letters ------------------------------------------------------------


class KafkaDeadLetters(_ProducerOwner):
    """Dead letters to a topic: the original bytes as value, the reason in headers
    (``flowsql.error``, ``flowsql.source``, ``flowsql.position``, ``flowsql.operator``)."""

    def __init__(self, bootstrap: str, topic: str, producer: Any | None = None) -> None:
        self.topic = topic
        self.count = 0
        self._own = producer is None
        self._closed = False
        self.failures = DeliveryFailures()
        self.producer = producer or new_client(
            "producer", producer_config(bootstrap, None, self.failures)
        )

    def write(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            value = (
                letter.original if isinstance(letter.original, bytes) else letter.original.encode()
            )
            headers = [
                (DLQ_ERROR, letter.error.encode()),
                (DLQ_SOURCE, letter.source.encode()),
                (DLQ_POSITION, letter.position.encode()),
                (DLQ_OPERATOR, letter.operator.encode()),
            ]
            produce_all(self.producer, self.topic, [value], headers=headers)
        self.count += len(letters)

    def flush(self) -> None:
        self.producer.flush(30)
        self.failures.check(f"dead-letter topic {self.topic!r}")


def dead_letters_from_properties(
    props: Mapping[str, str], bootstrap: str
) -> KafkaDeadLetters | None:
    """A dead-letter topic sink when ``'dlq.topic'`` is set."""
    topic = props.get("dlq.topic")
    if not topic:
        return None
    ensure_topic(props.get("dlq.bootstrap.servers", bootstrap), topic)
    return KafkaDeadLetters(props.get("dlq.bootstrap.servers", bootstrap), topic)


# -- registry hooks ----------------------------------------------------------


def kafka_source_from_properties(
    name: str, props: Mapping[str, str], dead_letters: DeadLetterSink | None = None
) -> KafkaSource:
    """The source declared by ``'<name>.type'='kafka_source'`` and its keys."""
    spec = TopicSpec.from_properties(name, props)
    if dead_letters is None:
        dead_letters = dead_letters_from_properties(props, spec.bootstrap)
    return KafkaSource(spec, dead_letters)


def kafka_sink_from_properties(
    stream: str, props: Mapping[str, str], key_columns: Sequence[str] = ()
) -> KafkaSink:
    """The sink declared by ``'<stream>.type'='kafka_sink'`` and its keys."""
    spec = TopicSpec.from_properties(stream, props)
    explicit = props.get(f"{stream}.key")
    if explicit:
        key_columns = tuple(c.strip() for c in explicit.split(",") if c.strip())
    return KafkaSink(spec, key_columns)


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (used by jobs and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
