"""Serve a job server's app with a real uvicorn on a free loopback port, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

#: What the CLI client sends with every request (docs/security.md).
PROGRAM_HEADERS = {"X-FlowSQL-Request": "1"}


@contextmanager
def live(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port); yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()


@contextmanager
def live_client(app: Any, *, timeout: float = 60, **kwargs: Any) -> Iterator[httpx.Client]:
    """A client of ``app`` served by :func:`live`; ``kwargs`` go to ``httpx.Client``."""
    with live(app) as url, httpx.Client(base_url=url, timeout=timeout, **kwargs) as client:
        yield client
