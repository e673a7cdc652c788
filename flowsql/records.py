"""Row views used at the edges: public APIs, the dead-letter sink and tests.

Inside the engine data moves as ``pyarrow.RecordBatch``; convert at the edges only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

#: System columns. Selectable, never part of ``SELECT *``.
TIMESTAMP = "_timestamp"
KEY = "_key"
PARTITION = "_partition"
OFFSET = "_offset"
WINDOW_START = "_window_start"
WINDOW_END = "_window_end"
SYSTEM_COLUMNS: frozenset[str] = frozenset(
    {TIMESTAMP, KEY, PARTITION, OFFSET, WINDOW_START, WINDOW_END}
)

#: Hidden columns a V2 coordinator adds so that merged partition outputs come
#: out in V1's order (``flowsql.runtime.ordering``); never part of a result.
ARRIVAL = "__arrival"
ORDER_PREFIX = "__order_"


def is_order_column(name: str) -> bool:
    """A hidden V2 ordering column (see :data:`ARRIVAL`)."""
    return name == ARRIVAL or name.startswith(ORDER_PREFIX)


@dataclass(frozen=True)
class StreamRecord:
    """One record: its fields, event time (epoch ms), key and source position."""

    fields: Mapping[str, Any]
    timestamp: int | None = None
    key: Any = None
    partition: int | None = None
    offset: int | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be decoded, typed or placed, with the reason.

    ``original`` is the record's original text/bytes when known, else a JSON
    rendering of its fields. ``source`` names the input and ``position`` the
    place in it (file line, Kafka partition/offset).
    """

    error: str
    original: str | bytes
    source: str = ""
    position: str = ""
    operator: str = ""


class DeadLetterSink(Protocol):
    """Where dead letters go (a JSONL file, a Kafka topic, a list in tests)."""

    def write(self, letters: list[DeadLetter]) -> None: ...


class ClosingDeadLetterSink(DeadLetterSink, Protocol):
    """A dead-letter sink that holds something to release when its job ends
    (a file, the job server's recent-letters buffer)."""

    def close(self) -> None: ...


class ListDeadLetters:
    """Keeps dead letters in memory (tests, the Python API)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def write(self, letters: list[DeadLetter]) -> None:
        self.letters.extend(letters)
