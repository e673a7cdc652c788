"""Checkpoints: operator state plus source offsets, written atomically.

A checkpoint belongs to one *key* of one job: a Kafka partition when state is
kept per partition (so a partition's state can move to another process), or
the whole job. Each key has at most two checkpoints on disk:

- ``committed``: the last one whose offsets are known to be committed;
- ``staged``: written just before the offsets are committed (Kafka offset
  commit or transaction), promoted to ``committed`` right after.

If a process dies between the two writes, :func:`choose` decides on restart
which of the two matches what Kafka actually committed, so state and offsets
(and, with transactions, the output) always agree.

Files are written to a temporary name, fsynced and renamed into place, so a
reader never sees half a checkpoint; a CRC guards against damaged files. The
store root may be a shared directory (NFS, a mounted volume) so that a
partition's new owner on another machine restores its state.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowsql.errors import ExecutionError

_MAGIC = b"FSQLCKP1"
_HEADER = struct.Struct(">8sIQ")  # magic, crc32, payload length
#: Environment variable for the default checkpoint directory.
CHECKPOINT_DIR_ENV = "FLOWSQL_CHECKPOINT_DIR"


@dataclass
class Checkpoint:
    """One consistent cut of a job key.

    Attributes:
        id: increases by one with every checkpoint of the key.
        offsets: ``"topic:partition"`` -> next offset to read.
        state: the processor's ``snapshot()``.
        query: fingerprint of the SQL (state of another query is never restored).
        created_ms: wall-clock time of the checkpoint.
        extra: small job-specific values (e.g. end-of-input markers seen).
    """

    id: int
    offsets: dict[str, int]
    state: Any
    query: str = ""
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    extra: dict[str, Any] = field(default_factory=dict)


class CheckpointStore(Protocol):
    """Where checkpoints live (a local or shared directory, or memory in tests)."""

    def stage(self, key: str, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` as the key's staged checkpoint (atomically)."""
        ...

    def promote(self, key: str) -> None:
        """Make the staged checkpoint the committed one."""
        ...

    def load(self, key: str) -> tuple[Checkpoint | None, Checkpoint | None]:
        """The key's (committed, staged) checkpoints; None where absent."""
        ...


def fingerprint(sql: str) -> str:
    """A short, stable fingerprint of a query's text (whitespace-insensitive)."""
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:16]


def choose(
    committed: Checkpoint | None,
    staged: Checkpoint | None,
    kafka_offsets: Mapping[str, int],
) -> Checkpoint | None:
    """The checkpoint to restore, given the offsets Kafka has committed.

    The staged checkpoint wins when Kafka committed exactly its offsets (the
    process died after the commit, before promoting it); otherwise the
    committed checkpoint is the consistent one.
    """
    if staged is not None and staged.offsets and _matches(staged.offsets, kafka_offsets):
        return staged
    return committed


def _matches(offsets: Mapping[str, int], kafka: Mapping[str, int]) -> bool:
    return all(kafka.get(tp) == off for tp, off in offsets.items())


def encode(checkpoint: Checkpoint) -> bytes:
    """Header (magic, CRC32, length) + pickled checkpoint."""
    payload = pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(_MAGIC, zlib.crc32(payload), len(payload)) + payload


def decode(data: bytes, where: str = "") -> Checkpoint:
    """Inverse of :func:`encode`; raises ExecutionError on a damaged file."""
    if len(data) < _HEADER.size:
        raise ExecutionError(f"checkpoint {where} is truncated")
    magic, crc, length = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        raise ExecutionError(f"checkpoint {where} is damaged (bad header or checksum)")
    checkpoint = pickle.loads(payload)  # our own files: the store is trusted like the job
    if not isinstance(checkpoint, Checkpoint):
        raise ExecutionError(f"checkpoint {where} does not hold a checkpoint")
    return checkpoint


class FileCheckpointStore:
    """Checkpoints as files under ``root/<job>/<key>/{committed,staged}.ckpt``.

    Args:
        root: directory for all jobs; share it between machines to let a
            partition's state follow the partition.
        job: the job's name (with its consumer group, so two deployments of
            one query never mix state).
    """

    def __init__(self, root: str | Path, job: str) -> None:
        self.dir = Path(root) / _safe(job)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, which: str) -> Path:
        return self.dir / _safe(key) / f"{which}.ckpt"

    def stage(self, key: str, checkpoint: Checkpoint) -> None:
        path = self._path(key, "staged")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, encode(checkpoint))

    def promote(self, key: str) -> None:
        staged, committed = self._path(key, "staged"), self._path(key, "committed")
        if staged.exists():
            os.replace(staged, committed)
            _fsync_dir(committed.parent)

    def load(self, key: str) -> tuple[Checkpoint | None, Checkpoint | None]:
        return self._read(key, "committed"), self._read(key, "staged")

    def _read(self, key: str, which: str) -> Checkpoint | None:
        path = self._path(key, which)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return decode(data, str(path))


class MemoryCheckpointStore:
    """Checkpoints in a dict (tests and single-process experiments)."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}

    def stage(self, key: str, checkpoint: Checkpoint) -> None:
        self.files[(key, "staged")] = encode(checkpoint)

    def promote(self, key: str) -> None:
        if (key, "staged") in self.files:
            self.files[(key, "committed")] = self.files.pop((key, "staged"))

    def load(self, key: str) -> tuple[Checkpoint | None, Checkpoint | None]:
        return tuple(  # type: ignore[return-value]
            decode(self.files[(key, w)], key) if (key, w) in self.files else None
            for w in ("committed", "staged")
        )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", name) or "_"
