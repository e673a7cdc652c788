"""A Kafka statement deployed on the job server (:class:`KafkaServerJob`): a
``KafkaJob`` run on the job's thread with the control surface of
:class:`flowsql.server.job.Job` (status, pause/resume, processor switch, stop)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flowsql.connectors.kafka.client import KafkaSink
from flowsql.errors import ExecutionError, FlowSQLError
from flowsql.plan import nodes as n
from flowsql.records import ClosingDeadLetterSink
from flowsql.runtime.factory import make_processor
from flowsql.runtime.kafka_job import JobStats, KafkaJob
from flowsql.runtime.kafka_job import ProcessorFactory as KafkaProcessorFactory
from flowsql.server.config import ProcessorChoice, Redactor
from flowsql.server.job import (
    JobState,
    JobStatus,
    JobThread,
    ProcessorFactory,
    close_quietly,
    rate,
)

log = logging.getLogger(__name__)


class KafkaServerJob(JobThread):
    """A Kafka statement deployed on the job server: a :class:`KafkaJob` (consumer
    group, one processor per Kafka partition, checkpoints, exactly-once) run on
    the job's thread, with the control surface of :class:`Job`.

    Pause, resume and processor switches are served by the Kafka job between two
    batches (see ``KafkaJob.switch_processor``); stop ends it with a final
    checkpoint and offset commit. A batch that raises, or a V2 worker that dies,
    fails the job: with ``'restart.attempts' = N`` (default 0) it restarts up to
    N times, ``'restart.backoff'`` apart, from its last checkpoint (a new
    ``KafkaJob``: the group hands it the partitions, each restored from the
    checkpoint store); else it ends FAILED, and redeployed with the same
    ``group.id`` it resumes from that checkpoint.

    Args:
        statement: the planned statement (a Kafka source declared in WITH).
        kafka: the Kafka job, built but not run.
        choice: the processor each partition task runs.
        dead_letters: where bad records go (the Kafka job counts them).
        redactor: masks secrets in everything the job shows.
        processor_factory: builds processors for ``choice``.
        name: the job's name.
        rebuild: builds a fresh Kafka job continuing the given counters (restarts).
    """

    failure_strategy = "fail_job"

    def __init__(
        self,
        statement: n.Statement,
        *,
        kafka: KafkaJob,
        choice: ProcessorChoice,
        dead_letters: ClosingDeadLetterSink,
        redactor: Redactor,
        processor_factory: ProcessorFactory = make_processor,
        name: str | None = None,
        rebuild: Callable[[JobStats], KafkaJob] | None = None,
    ) -> None:
        super().__init__(statement, name, redactor)
        self.kafka = kafka
        self.sink = kafka.sink
        self.choice = choice
        self.dead_letters = dead_letters
        self._factory = processor_factory
        self._pause_requested = False
        self._rebuild = rebuild
        self._restarts = 0
        self._stopping = threading.Event()
        kafka.factory = self._task_factory(choice)

    def _task_factory(self, choice: ProcessorChoice) -> KafkaProcessorFactory:
        factory = self._factory
        return lambda statement, letters: factory(statement, choice, letters or self.dead_letters)

    # -- control (any thread) -------------------------------------------------------

    @property
    def state(self) -> JobState:
        if self._state.terminal:
            return self._state
        return JobState.PAUSED if self.kafka.paused else JobState.RUNNING

    def pause(self, timeout: float = 30.0) -> JobState:
        """Checkpoint and stop consuming at the next batch boundary (the group
        membership is kept); the pause applies after ``timeout`` s either way."""
        self._pause_requested = True
        self._control(self.kafka.pause, timeout)
        return self.state

    def resume(self) -> JobState:
        """Consume again."""
        self._pause_requested = False
        self._control(self.kafka.resume, None)
        return self.state

    def stop(self, timeout: float = 10.0) -> JobState:
        """Stop at the next batch boundary with a final checkpoint and offset commit;
        wait up to ``timeout`` s for the job thread to end."""
        self.request_stop()
        self.join(timeout)
        return self.state

    def request_stop(self) -> None:
        """Ask the job to stop after the batch in progress; do not wait."""
        self._stopping.set()
        self.kafka.stop()

    def close_unstarted(self) -> None:
        """Leave the group and close the clients of a job that was never started."""
        close_quietly(self.kafka, self.name)
        close_quietly(self.sink, self.name)
        close_quietly(self.dead_letters, self.name)

    def check_health(self) -> None:
        """Nothing to do: the Kafka job checks its processors on every poll of its
        consumer (at least every ``'<src>.batch.max.wait.ms'``, 100 ms by default), so a
        dead or stalled V2 worker fails it as fast as the watchdog fails a plain job."""

    def switch_processor(self, choice: ProcessorChoice, timeout: float = 30.0) -> JobStatus:
        """Checkpoint, then rebuild every partition task on ``choice`` with its state.

        Raises:
            ExecutionError: the job has ended, no batch boundary within ``timeout``
                s, or the switch failed (the tasks then keep their processors).
        """
        if self._state.terminal:
            raise ExecutionError(f"job '{self.name}' is {self._state.value}: cannot switch")
        before = self._label_text()
        try:
            self.kafka.switch_processor(self._task_factory(choice), timeout)
        except FlowSQLError:
            raise
        except Exception as exc:  # e.g. V2 workers that could not start
            raise ExecutionError(
                self.redactor.text(f"job '{self.name}': switch failed: {_describe_kafka(exc)}")
            ) from exc
        self.choice = choice
        self._switched(before, self._label_text())
        return self.status()

    def _control(self, action: Callable[[float | None], bool], timeout: float | None) -> None:
        if self._state.terminal:
            return
        try:
            action(timeout)
        except ExecutionError:  # the job ended meanwhile
            return

    # -- status ---------------------------------------------------------------------------

    def _label(self) -> tuple[str, str, int]:
        if self.kafka.label is not None:
            return self.kafka.label
        if self.choice.version == "v1":
            return "SimpleJobProcessor", "V1", 1
        return "PartitionedJobCoordinator", "V2", self.choice.num_partitions

    def _label_text(self) -> str:
        _, version, partitions = self._label()
        return f"{version}({partitions})"

    def status(self) -> JobStatus:
        """A view of the job, read without waiting for the batch in progress."""
        stats, spec = self.kafka.stats, self.kafka.spec
        return self._status(
            state=self.state,
            label=self._label(),
            counters=stats,
            watermark=stats.watermark,
            partition_watermarks=stats.partition_watermarks,
            last_error=self._last_error,
            pause_requested=self._pause_requested,
            records_per_second=rate(stats.records_in, stats.active_s),
            late_records=stats.late_records,
            dead_lettered=stats.dead_lettered,
            failed_batches=0,
            retries=0,
            failure_strategy=self.failure_strategy,
            kafka={
                "group_id": spec.group_id,
                "topic": spec.source.topic,
                "guarantee": spec.guarantee,
                "partitions": list(self.kafka.assigned),
                "records_repartitioned": stats.records_repartitioned,
                "checkpoints": stats.checkpoints,
                "rebalances": stats.rebalances,
                "restored_partitions": stats.restored_partitions,
                "restarts": self._restarts,
            },
        )

    # -- the job thread ---------------------------------------------------------------

    def _run(self) -> None:
        state = JobState.FAILED
        try:
            while True:
                try:
                    self.kafka.run()
                except Exception as exc:
                    if not self._restart(exc):
                        raise
                    continue
                state = JobState.FINISHED if self.kafka.input_ended else JobState.STOPPED
                break
        except BaseException as exc:  # the thread records every failure
            self._last_error = self.redactor.text(_describe_kafka(exc))
            log.error("job %s failed: %s", self.name, self._last_error)
        finally:
            state = self._close_outputs(state)
            self._finished = datetime.now(UTC)
            self._state = state
            log.info("job %s: %s", self.name, state.value)

    def _restart(self, exc: Exception) -> bool:
        """After a failure: wait the backoff, then continue from the last checkpoint
        with a new Kafka job, if restarts are configured and left (True)."""
        spec = self.kafka.spec
        if self._rebuild is None or self._restarts >= spec.restart_attempts:
            return False
        self._last_error = self.redactor.text(_describe_kafka(exc))
        log.warning(
            "job %s failed (%s); restart %d of %d from the last checkpoint",
            self.name,
            self._last_error,
            self._restarts + 1,
            spec.restart_attempts,
        )
        if self._stopping.wait(spec.restart_backoff_ms / 1000):
            return False  # stopped meanwhile: end as failed, with the error
        kafka = self._rebuild(self.kafka.stats)
        kafka.factory = self._task_factory(self.choice)
        self.kafka = kafka
        self._restarts += 1
        if self._stopping.is_set():  # a stop that reached the old job
            kafka.stop()
        return True

    def _close_outputs(self, state: JobState) -> JobState:
        """Close a sink the Kafka job does not own, and the dead-letter sinks."""
        close_quietly(self.dead_letters, self.name)
        if isinstance(self.sink, KafkaSink):
            return state  # written through the job's producer, already flushed
        try:
            if state is JobState.FAILED:
                self.sink.abort()
            else:
                self.sink.close()
        except Exception as exc:
            self._last_error = self.redactor.text(f"closing the sink failed: {exc}")
            return JobState.FAILED
        return state


def _describe_kafka(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, FlowSQLError) else f"{type(exc).__name__}: {exc}"
