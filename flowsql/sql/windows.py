"""Event-time windows: the WINDOW clause or a Flink window table function ->
:class:`~flowsql.plan.nodes.WindowSpec`; plus the WITH properties that steer them."""

from __future__ import annotations

from sqlglot import exp

from flowsql.errors import PlanError
from flowsql.plan import options
from flowsql.plan.nodes import LateStrategy, WindowSpec
from flowsql.sql.dialect import StreamWindow
from flowsql.sql.exprs import pos_of

#: Names that mean the window bounds in a windowed query (Flink, ksqlDB, flowsql).
WINDOW_COLUMN_ALIASES: dict[str, str] = {
    "window_start": "_window_start",
    "window_end": "_window_end",
    "windowstart": "_window_start",
    "windowend": "_window_end",
    "_window_start": "_window_start",
    "_window_end": "_window_end",
    "window_time": "_timestamp",
}


def window_spec(window: StreamWindow, sql: str) -> WindowSpec:
    """The plan's window for a parsed window clause.

    Raises:
        PlanError: sizes that make no window (zero, advance larger than size).
    """
    time_column = window.args.get("time_column")
    try:
        return WindowSpec(
            kind=window.args["kind"],
            size_ms=_ms(window, "size"),
            advance_ms=_ms(window, "advance"),
            gap_ms=_ms(window, "gap"),
            time_column=time_column.name if time_column is not None else None,
        )
    except ValueError as err:
        pos = pos_of(sql, window)
        raise PlanError(str(err), line=pos.line, column=pos.column) from None


def grace_ms(window: StreamWindow | None) -> int | None:
    """ksqlDB's ``GRACE PERIOD`` in ms, when given."""
    if window is None or window.args.get("grace") is None:
        return None
    return _ms(window, "grace")


def _ms(window: StreamWindow, key: str) -> int:
    value = window.args.get(key)
    return int(value.this) if isinstance(value, exp.Literal) else 0


def allowed_lateness_ms(properties: dict[str, str], default: int = 0) -> int:
    """WITH 'watermark.allowed_lateness' in ms (``default`` when not set).

    Raises:
        ConfigError: the value is not a duration.
    """
    if options.find(properties, options.ALLOWED_LATENESS) is None:
        return default
    lateness: int = options.get(properties, options.ALLOWED_LATENESS)
    return lateness


def late_strategy(properties: dict[str, str]) -> LateStrategy:
    """WITH 'late.data.strategy': drop (default) or dlq.

    Raises:
        ConfigError: any other value.
    """
    strategy: LateStrategy = options.get(properties, options.LATE_DATA_STRATEGY)
    return strategy
