"""``StreamJobServer``: deploys SQL apps as jobs and runs them concurrently.

A SQL app is text with one or more statements. Each ``CREATE STREAM|TABLE name
AS SELECT ...`` becomes a job called ``name``; a bare ``SELECT`` gets a
generated name (``query_1``, ``query_2``...). Deploying is all or nothing: every
statement is parsed, its processor choice and failure strategy validated and
its source and sink opened before any job starts.

A statement whose source is ``'<src>.type'='kafka_source'`` runs as a Kafka job
(``KafkaJob``: consumer group, one processor per Kafka partition, checkpoints,
offsets committed after the sink flushed, exactly-once when configured).

Deploying is running code on this machine, so by default file sources and
sinks must lie under ``server.file_roots`` and secrets are masked in
everything the server shows (DESIGN §8).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from flowsql.connectors.base import Sink, Source
from flowsql.connectors.dlq import JsonlDeadLetters
from flowsql.connectors.files import FileSink, FileSource
from flowsql.connectors.kafka.client import ck
from flowsql.connectors.registry import sink_for, sink_stream, sources_for
from flowsql.errors import ConfigError, ConnectorError, FlowSQLError, did_you_mean
from flowsql.plan import options
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetter, DeadLetterSink
from flowsql.runtime.factory import make_processor, planned_for
from flowsql.runtime.failures import FailurePolicy
from flowsql.runtime.kafka_job import JobStats, KafkaJob
from flowsql.runtime.kafka_spec import KafkaJobSpec, is_kafka_job
from flowsql.runtime.runner import bind_sources, single_source
from flowsql.runtime.worker import heartbeat_timeout
from flowsql.server.config import (
    FileRoots,
    ProcessorChoice,
    Redactor,
    ServerSettings,
    default_choice,
    job_choice,
    parse_choice,
)
from flowsql.server.job import (
    Job,
    JobState,
    JobStatus,
    ProcessorFactory,
)
from flowsql.server.kafka_server_job import KafkaServerJob
from flowsql.server.savepoint import Savepoints, wants_restore
from flowsql.sql import parse
from flowsql.state.checkpoint import FileCheckpointStore

log = logging.getLogger(__name__)

#: Builds a statement's single source; bad records go to the dead-letter sink given.
SourceFactory = Callable[[Statement, DeadLetterSink], Source]
SinkFactory = Callable[[Statement], Sink]

_JOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
#: Last segments of WITH keys that name files or directories.
_PATH_KEYS = frozenset({"path", "paths", "file", "files", "dir", "directory", "location"})
#: Dead letters kept in memory per job (the count is exact; older letters are dropped).
RECENT_LETTERS = 1000
#: Output rows kept in memory for a job that declares no sink.
RECENT_ROWS = 1000
#: Seconds between two checks of the running jobs' processors by the watchdog.
WATCH_INTERVAL_S = 0.25
#: WITH key of a job's dead-letter file (JSON lines), inside ``server.file_roots``.
DLQ_PATH_KEY = options.DLQ_PATH.name


class UnknownJobError(FlowSQLError, LookupError):
    """No job has that name."""


class JobConflictError(FlowSQLError, ValueError):
    """A job with that name is still running, or the request does not fit its state."""


class RecentDeadLetters:
    """A job's dead letters: the last :data:`RECENT_LETTERS` kept for the API, all of
    them also written to the job's declared dead-letter sinks (thread-safe)."""

    def __init__(
        self, also: list[DeadLetterSink] | None = None, limit: int = RECENT_LETTERS
    ) -> None:
        self.limit = limit
        self.also = list(also or [])
        self.count = 0
        self._recent: deque[DeadLetter] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def write(self, letters: list[DeadLetter]) -> None:
        with self._lock:
            self._recent.extend(letters)
            self.count += len(letters)
            for sink in self.also:
                sink.write(letters)

    def recent(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._recent)

    def close(self) -> None:
        for sink in self.also:
            _close(sink)


