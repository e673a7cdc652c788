"""What a job does when a batch raises while being processed.

Chosen per job in SQL ``WITH`` (keys declared in :mod:`flowsql.plan.options`):

- ``'failure.strategy' = 'send_to_dlq'`` (default): the batch's rows go to the
  dead-letter sink with the error; the job continues.
- ``'log_and_continue'``: the error is logged and counted, the batch skipped.
- ``'fail_batch'``: the job stops in state FAILED with the error.
- ``'retry_with_backoff'``: the batch is retried up to ``'retry.max_retries'``
  times (default 3), waiting ``'retry.backoff'`` (default ``100ms``; a duration
  such as ``'500ms'``, ``'2s'`` or a number of ms) doubled after each attempt;
  if it still fails the job goes FAILED. The old spellings ``'failure_strategy'``,
  ``'max_retries'`` and ``'retry_backoff'`` are aliases.

A processor that is broken as a whole (a V2 worker process died) is not a batch
failure: the job goes FAILED whatever the strategy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

from flowsql.errors import BatchError, ExecutionError
from flowsql.plan import options
from flowsql.records import DeadLetter

log = logging.getLogger(__name__)

STRATEGY_KEY = options.FAILURE_STRATEGY.name
MAX_RETRIES_KEY = options.MAX_RETRIES.name
BACKOFF_KEY = options.RETRY_BACKOFF.name


class FailureStrategy(StrEnum):
    """The values of ``WITH ('failure_strategy' = ...)``."""

    LOG_AND_CONTINUE = "log_and_continue"
    SEND_TO_DLQ = "send_to_dlq"
    FAIL_BATCH = "fail_batch"
    RETRY_WITH_BACKOFF = "retry_with_backoff"


@dataclass(frozen=True)
class FailurePolicy:
    """A job's failure strategy and retry parameters."""

    strategy: FailureStrategy = FailureStrategy.SEND_TO_DLQ
    max_retries: int = 3
    retry_backoff_ms: int = 100

    @classmethod
    def from_properties(cls, properties: dict[str, str], job: str = "") -> FailurePolicy:
        """Read the policy from a statement's WITH properties.

        Raises:
            ConfigError: an unknown strategy, a bad retry count or a bad duration.
        """
        strategy = FailureStrategy(options.get(properties, options.FAILURE_STRATEGY, job=job))
        retries = options.get(properties, options.MAX_RETRIES, job=job)
        backoff = options.get(properties, options.RETRY_BACKOFF, job=job)
        return cls(strategy, retries, backoff)


def duration_ms(raw: str, key: str) -> int:
    """``'250'`` / ``'250ms'`` / ``'2s'`` / ``'1 minute'`` / ``'1h'`` -> milliseconds.

    Raises:
        ConfigError: not a duration, naming ``key``.
    """
    backoff: int = options.RETRY_BACKOFF.parse(raw, key)
    return backoff


class StopRequested(Exception):
    """The job was stopped while a failed batch waited for its retry."""


@dataclass
class FailureCounters:
    """What the strategy did, for status and metrics."""

    failed_batches: int = 0
    retries: int = 0
    skipped_records: int = 0
    dead_lettered: int = 0


