"""Dead-letter sinks: where records that cannot be decoded, typed or placed go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import msgspec

from flowsql.errors import ConnectorError
from flowsql.records import DeadLetter, DeadLetterSink

_ENCODER = msgspec.json.Encoder()


class JsonlDeadLetters:
    """Appends dead letters to a JSON-lines file, one object per record::

        {"error": ..., "original": ..., "source": ..., "position": ..., "operator": ...}

    ``original`` is the record's original text (bytes are decoded as UTF-8 with
    replacement). The file is created on the first letter, or empty on
    ``close()`` if none came; each ``write`` is flushed so letters survive a crash.

    Args:
        path: the file (truncated when first opened).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
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
            mode = "ab" if self._file is not None else "wb"
            try:
                self._file = self.path.open(mode)
            except OSError as exc:
                raise ConnectorError(f"cannot open dead-letter file {self.path}: {exc}") from None
        return self._file


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