class RecentRows:
    """The sink of a job that declares none: keeps its last :data:`RECENT_ROWS` rows
    for ``GET /jobs/{name}/output`` (thread-safe)."""

    def __init__(self, limit: int = RECENT_ROWS) -> None:
        self.limit = limit
        self.rows_written = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def write(self, batch: pa.RecordBatch) -> None:
        tail = batch.slice(max(0, batch.num_rows - self.limit))
        rows = tail.to_pylist()
        with self._lock:
            self._recent.extend(rows)
            self.rows_written += batch.num_rows

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self._recent)
        return rows[-limit:] if limit else rows

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        """Keep the rows: they are what ``GET /jobs/{name}/output`` shows of a failed job."""
        return None


class StreamJobServer:
    """Runs deployed jobs, each on its own thread.

    Args:
        settings: the ``server`` section of the configuration.
        source_factory: builds a statement's source (default: from its WITH
            properties via ``flowsql.connectors.registry``).
        sink_factory: builds a statement's sink (default: the registry's).
        processor_factory: builds V1/V2 processors (tests inject fakes).
        confine_files: refuse file paths outside ``settings.file_roots``.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        source_factory: SourceFactory | None = None,
        sink_factory: SinkFactory | None = None,
        processor_factory: ProcessorFactory = make_processor,
        confine_files: bool = True,
    ) -> None:
        self.settings = settings or ServerSettings()
        self.file_roots = FileRoots(self.settings.file_roots) if confine_files else None
        self._default = default_choice(self.settings)
        self._source_factory = source_factory or self._registry_source
        self._sink_factory = sink_factory or self._registry_sink
        self._processor_factory = processor_factory
        self._jobs: dict[str, Job | KafkaServerJob] = {}
        self._lock = threading.RLock()
        self._query_seq = 0
        self._reserved: set[str] = set()  # names of jobs being built
        self._closing = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- defaults --------------------------------------------------------------------

    @property
    def default_choice(self) -> ProcessorChoice:
        """The processor new deploys get unless their annotations say otherwise."""
        return self._default

    def set_default_processor(
        self, processor: str | None = None, num_partitions: int | None = None
    ) -> ProcessorChoice:
        """Change the server default at runtime; running jobs keep their processor.

        Raises:
            ConfigError: an unknown processor or a bad partition count.
        """
        choice = parse_choice(processor, num_partitions, self._default, where="server.")
        with self._lock:
            self._default = choice
        log.info("server default processor is now %s", choice.label)
        return choice

    # -- deploy ------------------------------------------------------------------------

    def deploy(self, sql: str, *, restore: bool = True) -> list[JobStatus]:
        """Parse a SQL app and start one job per statement.

        With ``server.checkpoint_dir`` set, a job whose name and statement match the
        savepoint a stopped job left there starts from it, unless ``restore`` is
        False or the statement says ``-- @restore: false`` (``flowsql.server.savepoint``).

        Raises:
            SqlSyntaxError | PlanError: bad SQL (nothing is started).
            ConfigError: a bad annotation or WITH value; ``FileAccessError`` for a
                path outside ``server.file_roots``.
            JobConflictError: a job of that name is still running.
        """
        return self.deploy_statements(parse(sql), restore=restore)

    def deploy_statements(
        self, statements: list[Statement], *, restore: bool = True
    ) -> list[JobStatus]:
        """Start one job per planned statement (all or nothing, like :meth:`deploy`)."""
        if not statements:
            raise ConfigError("sql", "", "at least one SELECT or CREATE STREAM|TABLE statement")
        with self._lock:
            names = self._names(statements)
            self._reserved.update(names)
        try:
            jobs = self._build_all(names, statements, restore)  # V2 workers start: not locked
            with self._lock:
                for job in jobs:
                    self._jobs[job.name] = job
                    job.start()
                self._start_watchdog()
        finally:
            with self._lock:
                self._reserved.difference_update(names)
        for job in jobs:
            log.info("deployed job %s on %s", job.name, job.choice.label)
        return [job.status() for job in jobs]

    def _build_all(
        self, names: list[str], statements: list[Statement], restore: bool
    ) -> list[Job | KafkaServerJob]:
        built: list[Job | KafkaServerJob] = []
        try:
            for name, statement in zip(names, statements, strict=True):
                built.append(self._build(name, statement, restore))
        except BaseException:
            for job in built:
                job.close_unstarted()
            raise
        return built

    def _names(self, statements: list[Statement]) -> list[str]:
        names: list[str] = []
        for statement in statements:
            name = statement.name if statement.kind != "select" else self._query_name(names)
            if not _JOB_NAME.match(name):
                raise ConfigError("job name", name, "letters, digits, '_', '.', '-'")
            if name in names:
                raise JobConflictError(f"the app creates '{name}' twice")
            if name in self._reserved:
                raise JobConflictError(f"job '{name}' is being deployed")
            existing = self._jobs.get(name)
            if existing is not None and not existing.state.terminal:
                raise JobConflictError(
                    f"job '{name}' is {existing.state.value}; stop it first (flowsql stop {name})"
                )
            names.append(name)
        return names

    def _query_name(self, taken: list[str]) -> str:
        while True:
            self._query_seq += 1
            name = f"query_{self._query_seq}"
            if name not in self._jobs and name not in taken and name not in self._reserved:
                return name

    def _build(self, name: str, statement: Statement, restore: bool) -> Job | KafkaServerJob:
        statement = replace(statement, name=name)
        if is_kafka_job(statement):
            return self._build_kafka(statement)
        choice = job_choice(statement, self._default)
        heartbeat_timeout(statement.properties)  # checked whatever the processor: V2 may come
        policy = FailurePolicy.from_properties(statement.properties, name)
        restore = wants_restore(statement, restore)
        self._check_paths(statement.properties)
        letters = RecentDeadLetters(self._declared_dead_letters(statement))
        opened: list[Any] = [letters]
        try:
            source = self._source_factory(statement, letters)
            opened.append(source)
            self._check_object_paths(source, "source")
            statement = bind_sources(statement, {_from_name(statement, source): source})
            sink = self._sink_factory(statement)
            opened.append(sink)
            self._check_object_paths(sink, "sink")
            statement = planned_for(statement, sink)
            savepoints = self._savepoints(name, statement, source)
            job = Job(
                statement,
                source=source,
                batch_size=self.settings.batch_size,
                sink=sink,
                choice=choice,
                policy=policy,
                dead_letters=letters,
                redactor=Redactor(statement.properties),
                processor_factory=self._processor_factory,
                name=name,
                savepoints=savepoints,
                restore=savepoints.restore_for(wanted=restore) if savepoints else None,
            )
        except BaseException:
            for thing in reversed(opened):
                _close(thing)
            raise
        return job

    def _build_kafka(self, statement: Statement) -> KafkaServerJob:
        """A Kafka job: its output is the statement's ``kafka_sink`` (written through the
        job's producer, in its transactions) or else the sink the server would give it."""
        strategy = options.find(statement.properties, options.FAILURE_STRATEGY)
        if strategy is not None:
            raise ConfigError(
                f"{statement.name}.{strategy[0]}",
                strategy[1],
                "nothing for a Kafka job: a batch that raises fails it; 'restart.attempts'"
                " restarts it from its last checkpoint, as does a redeploy with the same"
                " group.id",
            )
        choice = job_choice(statement, self._default)
        heartbeat_timeout(statement.properties)
        self._check_paths(statement.properties)
        spec = KafkaJobSpec.from_statement(statement)
        letters = RecentDeadLetters(self._declared_dead_letters(statement))
        opened: list[Any] = [letters]
        try:
            sink = None if spec.output is not None else self._sink_factory(statement)
            if sink is not None:
                opened.append(sink)
                self._check_object_paths(sink, "sink")
            store = self._kafka_store(statement)

            def build(stats: JobStats | None = None) -> KafkaJob:
                return KafkaJob(
                    statement, sink=sink, store=store, dead_letters=letters, stats=stats
                )

            kafka = build()
            opened.append(kafka)
            return KafkaServerJob(
                statement,
                kafka=kafka,
                choice=choice,
                dead_letters=letters,
                redactor=Redactor(statement.properties),
                processor_factory=self._processor_factory,
                rebuild=build,
            )
        except BaseException as exc:
            for thing in reversed(opened):
                _close(thing)
            if not _is_kafka_error(exc):
                raise
            reason = Redactor(statement.properties).text(f"{type(exc).__name__}: {exc}")
        raise ConnectorError(f"job '{statement.name}': its Kafka clients failed: {reason}")

    def _savepoints(self, name: str, statement: Statement, source: Source) -> Savepoints | None:
        """Where a server job's savepoint lives: ``server.checkpoint_dir/jobs/<name>``."""
        root = self.settings.checkpoint_dir
        return None if root is None else Savepoints.under(root, name, statement, source)

    def _kafka_store(self, statement: Statement) -> Any:
        """Checkpoints under ``server.checkpoint_dir/kafka`` unless WITH names a directory."""
        root = self.settings.checkpoint_dir
        if root is None or options.find(statement.properties, options.CHECKPOINT_DIR):
            return None
        spec = KafkaJobSpec.from_statement(statement)
        return FileCheckpointStore(Path(root) / "kafka", f"{spec.group_id}.{spec.job}")

    def _declared_dead_letters(self, statement: Statement) -> list[DeadLetterSink]:
        """A JSON-lines file when WITH has ``'dlq.path'``: a name a sink may take,
        checked against the file roots at deploy and again when it is opened."""
        path = options.get(statement.properties, options.DLQ_PATH)
        if not path:
            return []
        return [JsonlDeadLetters(Path(path).expanduser(), roots=self._open_roots, key=DLQ_PATH_KEY)]

    # -- file roots --------------------------------------------------------------------

    def _check_paths(self, properties: dict[str, str]) -> None:
        if self.file_roots is None:
            return
        for key, value in properties.items():
            if _is_path_key(key):
                for part in str(value).split(","):
                    if part.strip():
                        self.file_roots.check(part.strip(), key=key)

    def _check_object_paths(self, connector: Source | Sink, role: str) -> None:
        """A file source or sink built by an injected factory: its file must lie
        under the file roots too (registry connectors check it when they open)."""
        if self.file_roots is not None and isinstance(connector, FileSource | FileSink):
            self.file_roots.check(str(connector.path), key=f"{role} path")

    # -- registry defaults ----------------------------------------------------------------

    def _registry_source(self, statement: Statement, letters: DeadLetterSink) -> Source:
        sources = sources_for(
            statement,
            {},
            dead_letters=letters,
            batch_size=self.settings.batch_size,
            roots=self._open_roots,
        )
        try:
            return single_source(statement, sources)
        except BaseException:
            for source in sources.values():
                _close(source)
            raise

    def _registry_sink(self, statement: Statement) -> Sink:
        """The sink declared in WITH; a :class:`RecentRows` buffer when there is none
        (the registry's console table is for the CLI, not for a server)."""
        if f"{sink_stream(statement)}.type" not in statement.properties:
            return RecentRows()
        return sink_for(statement, None, roots=self._open_roots)

    @property
    def _open_roots(self) -> tuple[Path, ...] | None:
        """The file roots that file connectors check again when they open a file."""
        return self.file_roots.roots if self.file_roots is not None else None

    # -- operate -------------------------------------------------------------------------

    def job(self, name: str) -> Job | KafkaServerJob:
        """The job called ``name``.

        Raises:
            UnknownJobError: no such job.
        """
        with self._lock:
            job = self._jobs.get(name)
            known = list(self._jobs)
        if job is None:
            hint = did_you_mean(name, known)
            raise UnknownJobError(f"no job named '{name}'" + (f"; {hint}" if hint else ""))
        return job

    def jobs(self) -> list[JobStatus]:
        """Every job's status, in deploy order."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [job.status() for job in jobs]

    def status(self, name: str) -> JobStatus:
        return self.job(name).status()

    def dead_letters(self, name: str) -> list[DeadLetter]:
        """The job's most recent dead letters."""
        letters = self.job(name).dead_letters
        return letters.recent() if isinstance(letters, RecentDeadLetters) else []

    def output(self, name: str, limit: int | None = None) -> list[dict[str, Any]] | None:
        """The last rows of a job without a declared sink (None when it has one)."""
        sink = self.job(name).sink
        return sink.recent(limit) if isinstance(sink, RecentRows) else None

    def pause(self, name: str) -> JobStatus:
        """Pause at the next batch boundary (waits up to ``server.switch_timeout_s``)."""
        job = self._running(name, "pause")
        job.pause(self.settings.switch_timeout_s)
        return job.status()

    def resume(self, name: str) -> JobStatus:
        job = self._running(name, "resume")
        job.resume()
        return job.status()

    def stop(self, name: str, *, forget: bool = False) -> JobStatus:
        """Stop a job at the next batch boundary; ``forget`` also removes it from the list."""
        job = self.job(name)
        job.stop(self.settings.stop_timeout_s)
        status = job.status()
        if forget:
            with self._lock:
                if self._jobs.get(name) is job:
                    del self._jobs[name]
        return status

    def switch_processor(
        self, name: str, processor: str | None, num_partitions: int | None = None
    ) -> JobStatus:
        """Move a running job to another processor (see ``Job.switch_processor``).

        Raises:
            ConfigError: an unknown processor or a bad partition count.
            JobConflictError: the job has ended.
            ExecutionError: the switch failed (the job keeps its processor).
        """
        job = self._running(name, "switch")
        choice = parse_choice(processor, num_partitions, job.choice, where="")
        return job.switch_processor(choice, self.settings.switch_timeout_s)

    def _running(self, name: str, action: str) -> Job | KafkaServerJob:
        job = self.job(name)
        if job.state.terminal:
            raise JobConflictError(f"cannot {action} job '{name}': it is {job.state.value}")
        return job

    def _start_watchdog(self) -> None:
        if self._watchdog is None and not self._closing.is_set():
            self._watchdog = threading.Thread(
                target=self._watch, name="flowsql-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        """Notice a dead V2 worker even while its job waits for input."""
        while not self._closing.wait(WATCH_INTERVAL_S):
            with self._lock:
                jobs = list(self._jobs.values())
            for job in jobs:
                try:
                    job.check_health()
                except Exception:
                    log.exception("health check of job %s failed", job.name)

    def shutdown(self) -> None:
        """Stop every job and wait for their threads."""
        self._closing.set()
        if self._watchdog is not None:
            self._watchdog.join()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.request_stop()
        for job in jobs:
            if not job.join(self.settings.stop_timeout_s):
                log.warning(
                    "job %s did not stop within %ss", job.name, self.settings.stop_timeout_s
                )

    def counts(self) -> dict[str, int]:
        """Jobs per state (for /health)."""
        out = {state.value: 0 for state in JobState}
        for status in self.jobs():
            out[status.state] += 1
        return out

    def __enter__(self) -> StreamJobServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _from_name(statement: Statement, source: Source) -> str:
    return statement.sources[0] if statement.sources else source.name


def _is_kafka_error(exc: BaseException) -> bool:
    """A confluent-kafka error no connector turned into a FlowSQLError: a 400, not a 500."""
    return ck is not None and isinstance(exc, ck.KafkaException)


def _is_path_key(key: str) -> bool:
    last = key.lower().replace("-", "_").split(".")[-1]
    return last in _PATH_KEYS or last.endswith(("_path", "_dir", "_file"))


def _close(thing: Any) -> None:
    try:
        thing.close()
    except Exception as exc:
        log.warning("closing %s failed: %s", type(thing).__name__, exc)
