"""Run a Kafka job that dies like ``kill -9`` at a chosen checkpoint.

``python crash_job.py FILE.sql N`` kills the process right after checkpoint N;
``python crash_job.py FILE.sql N:before-commit`` kills it during checkpoint N,
after its state is staged and before its offsets (and transaction) are
committed. The crash is injected here, by wrapping the commit protocol's
steps; the job itself is the unchanged ``python -m flowsql.runtime.kafka_job``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flowsql.runtime import kafka_job
from flowsql.runtime.commit import Checkpointer


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_at(number: int, before_commit: bool) -> None:
    """Wrap :class:`Checkpointer` so the process dies at checkpoint ``number``."""
    taken = 0

    if before_commit:
        step4: Callable[..., Any] = Checkpointer._commit_offsets

        def commit_offsets(self: Checkpointer, tasks: Sequence[Any]) -> None:
            nonlocal taken
            taken += 1  # Step 4 runs once per checkpoint, after Step 3 staged the state
            if taken == number:
                _kill()
            step4(self, tasks)

        Checkpointer._commit_offsets = commit_offsets  # type: ignore[method-assign]
        return

    commit: Callable[..., bool] = Checkpointer.commit

    def commit_then_die(self: Checkpointer, tasks: Sequence[Any]) -> bool:
        nonlocal taken
        took = commit(self, tasks)
        taken += took
        if took and taken == number:
            _kill()
        return took

    Checkpointer.commit = commit_then_die  # type: ignore[method-assign]


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: crash_job.py FILE.sql N[:before-commit]", file=sys.stderr)
        return 2
    number, _, at = argv[1].partition(":")
    if at not in ("", "before-commit"):
        print(f"unknown crash point {at!r}; use N or N:before-commit", file=sys.stderr)
        return 2
    crash_at(int(number), before_commit=bool(at))
    return kafka_job.main([argv[0]])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
