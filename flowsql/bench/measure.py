"""Timing and peak memory of one benchmark run, without psutil.

Peak RSS of this process comes from ``VmHWM`` in ``/proc/self/status``, reset
before each run by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0);
where that is not possible, ``ru_maxrss`` (a high-water mark of the whole
process lifetime) is reported and :attr:`PeakMemory.exact` is False. Worker
processes (V2) are found through ``/proc/<pid>/task/*/children`` by a sampling
thread that keeps each descendant's own ``VmHWM``; their sum is added.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds between two looks at the worker processes.
SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Outcome:
    """What one timed run produced: elapsed seconds and output counts."""

    seconds: float
    rows: int
    groups: int | None = None  # see flowsql.bench.scenarios; None = unknown
    cpu_seconds: float | None = None  # CPU time of this process over the same span
    #: CPU seconds of each live descendant when the timed span began
    cpu_baseline: dict[int, float] | None = None


@dataclass
class Measurement:
    """K runs of one runner on one scenario."""

    records: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # this process + its workers
    rows: int = 0
    groups: int | None = None
    peak_rss_mb: float = 0.0
    rss_exact: bool = True
    error: str | None = None

    @property
    def rates(self) -> list[float]:
        return [self.records / s if s > 0 else 0.0 for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.seconds else 0.0

    @property
    def cpu_rate(self) -> float | None:
        """Records per CPU-second (median): the wall-clock rate with the machine's
        other load taken out; for V2 it counts the workers' CPU too."""
        if not self.cpu_seconds:
            return None
        cpu = statistics.median(self.cpu_seconds)
        return self.records / cpu if cpu > 0 else None

    @property
    def low(self) -> float:
        return min(self.rates) if self.seconds else 0.0

    @property
    def high(self) -> float:
        return max(self.rates) if self.seconds else 0.0


def measure(
    run: Callable[[], Outcome],
    records: int,
    repeat: int,
    *,
    on_run: Callable[[], None] | None = None,
) -> Measurement:
    """Call ``run`` ``repeat`` times in a row; see :func:`measure_once`."""
    m = Measurement(records)
    for _ in range(max(1, repeat)):
        measure_once(run, m)
        if on_run is not None:
            on_run()
    return m


def measure_once(run: Callable[[], Outcome], m: Measurement) -> None:
    """One run after a full GC: append its time and CPU time to ``m``, keep its
    counts and the largest peak RSS."""
    gc.collect()
    with PeakMemory() as mem:
        outcome = run()
    m.seconds.append(outcome.seconds)
    if outcome.cpu_seconds is not None:
        children = 0.0
        if outcome.cpu_baseline is not None:
            children = mem.children_cpu(outcome.cpu_baseline)
        m.cpu_seconds.append(outcome.cpu_seconds + children)
    m.rows, m.groups = outcome.rows, outcome.groups
    m.peak_rss_mb = max(m.peak_rss_mb, mem.peak_mb)
    m.rss_exact = m.rss_exact and mem.exact


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


class PeakMemory:
    """Peak RSS (MB) of this process plus its descendants during a ``with`` block."""

    def __init__(self) -> None:
        self.exact = _reset_peak()
        self.peak_mb = 0.0
        self._children: dict[int, int] = {}  # pid -> largest VmHWM seen (kB)
        self._cpu_last: dict[int, float] = {}  # pid -> CPU seconds when last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._look()
        own = _own_peak_kb() if self.exact else _maxrss_kb()
        self.peak_mb = (own + sum(self._children.values())) / 1024

    def children_cpu(self, baseline: dict[int, float]) -> float:
        """CPU seconds the descendants used since ``baseline`` (see
        :func:`children_cpu_now`); a process born later counts from zero. Sampled
        every :data:`SAMPLE_INTERVAL_S`, so the last moments of a process that
        exited are missed."""
        return sum(cpu - baseline.get(pid, 0.0) for pid, cpu in self._cpu_last.items())

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._look()

    def _look(self) -> None:
        for pid in descendants(os.getpid()):
            kb = _status_kb(Path(f"/proc/{pid}/status"), "VmHWM:")
            if kb:
                self._children[pid] = max(self._children.get(pid, 0), kb)
            cpu = _cpu_s(pid)
            if cpu:
                self._cpu_last[pid] = cpu


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children of all its threads, recursively);
    processes that exit meanwhile are skipped."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                kids = [
                    int(x) for x in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
                ]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def children_cpu_now() -> dict[int, float]:
    """CPU seconds so far of every live descendant of this process."""
    return {pid: _cpu_s(pid) for pid in descendants(os.getpid())}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _own_peak_kb() > 0


def _own_peak_kb() -> int:
    return _status_kb(Path("/proc/self/status"), "VmHWM:")


def _maxrss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _status_kb(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
