"""Dead-letter sinks: where records that cannot be decoded, typed or placed go."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

import msgspec

from flowsql.connectors.paths import Directory, Roots, check_sink_path, confined
from flowsql.errors import ConnectorError
from flowsql.records import DeadLetter, DeadLetterSink

_ENCODER = msgspec.json.Encoder()


class JsonlDeadLetters:
    """Appends dead letters to a JSON-lines file, one object per record::

        {"error": ..., "original": ..., "source": ..., "position": ..., "operator": ...}

    ``original`` is the record's original text (bytes are decoded as UTF-8 with
    replacement). The file is created on the first letter, or empty on
    ``close()`` if none came; each ``write`` is flushed so letters survive a crash.

    The path obeys the sink-name rule (no ``.py``, ``.pth``, ... nor a path in
    the Python environment: :func:`~flowsql.connectors.paths.check_sink_path`).
    With ``roots`` (the job server) it is checked against them each time the file
    is opened, and opened without following a symlink swapped in since
    (:mod:`flowsql.connectors.paths`).

    Args:
        path: the file (truncated when first opened).
        roots: the directories it must be in when opened; None = anywhere (the CLI).
        key: what set the path, in errors (``'dlq.path'``, ``--dlq``).

    Raises:
        ConfigError: a path a sink may not take.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, roots: Roots = None, key: str = "dlq.path"
    ) -> None:
        check_sink_path(path, key=key)
        self.path = Path(path)
        self.roots = roots
        self.count = 0
        self._file: IO[bytes] | None = None

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        f = self._open()
        f.write(_ENCODER.encode_lines([_as_dict(letter) for letter in letters]))
        f.flush()
        self.count += len(letters)

    def close(self) -> None:
        self._open().close()

    def _open(self) -> IO[bytes]:
        if self._file is None or self._file.closed:
            append = self._file is not None  # reopened after close(): keep what is there
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            self._file = os.fdopen(self._open_fd(flags), "ab" if append else "wb")
        return self._file

    def _open_fd(self, flags: int) -> int:
        target = self.path
        if self.roots is not None:
            target = confined(self.path, self.roots, what="dead-letter file")
        with contextlib.closing(
            Directory(target.parent, self.roots, what="dead-letter directory")
        ) as directory:
            try:
                fd = directory.open(target.name, flags)
            except OSError as exc:
                raise ConnectorError(f"cannot open dead-letter file {self.path}: {exc}") from None
            try:
                directory.check_still_confined()
            except BaseException:
                os.close(fd)
                raise
            return fd


def _as_dict(letter: DeadLetter) -> dict[str, str]:
    original = letter.original
    if isinstance(original, bytes):
        original = original.decode("utf-8", errors="replace")
    return {
        "error": letter.error,
        "original": original,
        "source": letter.source,
        "position": letter.position,
        "operator": letter.operator,
    }


class CountingDeadLetters:
    """Counts letters and passes them on (or drops them when ``inner`` is None)."""

    def __init__(self, inner: DeadLetterSink | None = None) -> None:
        self.inner = inner
        self.count = 0

    def write(self, letters: list[DeadLetter]) -> None:
        self.count += len(letters)
        if self.inner is not None:
            self.inner.write(letters)
