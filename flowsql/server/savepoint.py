"""Savepoints: what a stopped server job leaves behind, and how a redeploy of the
same statement picks it up.

A savepoint is a :class:`flowsql.state.checkpoint.Checkpoint` in the same store
and format as a Kafka job's, under ``<server.checkpoint_dir>/jobs/<job>/job/``:

- ``state``: the processor's snapshot (operator state + event-time maximum), in
  the partition-independent format that V1 and V2 both restore;
- ``offsets``: ``{"<source>": rows read}`` when the source can resume, i.e. can
  be read again from the start with the same rows (generator, files): the
  redeployed job skips that many rows; empty when it cannot;
- ``query``: the statement's :func:`statement_fingerprint`;
- ``extra``: the job's counters (records in and out, late, dead-lettered), so a
  redeployed job continues its counts; ``finished`` when the input ended.

A job restores a savepoint when it has the same name and fingerprint and the
deploy did not opt out (``-- @restore: false``); its status says what it
restored, or why it did not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from flowsql.connectors.base import Source
from flowsql.connectors.files import FileSource
from flowsql.connectors.generator import GeneratorSource
from flowsql.errors import ConfigError
from flowsql.plan.nodes import Statement
from flowsql.state.checkpoint import Checkpoint, CheckpointStore, FileCheckpointStore, fingerprint

#: Directory under ``server.checkpoint_dir`` that holds the savepoints of server jobs.
SAVEPOINT_DIR = "jobs"
#: The store key of a server job's savepoint (the whole job is one key).
SAVEPOINT_KEY = "job"
#: Annotation that turns restoring off for one deploy: ``-- @restore: false``.
RESTORE_ANNOTATION = "restore"


def statement_fingerprint(statement: Statement) -> str:
    """Fingerprint of the normalized SQL text and the plan, independent of the
    processor (``-- @job_mode`` and other annotations are not part of it)."""
    return fingerprint(f"{statement.sql}\n{_plan_text(statement.plan)}")


def _plan_text(value: Any) -> str:
    """A stable text of a plan: fields that do not take part in comparisons
    (source positions) are left out, sets are sorted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(
            f"{f.name}={_plan_text(getattr(value, f.name))}"
            for f in dataclasses.fields(value)
            if f.compare
        )
        return f"{type(value).__name__}({inner})"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_plan_text(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_plan_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(_plan_text(v) for v in value)) + "}"
    return repr(value)


def wants_restore(statement: Statement, default: bool = True) -> bool:
    """False when the statement says ``-- @restore: false`` (or the deploy did).

    Raises:
        ConfigError: the annotation is neither true nor false.
    """
    notes = {key.lower(): value for key, value in statement.annotations.items()}
    value = notes.get(RESTORE_ANNOTATION)
    if value is None:
        return default
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise ConfigError(f"{statement.name}.@{RESTORE_ANNOTATION}", value, "true or false")
    return default and text == "true"


def can_resume(source: Source) -> bool:
    """True when reading ``source`` again gives the same rows in the same order,
    so a job resumes it by skipping the rows it had read."""
    return isinstance(source, GeneratorSource | FileSource)


def skip_rows(batches: Iterator[pa.RecordBatch], count: int) -> Iterator[pa.RecordBatch]:
    """``batches`` without their first ``count`` rows. While skipping it yields an
    empty batch per skipped one, so the job stays responsive to stop and pause."""
    left = count
    for batch in batches:
        if left <= 0 or batch.num_rows == 0:
            yield batch
        elif batch.num_rows <= left:
            left -= batch.num_rows
            yield batch.slice(0, 0)
        else:
            yield batch.slice(left)
            left = 0


@dataclass(frozen=True)
class JobCounts:
    """The counters a savepoint carries over to the next run of the job."""

    records_in: int = 0
    records_out: int = 0
    late_records: int = 0
    dead_lettered: int = 0
    #: of ``dead_lettered``, those the source counted (it counts them again when
    #: it reads its input again from the start).
    source_dead_lettered: int = 0
    max_event_time: int | None = None


