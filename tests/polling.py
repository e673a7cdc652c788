"""Waiting in tests for something another thread or process makes true."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool], what: str, limit_s: float = 30.0, *, every_s: float = 0.005
) -> float:
    """Poll ``check()`` until it is true; return the seconds it took.

    Raises:
        AssertionError: ``check()`` stayed false for ``limit_s`` seconds.
    """
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"not within {limit_s}s: {what}")
        time.sleep(every_s)
    return time.monotonic() - started
