"""flowsql: streaming SQL for Python, vectorized on Apache Arrow."""

from __future__ import annotations

from flowsql.engine import Engine, EngineMetrics, query
from flowsql.errors import (
    ConfigError,
    ConnectorError,
    ExecutionError,
    FlowSQLError,
    PlanError,
    SqlSyntaxError,
    UnsupportedError,
)
from flowsql.records import DeadLetter, StreamRecord

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConnectorError",
    "DeadLetter",
    "Engine",
    "EngineMetrics",
    "ExecutionError",
    "FlowSQLError",
    "PlanError",
    "SqlSyntaxError",
    "StreamRecord",
    "UnsupportedError",
    "query",
]
