"""Worker processes of the V2 coordinator and the wire between them.

Each partition of a :class:`~flowsql.runtime.coordinator.PartitionedJobCoordinator`
is one process that owns a private :class:`~flowsql.engine.Engine`. The
coordinator talks to it over two one-way OS pipes (enlarged to 1 MiB, so a
10K-row batch usually crosses in one write and one read):

- a message is a pickled header tuple ``(kind, seq, arg)`` followed by
  ``frames`` Arrow IPC streams (record batches never go through pickle);
- the worker answers every message, in order, with ``("ok", seq, Reply)`` or
  ``("error", seq, text)`` plus the IPC streams of its output batches;
- the worker is single-threaded: it reads a message, handles it, writes the
  answer. The coordinator writes through a sender thread per worker (a
  blocked write waits in the kernel, without the GIL), so its main thread is
  always free to read answers and the two sides never both block on full
  pipes. The coordinator's limit on unanswered messages (its credit) bounds
  memory and makes a slow partition slow the coordinator down.

The coordinator waits on the pipe *and* the process sentinel, so a worker
that dies (even by SIGKILL) is seen at once, never waited on forever.

A worker that lives but makes no progress (stopped by SIGSTOP, frozen, starved
of CPU) is seen by its heartbeat: a thread of the worker writes the time
(``time.monotonic``, one clock for every process of the machine) into a shared
double every ``heartbeat_timeout / 4`` s (at most 0.5 s). Every thread of a
stopped process stops, so its heartbeat goes stale, while a worker busy with a
large batch keeps beating. The coordinator never waits on a worker without a
bound: every ``heartbeat_timeout / 4`` s it checks every worker, and one with
messages unanswered whose last heartbeat is older than ``heartbeat_timeout``
fails the job (:meth:`PartitionWorker.failure`) and is killed when it is
closed. The timeout is the WITH key ``'v2.heartbeat.timeout'``
(:func:`heartbeat_timeout`).
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import io
import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import forkserver, popen_forkserver, reduction, shared_memory, spawn, util
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, ForkServerProcess, set_spawning_popen
from multiprocessing.process import BaseProcess
from typing import Any

import pyarrow as pa

from flowsql.engine import Engine
from flowsql.errors import ExecutionError
from flowsql.plan import options
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetter, ListDeadLetters
from flowsql.runtime.splits import run_split

log = logging.getLogger(__name__)

#: Modules the fork server imports once, so each worker starts warm.
PRELOAD = (
    "numpy",
    "pyarrow",
    "pyarrow.compute",
    "sqlglot",
    "flowsql.sql",
    "flowsql.engine",
    "flowsql.runtime.worker",
    "flowsql.runtime.splits",
    "flowsql.exec.basic",
    "flowsql.exec.aggregate",
    "flowsql.exec.rows",
    "flowsql.exec.relational",
    # polars reads POLARS_MAX_THREADS once, at import, but starts its compute
    # pool lazily, on first use: imported here (never used), each worker gets
    # a pool of its own sized by the fork server's setting (one thread, see
    # _start_fork_server) instead of paying ~0.5 s of CPU to import it.
    "polars",
    "flowsql.connectors.jsonl",
)

#: Seconds a stopping worker gets before it is terminated, then killed.
STOP_GRACE_S = 2.0
#: WITH key: a worker silent this long with work outstanding fails the job.
HEARTBEAT_KEY = options.HEARTBEAT_TIMEOUT.name
#: Default of ``'v2.heartbeat.timeout'`` in seconds.
DEFAULT_HEARTBEAT_TIMEOUT_S = 10.0
#: Longest interval between two heartbeats of a worker.
HEARTBEAT_INTERVAL_S = 0.5
#: Bytes of one shared-memory slot (a 10K-row batch is a few hundred KB).
SLOT_BYTES = 4 << 20
#: Pipe buffer asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_BYTES = 1 << 20


@dataclass
class Reply:
    """What a worker reports besides its output batches."""

    late_records: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    done: bool = False
    max_event_time: int | None = None
    value: Any = None  # snapshot state, split statistics, ...


class PartitionError(ExecutionError):
    """A message raised in a worker (the worker lives on); ``seq`` says which."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


