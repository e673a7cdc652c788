"""What the benchmark ran on: cores, CPU model, memory, load, library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy
import pyarrow


def describe() -> dict[str, Any]:
    """Facts about this machine and interpreter, for the JSON report and the docs."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_gb": round(ram_gb(), 1),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "duckdb": _version("duckdb"),
        "platform": platform.platform(),
        "executable": sys.executable,
        "load_avg": load_avg(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def load_avg() -> list[float]:
    """1, 5 and 15 minute load averages (empty where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _version(module: str) -> str:
    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"
