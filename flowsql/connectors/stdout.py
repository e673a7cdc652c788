"""Result sinks for the terminal: a rich table, or JSON lines on stdout."""

from __future__ import annotations

import sys
from typing import IO, Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from flowsql.connectors.jsonl import encode_lines, jsonable

#: Rows a table shows at most; the rest are counted.
MAX_ROWS = 200


class TableSink:
    """Collects result rows and prints them as one rich table on ``close()``.

    Args:
        console: where to print (default: stdout).
        max_rows: rows shown; further rows are counted in the caption.
        title: the table's title.
        hint: added to the caption when rows were left out.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        max_rows: int = MAX_ROWS,
        title: str = "",
        hint: str = "--output FILE keeps all",
    ) -> None:
        self.console = console or Console()
        self.max_rows = max_rows
        self.title = title
        self.hint = hint
        self.rows_written = 0
        self._shown: list[pa.RecordBatch] = []
        self._held = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows_written += batch.num_rows
        room = self.max_rows - self._held
        if room > 0 and batch.num_rows:
            piece = batch.slice(0, room)
            self._shown.append(piece)
            self._held += piece.num_rows

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.console.print(self.render())

    def abort(self) -> None:
        """Show nothing: the job failed, its error is what the user needs."""
        self._shown.clear()

    def render(self) -> Table:
        """The rich table of the rows shown so far."""
        names = self._shown[0].schema.names if self._shown else []
        table = Table(title=self.title or None, caption=self._caption())
        for name in names:
            table.add_column(name, justify="right" if self._numeric(name) else "left")
        for batch in self._shown:
            columns = [c.to_pylist() for c in jsonable(batch).columns]
            for values in zip(*columns, strict=True):
                table.add_row(*(_cell(v) for v in values))
        return table

    def _numeric(self, name: str) -> bool:
        t = self._shown[0].schema.field(name).type
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)

    def _caption(self) -> str:
        shown = min(self.rows_written, self.max_rows)
        if shown < self.rows_written:
            hint = f" ({self.hint})" if self.hint else ""
            return f"first {shown} of {self.rows_written:,} rows{hint}"
        return f"{self.rows_written} row{'s' if self.rows_written != 1 else ''}"


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)


class StdoutJsonlSink:
    """Writes JSON lines to stdout as results arrive (``--output -``)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.rows_written = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.stream.write(encode_lines(batch))
        self.rows_written += batch.num_rows

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()

    def abort(self) -> None:
        """What was printed stays printed; push out what is buffered."""
        self.stream.flush()