class BatchFailureHandler:
    """Runs one batch through the processor under a :class:`FailurePolicy`.

    Args:
        policy: the job's strategy.
        job: job name, in errors and dead letters.
        write_letters: where ``send_to_dlq`` puts the batch's rows.
        stopping: set when the job is being stopped; ends a backoff wait early.
        is_fatal: tells a broken processor (worker died) from a bad batch.
    """

    def __init__(
        self,
        policy: FailurePolicy,
        *,
        job: str,
        write_letters: Callable[[list[DeadLetter]], None],
        stopping: threading.Event,
        is_fatal: Callable[[BaseException], bool],
    ) -> None:
        self.policy = policy
        self.job = job
        self.write_letters = write_letters
        self.stopping = stopping
        self.is_fatal = is_fatal
        self.counters = FailureCounters()
        self.last_error: str | None = None

    def run(
        self, process: Callable[[pa.RecordBatch], list[pa.RecordBatch]], batch: pa.RecordBatch
    ) -> list[pa.RecordBatch]:
        """``process(batch)``, applying the policy when it raises.

        Raises:
            ExecutionError: the policy gives up (fail_batch, retries exhausted).
            StopRequested: the job was stopped during a retry backoff.
            Exception: a fatal processor error, unchanged.
        """
        attempt = 0
        while True:
            try:
                return process(batch)
            except Exception as exc:
                if self.is_fatal(exc):
                    raise
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._earlier_batch_failed(exc, batch):
                    continue  # V2 reported an earlier batch; this one was not taken
                attempt += 1
                if self._wait_for_retry(attempt, exc):
                    continue
                self.counters.failed_batches += 1
                return self._give_up(batch, exc)

    def run_flush(self, flush: Callable[[], list[pa.RecordBatch]]) -> list[pa.RecordBatch]:
        """``flush()`` at end of input, applying the policy to a batch whose
        failure a pipelined (V2) processor reports only now."""
        while True:
            try:
                return flush()
            except Exception as exc:
                if self.is_fatal(exc) or not isinstance(exc, BatchError) or exc.batch is None:
                    raise
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._earlier_batch_failed(exc, None)

    def _earlier_batch_failed(self, exc: Exception, current: pa.RecordBatch | None) -> bool:
        """A pipelined processor (V2 ``BatchError``) reports the failure of an
        earlier batch, carried as ``exc.batch``, before taking the current one.
        The earlier batch gets the policy without retries (its rows are no
        longer in flight); True = give the current batch again."""
        failed = exc.batch if isinstance(exc, BatchError) else None
        if failed is None or failed is current:
            return False
        self.counters.failed_batches += 1
        self._give_up(failed, exc)
        return True

    def _wait_for_retry(self, attempt: int, exc: Exception) -> bool:
        """Sleep the backoff of ``attempt`` if the policy retries; False = give up.

        Raises:
            StopRequested: the job was stopped during the wait.
        """
        policy = self.policy
        if policy.strategy is not FailureStrategy.RETRY_WITH_BACKOFF:
            return False
        if attempt > policy.max_retries:
            return False
        wait_s = policy.retry_backoff_ms * 2 ** (attempt - 1) / 1000
        log.warning("job %s: batch failed (%s); retry %d in %.3fs", self.job, exc, attempt, wait_s)
        self.counters.retries += 1
        if self.stopping.wait(wait_s):
            raise StopRequested(self.job) from exc
        return True

    def _give_up(self, batch: pa.RecordBatch, exc: Exception) -> list[pa.RecordBatch]:
        strategy = self.policy.strategy
        if strategy in (FailureStrategy.FAIL_BATCH, FailureStrategy.RETRY_WITH_BACKOFF):
            raise ExecutionError(f"job '{self.job}': batch of {batch.num_rows} rows failed: {exc}")
        if strategy is FailureStrategy.SEND_TO_DLQ:
            self.write_letters(batch_letters(batch, f"{type(exc).__name__}: {exc}", self.job))
            self.counters.dead_lettered += batch.num_rows
        else:
            log.error("job %s: skipped a batch of %d rows: %s", self.job, batch.num_rows, exc)
            self.counters.skipped_records += batch.num_rows
        return []


def batch_letters(batch: pa.RecordBatch, error: str, job: str) -> list[DeadLetter]:
    """One dead letter per row of a failed batch (the error path, so per-row is fine)."""
    rows = batch.to_pylist()
    return [
        DeadLetter(error, json.dumps(row, default=str), "", _position(row), job) for row in rows
    ]


def _position(row: dict[str, Any]) -> str:
    parts = [f"{key}={row[key]}" for key in ("_partition", "_offset") if row.get(key) is not None]
    return " ".join(parts)