@dataclass(frozen=True)
class Restore:
    """What a job starts from: a savepoint's state and counts, or nothing.

    Attributes:
        state: the processor snapshot to restore (None: start empty).
        counts: the counters to continue from.
        position: rows of the source to skip (0 when it cannot resume).
        dead_carried: dead letters to carry over: those the source counts again
            while it reads its input again up to ``position`` are left out.
        report: what ``status()`` shows under ``restored``.
    """

    state: dict[str, Any] | None = None
    counts: JobCounts = field(default_factory=JobCounts)
    position: int = 0
    dead_carried: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def nothing(cls, reason: str) -> Restore:
        return cls(report={"restored": False, "reason": reason})


class Savepoints:
    """The savepoint of one server job, read and written through a checkpoint store.

    Args:
        store: where checkpoints live (one store per job).
        query: the statement's :func:`statement_fingerprint`.
        source: the source's name (the key of its position in ``offsets``).
        resumable: the source can resume (see :func:`can_resume`).
    """

    def __init__(self, store: CheckpointStore, query: str, source: str, resumable: bool) -> None:
        self.store = store
        self.query = query
        self.source = source
        self.resumable = resumable
        self._last_id = 0

    @classmethod
    def under(cls, root: Path, job: str, statement: Statement, source: Source) -> Savepoints:
        """The savepoints of ``job`` under ``root/jobs``, for a job reading ``source``."""
        store = FileCheckpointStore(Path(root) / SAVEPOINT_DIR, job)
        return cls(store, statement_fingerprint(statement), source.name, can_resume(source))

    def latest(self) -> Checkpoint | None:
        """The newest savepoint, staged or committed (nothing outside the store must
        agree with a server job's savepoint, so a staged one is complete too)."""
        committed, staged = self.store.load(SAVEPOINT_KEY)
        found = [c for c in (committed, staged) if c is not None]
        newest = max(found, key=lambda c: c.id) if found else None
        self._last_id = max(self._last_id, newest.id if newest else 0)
        return newest

    def restore_for(self, *, wanted: bool) -> Restore:
        """What a new run of the job starts from."""
        if not wanted:
            return Restore.nothing(f"restore turned off (-- @{RESTORE_ANNOTATION}: false)")
        try:
            saved = self.latest()
        except Exception as exc:
            return Restore.nothing(f"savepoint unreadable: {exc}")
        if saved is None:
            return Restore.nothing("no savepoint for this job")
        if saved.query != self.query:
            return Restore.nothing(
                f"the statement changed (fingerprint {saved.query} -> {self.query})"
            )
        if saved.extra.get("finished") or saved.state is None:
            return Restore.nothing("the last run finished its input")
        return _restore(saved, self.source, self.resumable)

    def save(self, state: dict[str, Any] | None, counts: JobCounts, position: int) -> int:
        """Write a savepoint (staged, then committed); returns its id. ``state``
        None marks a run that finished its input; ``position`` is the number of
        rows read from the source (kept only when it can resume)."""
        self._last_id += 1
        checkpoint = Checkpoint(
            id=self._last_id,
            offsets={self.source: position} if self.resumable else {},
            state=state,
            query=self.query,
            extra={**dataclasses.asdict(counts), "finished": state is None},
        )
        self.store.stage(SAVEPOINT_KEY, checkpoint)
        self.store.promote(SAVEPOINT_KEY)
        return checkpoint.id


def _restore(saved: Checkpoint, source: str, resumable: bool) -> Restore:
    known = {f.name for f in dataclasses.fields(JobCounts)}
    counts = JobCounts(**{k: v for k, v in saved.extra.items() if k in known})
    position = saved.offsets.get(source) if resumable else None
    report: dict[str, Any] = {
        "restored": True,
        "checkpoint": saved.id,
        "created_at": datetime.fromtimestamp(saved.created_ms / 1000, UTC).isoformat(
            timespec="seconds"
        ),
        "records_in": counts.records_in,
        "source_position": position,
    }
    dead = counts.dead_lettered
    if position is None:
        report["note"] = f"source '{source}' cannot resume: operator state only, input from now"
    else:
        dead -= counts.source_dead_lettered
    return Restore(
        state=saved.state,
        counts=counts,
        position=position or 0,
        dead_carried=dead,
        report=report,
    )