# ---------------------------------------------------------------- Arrow frames


def encode_batches(batches: Sequence[pa.RecordBatch]) -> list[pa.Buffer]:
    """Arrow IPC streams, one per run of batches sharing a schema."""
    frames: list[pa.Buffer] = []
    run: list[pa.RecordBatch] = []
    for b in batches:
        if run and not b.schema.equals(run[0].schema, check_metadata=False):
            frames.append(_encode_run(run))
            run = []
        run.append(b)
    if run:
        frames.append(_encode_run(run))
    return frames


def _encode_run(run: list[pa.RecordBatch]) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, run[0].schema) as writer:
        for b in run:
            writer.write_batch(b)
    return sink.getvalue()


def decode_frames(frames: Sequence[bytes | pa.Buffer]) -> list[pa.RecordBatch]:
    """The batches of :func:`encode_batches`' frames (zero-copy over the bytes)."""
    out: list[pa.RecordBatch] = []
    for frame in frames:
        with pa.ipc.open_stream(pa.py_buffer(frame)) as reader:
            out.extend(reader)
    return out


class SlotRing:
    """Shared memory with ``slots`` slots of ``slot_bytes``: message ``seq``
    carries its frames in slot ``seq % slots``, so a 10K-row batch crosses with
    one memcpy each way instead of many pipe reads (each a scheduler hand-off).

    A slot is reused ``slots`` messages later, which the sender's credit only
    allows once the message that used it has been read (readers copy out).

    Args:
        slots: number of slots (the sender's credit).
        slot_bytes: size of a slot; bigger messages go through the pipe.
        name: attach to an existing segment (in the worker) instead of creating one.
    """

    def __init__(self, slots: int, slot_bytes: int, name: str | None = None) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=slots * slot_bytes)
        else:  # attaching registers the name again with the (shared) resource tracker: a no-op
            self.shm = shared_memory.SharedMemory(name=name)
        self.name = self.shm.name

    def put(self, seq: int, frames: Sequence[pa.Buffer]) -> list[tuple[int, int]] | None:
        """Copy ``frames`` into the slot of ``seq``; None when they do not fit."""
        if sum(f.size for f in frames) > self.slot_bytes:
            return None
        spans = []
        offset = (seq % self.slots) * self.slot_bytes
        buf = self._buf
        for f in frames:
            buf[offset : offset + f.size] = memoryview(f).cast("B")
            spans.append((offset, f.size))
            offset += f.size
        return spans

    def take(self, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        """Copy frames out (the slot is reused once the sender learns we read it)."""
        buf = self._buf
        return [bytes(buf[o : o + n]) for o, n in spans]

    @property
    def _buf(self) -> memoryview:
        buf = self.shm.buf
        assert buf is not None, "the slot ring is closed"
        return buf

    def close(self, *, unlink: bool = False) -> None:
        self.shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def send_message(
    conn: Connection,
    header: tuple[Any, ...],
    frames: Sequence[pa.Buffer],
    ring: SlotRing | None = None,
) -> None:
    """Write one message: the pickled header, then the frames (through the
    ring's slot for ``header[1]`` (the seq) when given and big enough, else
    through the pipe)."""
    spans = ring.put(header[1], frames) if ring is not None and frames else None
    transport = ("shm", spans) if spans is not None else ("pipe", len(frames))
    conn.send_bytes(pickle.dumps((*header, transport), protocol=pickle.HIGHEST_PROTOCOL))
    if spans is None:
        for frame in frames:
            conn.send_bytes(memoryview(frame))


def recv_message(
    conn: Connection, ring: SlotRing | None = None
) -> tuple[tuple[Any, ...], list[bytes]]:
    """Read one message written by :func:`send_message`."""
    *header, (how, what) = pickle.loads(conn.recv_bytes())
    if how == "shm":
        assert ring is not None
        return tuple(header), ring.take(what)
    return tuple(header), [conn.recv_bytes() for _ in range(what)]


def _enlarge(conn: Connection) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(conn.fileno(), set_size, PIPE_BYTES)


# ------------------------------------------------------------- worker process


Handler = Callable[[str, Any, list[pa.RecordBatch]], tuple[list[pa.RecordBatch], Reply]]


def worker_main(
    inbox: Connection,
    outbox: Connection,
    make_handler: Callable[[], Handler],
    env: dict[str, str] | None = None,
    rings: tuple[str, str, int, int] | None = None,
    heartbeat: tuple[Any, float] | None = None,
) -> None:
    """Entry point of a worker process: answer messages until told to stop.

    Args:
        inbox: the pipe end messages arrive on.
        outbox: the pipe end answers go to.
        make_handler: builds, inside the worker, the function that handles one
            message ``(kind, arg, batches) -> (output batches, Reply)``.
        env: environment set before anything runs (thread pool sizes: the
            partitions already use every core).
        rings: shared-memory slot rings (requests, replies, slots, slot bytes).
        heartbeat: a shared double to write the time into, and the interval.
    """
    # Ctrl-C reaches the whole process group; the coordinator stops its workers
    # itself, so a worker must not die of it first (with a traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if heartbeat is not None:
        threading.Thread(target=_beat, args=heartbeat, name="heartbeat", daemon=True).start()
    os.environ.update(env or {})
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>` shows where it is
    requests = replies = None
    if rings is not None:
        requests = SlotRing(rings[2], rings[3], rings[0])
        replies = SlotRing(rings[2], rings[3], rings[1])
    try:
        handler: Handler | str = make_handler()
    except Exception:  # noqa: BLE001 - reported with every answer, then exit
        handler = traceback.format_exc()
    try:
        send_message(outbox, ("ready", -1, None), [])
        while True:
            (kind, seq, arg, reply_in_slot), frames = recv_message(inbox, requests)
            if kind == "stop":
                break
            _answer(outbox, seq, handler, kind, arg, frames, replies if reply_in_slot else None)
    except (EOFError, OSError):
        pass  # the coordinator closed the pipe: it is shutting us down
    finally:
        inbox.close()
        outbox.close()
        for ring in (requests, replies):
            if ring is not None:
                ring.close()


def _beat(beat: Any, interval: float) -> None:
    """In a worker: write the time into ``beat`` every ``interval`` s, for good."""
    while True:
        beat.value = time.monotonic()
        time.sleep(interval)


def _answer(
    conn: Connection,
    seq: int,
    handler: Handler | str,
    kind: str,
    arg: Any,
    frames: list[bytes],
    ring: SlotRing | None,
) -> None:
    try:
        if isinstance(handler, str):
            raise ExecutionError(f"the partition could not start:\n{handler}")
        out, reply = handler(kind, arg, decode_frames(frames))
    except Exception as exc:  # noqa: BLE001 - the coordinator raises it
        text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        send_message(conn, ("error", seq, text), [])
        return
    send_message(conn, ("ok", seq, reply), encode_batches(out), ring)


# ------------------------------------------------------------ coordinator side


def worker_context() -> mp.context.BaseContext:
    """The multiprocessing context for workers: forkserver (not fork: the job
    server runs threads, and forking a threaded process can deadlock), with the
    engine preloaded so a worker starts in milliseconds, and nothing imported
    from the working directory (see :func:`clean_sys_path`)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    _WORKER_CONTEXT.set_forkserver_preload(list(PRELOAD))
    _start_fork_server()
    return _WORKER_CONTEXT


# A worker never imports from the working directory: a job's file sink may have
# written ``json.py`` there. Python puts that directory first on sys.path for
# ``python -c`` (how the fork server and the resource tracker start), and
# multiprocessing gives every child the parent's sys.path, '' made absolute.

#: The directory that holds the ``flowsql`` package: the one working directory
#: a worker may import from (a source checkout run from its root).
PACKAGE_HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def clean_sys_path(path: Sequence[str], cwd: str) -> list[str]:
    """``path`` without ``cwd``: no '', '.' nor any entry naming that directory
    (unless it is :data:`PACKAGE_HOME`); the environment's entries stay."""
    here = os.path.realpath(cwd)
    if here == PACKAGE_HOME:
        return list(path)
    return [entry for entry in path if os.path.realpath(os.path.join(here, entry)) != here]


def worker_preparation(name: str) -> dict[str, Any]:
    """What a worker applies before it unpickles its task: the parent's
    preparation data with a clean sys.path and without the parent's main module
    (a worker runs flowsql code only; it never re-runs the script that started it)."""
    data = spawn.get_preparation_data(name)
    data["sys_path"] = clean_sys_path(data["sys_path"], data["dir"])
    data.pop("init_main_from_path", None)
    data.pop("init_main_from_name", None)
    return data


class _WorkerPopen(popen_forkserver.Popen):
    """Starts a worker from the fork server with :func:`worker_preparation`; the
    rest is the standard library's ``popen_forkserver.Popen._launch``."""

    _fds: list[int]

    def _launch(self, process_obj: BaseProcess) -> None:
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(worker_preparation(process_obj.name), buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        _start_fork_server()  # restarted, if it died, the same careful way
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        parent_w = os.dup(w)  # the child's sentinel of this process
        self.finalizer = util.Finalize(self, _close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class _WorkerProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: BaseProcess) -> _WorkerPopen:  # noqa: N802 (multiprocessing's name)
        return _WorkerPopen(process_obj)


class _WorkerContext(ForkServerContext):
    Process = _WorkerProcess


_WORKER_CONTEXT = _WorkerContext()
_fork_server_lock = threading.Lock()


def _start_fork_server() -> None:
    """Start the fork server (and the resource tracker) if it is not running:
    with ``PYTHONSAFEPATH`` so ``python -c`` leaves the working directory off
    sys.path, with a clean sys.path to hand on (Python >= 3.12 applies it), and
    with single-threaded polars unless the environment says otherwise: a worker
    is one core's worth of work, and the fork server imports polars once for all
    workers, which fixes their pool size (polars reads ``POLARS_MAX_THREADS``
    at import)."""
    env = {"PYTHONSAFEPATH": "1"}
    if "POLARS_MAX_THREADS" not in os.environ:
        env["POLARS_MAX_THREADS"] = "1"
    if sys.flags.ignore_environment and not sys.flags.safe_path:
        log.warning("python -E ignores PYTHONSAFEPATH: add -P so workers never import from cwd")
    with _fork_server_lock, _environ(env), _sys_path(clean_sys_path(sys.path, os.getcwd())):
        forkserver.ensure_running()


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _sys_path(path: list[str]) -> Iterator[None]:
    """``sys.path`` is ``path`` inside (a no-op unless the working directory is on it)."""
    if path == sys.path:
        yield
        return
    before = sys.path
    sys.path = path
    try:
        yield
    finally:
        sys.path = before


def worker_env(workers: int) -> dict[str, str]:
    """Thread pools of a worker sized to its share of the cores, so N workers
    do not each start a pool as large as the machine (polars' pool is fixed
    by the fork server: see :func:`_start_fork_server`)."""
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {"OMP_NUM_THREADS": share}


def heartbeat_timeout(properties: Mapping[str, str]) -> float:
    """Seconds of ``'v2.heartbeat.timeout'`` in a job's WITH properties ('10s',
    '500ms', or milliseconds; '0' turns the check off), default 10 s.

    Raises:
        ConfigError: not a duration.
    """
    timeout_ms: int = options.get(properties, options.HEARTBEAT_TIMEOUT)
    return timeout_ms / 1000


class PartitionWorker:
    """The coordinator's handle on one worker process.

    Args:
        partition: partition number (used in errors).
        make_handler: picklable zero-argument callable run in the worker to
            build its message handler.
        job: job name used in errors.
        env: environment variables for the worker (see :func:`worker_env`).
        heartbeat_timeout: seconds without a heartbeat after which the worker,
            if it has work outstanding, is stalled (0: never).
    """

    def __init__(
        self,
        partition: int,
        make_handler: Callable[[], Handler],
        job: str,
        env: dict[str, str] | None = None,
        slots: int = 3,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
    ) -> None:
        self.partition = partition
        self.slots = slots
        self.job = job
        self.heartbeat_timeout = heartbeat_timeout
        self.sent = 0  # messages sent
        self.answered = 0  # replies received
        self._closed = False
        self._stop_sent = False
        self._ready = False
        ctx = worker_context()
        child_in, self._to_worker = ctx.Pipe(duplex=False)
        self.conn, child_out = ctx.Pipe(duplex=False)
        for end in (self._to_worker, self.conn):
            _enlarge(end)
        self._requests = SlotRing(slots, SLOT_BYTES)
        self._replies = SlotRing(slots, SLOT_BYTES)
        rings = (self._requests.name, self._replies.name, slots, SLOT_BYTES)
        self._beat = ctx.Value("d", time.monotonic(), lock=False)  # the worker's last heartbeat
        beating = (self._beat, self.tick) if heartbeat_timeout > 0 else None
        self.process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_in, child_out, make_handler, env, rings, beating),
            name=f"flowsql-{job}-p{partition}",
            daemon=True,
        )
        try:
            self.process.start()
        finally:
            child_in.close()
            child_out.close()
        self._outbox: queue.SimpleQueue[tuple[tuple[Any, ...], list[pa.Buffer]] | None] = (
            queue.SimpleQueue()
        )
        self._send_error: BaseException | None = None
        self._queue_lock = threading.Lock()
        self._queued = 0  # messages handed to the sender thread and not yet written
        self._sender = threading.Thread(
            target=self._send_loop, name=f"flowsql-{job}-p{partition}-send", daemon=True
        )
        self._sender.start()

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet answered."""
        return self.sent - self.answered

    @property
    def tick(self) -> float | None:
        """Longest wait on this worker between two liveness checks (None: no limit),
        also the interval of its heartbeats."""
        if self.heartbeat_timeout <= 0:
            return None
        return min(HEARTBEAT_INTERVAL_S, self.heartbeat_timeout / 4)

    @property
    def silence(self) -> float:
        """Seconds since the worker's last heartbeat (since its start before the first)."""
        return time.monotonic() - float(self._beat.value)

    @property
    def stalled(self) -> bool:
        """True when the process lives, has messages unanswered (or has not said it
        is ready) and has sent no heartbeat for longer than ``heartbeat_timeout``."""
        busy = self.in_flight > 0 or not self._ready
        return busy and self._silent() and self.process.exitcode is None

    def _silent(self) -> bool:
        return 0 < self.heartbeat_timeout < self.silence

    def failure(self) -> ExecutionError | None:
        """Why the worker cannot go on, checked without waiting: it ended without
        being asked to stop, or it stalled; None while it is healthy."""
        if self._closed or self._stop_sent:
            return None
        if self.process.exitcode is not None:
            return self.death_error()
        return self.stall_error() if self.stalled else None

    def wait_ready(self) -> None:
        """Wait until the worker has started and built its handler.

        Raises:
            ExecutionError: the worker died or stalled while starting.
        """
        if self._ready:
            return
        while not (ready := wait([self.conn, self.process.sentinel], self.tick)):
            if self.stalled:
                raise self.stall_error()
        (status, _, _), _ = self._receive(ready)
        assert status == "ready"
        self._ready = True

    def send(self, kind: str, arg: Any = None, batches: Sequence[pa.RecordBatch] = ()) -> int:
        """Queue one message for the worker; return its sequence number."""
        if self._send_error is not None or self._stop_sent:
            raise self.death_error()
        seq = self.sent
        frames = encode_batches([b for b in batches if b.num_rows]) if batches else []
        in_slot = self.in_flight < self.slots  # slot seq % slots is free both ways
        header = (kind, seq, arg, in_slot)
        with self._queue_lock:
            if self._queued or not self._direct(kind, in_slot, frames):
                self._queued += 1
                self._outbox.put((header, frames))
            else:
                self._write_now(header, frames)
        self.sent += 1
        return seq

    def _direct(self, kind: str, in_slot: bool, frames: list[pa.Buffer]) -> bool:
        """True when only a small header goes through the pipe (it cannot block)."""
        fits = sum(f.size for f in frames) <= self._requests.slot_bytes
        return kind in ("batch", "split") and in_slot and fits

    def _write_now(self, header: tuple[Any, ...], frames: list[pa.Buffer]) -> None:
        try:
            send_message(self._to_worker, header, frames, self._requests)
        except (OSError, ValueError) as exc:
            self._send_error = exc
            raise self.death_error() from exc

    def _send_loop(self) -> None:
        # Messages whose write may block (big, or through the pipe) go through
        # here, so the coordinator's thread stays free to read answers.
        while (item := self._outbox.get()) is not None:
            header, frames = item
            ring = self._requests if header[3] else None
            try:
                send_message(self._to_worker, header, frames, ring)
                with self._queue_lock:
                    self._queued -= 1
            except Exception as exc:  # noqa: BLE001 - the worker is gone, or a bug here
                self._send_error = exc
                # Close our end: the worker sees EOF and exits, so whoever waits
                # on its answers wakes up on the sentinel instead of hanging.
                with contextlib.suppress(OSError):
                    self._to_worker.close()
                return

    def receive(
        self, timeout: float | None = None
    ) -> tuple[int, list[pa.RecordBatch], Reply] | None:
        """The next reply (seq, batches, Reply), None on timeout.

        Raises:
            ExecutionError: the worker died or its handler failed.
        """
        self.wait_ready()
        ready = wait([self.conn, self.process.sentinel], timeout)
        if not ready:
            return None
        (status, seq, payload), frames = self._receive(ready)
        self.answered += 1
        if status == "error":
            raise PartitionError(
                f"job '{self.job}': partition {self.partition} failed: {payload}", seq
            )
        return seq, decode_frames(frames), payload

    def _receive(self, ready: list[Any]) -> tuple[Any, list[Any]]:
        """The next reply, given what ``wait`` found ready; a dead worker (its
        sentinel ready and nothing left in the pipe) raises its death error."""
        if self.conn not in ready and not self.conn.poll():
            raise self.death_error()
        try:
            return recv_message(self.conn, self._replies)
        except (EOFError, OSError) as exc:
            raise self.death_error() from exc

    def death_error(self) -> ExecutionError:
        """The error naming this partition and how its process ended."""
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        how = f"exit code {code}" if code is not None else "no exit code (still running?)"
        if code is not None and code < 0:
            how += f" (killed by signal {-code})"
        if self._send_error is not None and not isinstance(self._send_error, OSError):
            how += f"; sending to it failed: {self._send_error!r}"
        return ExecutionError(
            f"job '{self.job}': worker of partition {self.partition}"
            f" (pid {self.process.pid}) died: {how}"
        )

    def stall_error(self) -> ExecutionError:
        """The error naming this partition and how long it has been silent."""
        return ExecutionError(
            f"job '{self.job}': worker of partition {self.partition} (pid {self.process.pid})"
            f" stalled: no heartbeat for {self.silence:.1f}s with {self.in_flight} messages"
            f" unanswered ('{HEARTBEAT_KEY}' = {self.heartbeat_timeout:g}s); it is stopped"
            " (SIGSTOP), frozen or starved of CPU, and is killed"
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the process is reaped)."""
        return self._closed

    @property
    def failed(self) -> bool:
        """True when the process has ended without being asked to stop, or stalled."""
        if self._closed or self._stop_sent:
            return False
        return self.process.exitcode is not None or self.stalled

    def close(self) -> None:
        """Ask the worker to stop, then make sure it is gone and reaped."""
        if self._closed:
            return
        self._closed = True
        if self.process.exitcode is None and self._silent():
            self.process.kill()  # stopped or frozen: it would never read the stop message
        self.ask_to_stop()
        self._discard_until_exit(time.monotonic() + STOP_GRACE_S)
        if self.process.exitcode is None:
            self.process.terminate()
            self.process.join(STOP_GRACE_S)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self._sender.join()  # its pipe's reader is gone: a blocked write has failed
        self._to_worker.close()
        self.conn.close()
        self.process.close()
        self._requests.close(unlink=True)
        self._replies.close(unlink=True)

    def _discard_until_exit(self, deadline: float) -> None:
        # Read and drop late replies so a worker blocked writing one can exit.
        while self.process.exitcode is None and (left := deadline - time.monotonic()) > 0:
            ready = wait([self.conn, self.process.sentinel], left)
            if self.conn in ready:
                try:
                    self.conn.recv_bytes()
                except (EOFError, OSError):
                    self.process.join(left)
                    return

    def ask_to_stop(self) -> None:
        """Queue the stop message once (no wait); the sender thread ends after it."""
        if self._stop_sent:
            return
        self._stop_sent = True
        if self.process.exitcode is None:
            with self._queue_lock:
                self._queued += 1
                self._outbox.put((("stop", self.sent, None, False), []))
        self._outbox.put(None)


def close_all(workers: Sequence[PartitionWorker]) -> None:
    """Stop every worker; ask all first so they wind down in parallel."""
    for w in workers:
        if not w.closed:
            w.ask_to_stop()
    for w in workers:
        try:
            w.close()
        except Exception:  # noqa: BLE001 - reap the rest whatever happens
            log.exception("closing worker of partition %d", w.partition)


# ------------------------------------------------------- the partition engine


@dataclass(frozen=True)
class EngineSpec:
    """Picklable recipe for a partition's engine (built inside the worker)."""

    statement: Statement
    job: str

    def __call__(self) -> Handler:
        return EngineHandler(self.statement, self.job)


class EngineHandler:
    """A partition's private engine, driven by the coordinator's messages.

    Batches arrive with ``_timestamp`` already assigned by the coordinator (and,
    for windowed queries, ``__prior_max_event_time`` where a row could be late
    or the input is partitioned), so the engine takes event time from
    ``_timestamp`` as is. The engine is *driven*: it advances only to the
    watermark base each message carries (the coordinator's, over every input
    partition), never to one of its own rows. It is built on first use: a
    worker that only runs splits (``flowsql.runtime.splits``) never needs it.
    """

    def __init__(self, statement: Statement, job: str) -> None:
        self.statement = statement
        self.job = job
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.statement, job=self.job, driven=True)
        return self._engine

    def __call__(
        self, kind: str, arg: Any, batches: list[pa.RecordBatch]
    ) -> tuple[list[pa.RecordBatch], Reply]:
        if kind == "split":
            return self._split(arg)
        engine = self.engine
        value: Any = None
        out: list[pa.RecordBatch] = []
        if kind == "batch":
            for b in batches:
                out += engine.process(b)
            if arg is not None and not engine.done:
                out += engine.advance(arg)
        elif kind == "flush":
            out = engine.flush()
        elif kind == "snapshot":
            value = engine.snapshot()
        elif kind == "restore":
            engine.restore(arg)
        else:
            raise ExecutionError(f"unknown message '{kind}'")
        return out, self._reply(value)

    def _split(self, task: Any) -> tuple[list[pa.RecordBatch], Reply]:
        out, (metrics, letters, result) = run_split(task, self.job)
        return out, Reply(metrics.late_records, letters, False, metrics.max_event_time, result)

    def _reply(self, value: Any) -> Reply:
        letters: list[DeadLetter] = []
        sink = self.engine.dead_letters
        if isinstance(sink, ListDeadLetters) and sink.letters:
            letters, sink.letters = sink.letters, []
        return Reply(
            late_records=self.engine.metrics.late_records,
            dead_letters=letters,
            done=self.engine.done,
            max_event_time=self.engine.metrics.max_event_time,
            value=value,
        )
