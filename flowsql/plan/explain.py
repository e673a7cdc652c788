"""``explain``: a planned statement in words.

Shows the plan tree (one node per line, expressions rendered back to SQL),
the event-time column and where it comes from, the watermark (allowed
lateness and where it is set) and what happens to late records, the window,
the emit mode, the timestamps of Kafka output messages, the routing key and
whether the query can be hash-partitioned, and why. The event-time column is
the one :func:`flowsql.plan.routing.event_time_column` picks, the function the
engine calls. Secrets are masked by the rule of :mod:`flowsql.redaction` (the
same as the job server's status).
"""

from __future__ import annotations

from decimal import Decimal

from flowsql.plan import nodes as n
from flowsql.plan import options
from flowsql.plan.expr import AggCall, Call, Case, Cast, Col, Expr, Lit, WinCall
from flowsql.plan.message_time import message_time
from flowsql.plan.partial import reads_column, split_plan
from flowsql.plan.routing import FALLBACK_EVENT_TIME, event_time_column, routing
from flowsql.records import OFFSET, TIMESTAMP
from flowsql.redaction import redact_properties, redact_text, secret_values

_INFIX: dict[str, str] = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "mod": "%",
    "eq": "=",
    "ne": "<>",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "and": "AND",
    "or": "OR",
    "concat_op": "||",
    "like": "LIKE",
    "not_like": "NOT LIKE",
}
_LATE_MEANING = {
    "drop": "dropped and counted",
    "dlq": "counted and dead-lettered",
}
_EMIT_MEANING = {
    "final": "one row per group (and window) when it closes / at end of input",
    "changes": "after each batch, the current row of every group that changed",
}


def explain(statement: n.Statement, event_time: str | None = None) -> str:
    """A human-readable description of how ``statement`` runs.

    Args:
        statement: the planned statement.
        event_time: the event-time column given to the run (``flowsql run
            --event-time``), which a window's own column overrides.
    """
    lines = [f"{statement.kind} {statement.name} (line {statement.line})", "plan:"]
    lines += [
        f"  {'  ' * depth}{describe(node)}" for depth, node in enumerate(n.walk(statement.plan))
    ]
    lines += _time_lines(statement, event_time)
    route = routing(statement)
    lines.append(f"routing key: {', '.join(route.key_columns) or '(none)'}")
    lines.append(
        f"partitioning: {_partitioning(route.strategy, route.key_columns)}: {route.reason}"
    )
    lines.append(f"from a JSON lines file (V2): workers read chunks; {_split_reason(statement)}")
    if statement.properties:
        lines.append("properties: " + _listing(redact_properties(statement.properties)))
    if statement.annotations:
        lines.append("annotations: " + _listing(redact_properties(statement.annotations)))
    return redact_text("\n".join(lines), secret_values(statement.properties))


def _listing(properties: dict[str, str]) -> str:
    return ", ".join(f"{key} = {value}" for key, value in properties.items())


def _split_reason(statement: n.Statement) -> str:
    if reads_column(statement, OFFSET):
        return "not used: the query reads _offset (rows are routed instead)"
    return split_plan(statement).reason


def _time_lines(statement: n.Statement, override: str | None) -> list[str]:
    lines = [f"event time: {event_time_source(statement, override)}"]
    agg = next((x for x in n.walk(statement.plan) if isinstance(x, n.Aggregate)), None)
    if agg is not None:
        lines.append(f"window: {render_window(agg.window) if agg.window else 'none'}")
        lines.append(f"emit: {agg.emit} ({_EMIT_MEANING[agg.emit]})")
    lines += _watermark_lines(statement, agg)
    sink = _kafka_sink(statement)
    if sink is not None:
        lines.append(f"message timestamps (kafka_sink {sink}): {message_time(statement).meaning}")
    return lines


def event_time_source(statement: n.Statement, override: str | None = None) -> str:
    """The event-time column of ``statement`` and where it comes from, in words.

    The column is :func:`event_time_column`'s (the engine's choice); without
    one the engine picks per input batch, and this says how.
    """
    column = event_time_column(statement, override)
    if column is not None:
        return f"{column} ({_origin(statement, column, override)})"
    kinds = {statement.properties.get(f"{source}.type") for source in statement.sources}
    if kinds == {"kafka_source"}:
        return f"{TIMESTAMP} (the Kafka message timestamp)"
    if kinds == {"generator"}:
        return f"{TIMESTAMP} (the generator's event time)"
    fallback = ", ".join(FALLBACK_EVENT_TIME[:-1]) + f" or {FALLBACK_EVENT_TIME[-1]}"
    return (
        f"{TIMESTAMP} when the input has it (Kafka: the message timestamp), else the"
        f" input's first column named {fallback}, else the time each record is read"
    )


def _origin(statement: n.Statement, column: str, override: str | None) -> str:
    window = _window(statement)
    if window is not None and window.time_column == column:
        return "from the window"
    if override == column:
        return "from --event-time"
    for source in statement.sources:
        found = options.find(statement.properties, options.STREAM_EVENT_TIME_FIELD, source)
        if found is not None:
            return f"from WITH '{found[0]}'"
    return f"from WITH '{options.EVENT_TIME_FIELD.name}'"


def _watermark_lines(statement: n.Statement, agg: n.Aggregate | None) -> list[str]:
    if agg is None or agg.window is None:
        return ["watermark: not used (no event-time window: nothing closes, no record is late)"]
    lateness = duration(agg.allowed_lateness_ms)
    reached = "the max seen; over input partitions (Kafka), the minimum of the active ones"
    idle = [f"{key} = {value}" for key, value in statement.properties.items() if _is_idle(key)]
    if idle:
        reached += f"; a partition silent for the idle timeout stops counting ({', '.join(idle)})"
    return [
        f"watermark: event time reached - {lateness} ({_lateness_origin(statement, agg)});"
        " a window closes when the watermark reaches its end",
        f"  event time reached: {reached}",
        f"late data: allowed lateness {lateness}, then {agg.late_strategy}"
        f" ({_LATE_MEANING[agg.late_strategy]}, '{options.LATE_DATA_STRATEGY.name}')",
    ]


def _is_idle(key: str) -> bool:
    """An idle-timeout WITH key (not a Kafka client's ``properties.*.idle.*``)."""
    parts = key.split(".")
    return "properties" not in parts and any(p.startswith("idle") for p in parts)


def _lateness_origin(statement: n.Statement, agg: n.Aggregate) -> str:
    found = options.find(statement.properties, options.ALLOWED_LATENESS)
    if found is not None:
        return f"allowed lateness, WITH '{found[0]}'"
    if agg.allowed_lateness_ms:
        return "allowed lateness, the window's GRACE PERIOD"
    return f"allowed lateness, default; WITH '{options.ALLOWED_LATENESS.name}' sets it"


def _kafka_sink(statement: n.Statement) -> str | None:
    """The output stream written to Kafka (``'<stream>.type' = 'kafka_sink'``), if any."""
    for key, value in statement.properties.items():
        if key.endswith(".type") and value.strip().lower() == "kafka_sink":
            return key[: -len(".type")]
    return None


def _window(statement: n.Statement) -> n.WindowSpec | None:
    for node in n.walk(statement.plan):
        if isinstance(node, n.Aggregate):
            return node.window
    return None


def _partitioning(strategy: str, keys: tuple[str, ...]) -> str:
    if strategy == "hash":
        return (
            f"hash-partitioned by ({', '.join(keys)})"
            if keys
            else "hash-partitioned (any row, any partition)"
        )
    if strategy == "two_phase":
        return "partitioned in two phases (partial aggregates merged)"
    return "not partitioned (single partition)"


# -- nodes ---------------------------------------------------------------------------


def describe(node: n.Node) -> str:
    """One line for one plan node."""
    if isinstance(node, n.Scan):
        cols = f" columns=({', '.join(node.columns)})" if node.columns else ""
        return f"Scan {node.source}{cols}"
    if isinstance(node, n.Filter):
        return f"Filter {render(node.predicate)}"
    if isinstance(node, n.Project):
        items = (["*"] if node.star else []) + [_named(name, e) for name, e in node.exprs]
        return f"Project {', '.join(items)}"
    if isinstance(node, n.Aggregate):
        return _describe_aggregate(node)
    if isinstance(node, n.RowsWindow):
        return _describe_rows(node)
    if isinstance(node, n.Sort):
        keys = [
            f"{render(e)} {'ASC' if asc else 'DESC'}{' NULLS FIRST' if nf else ''}"
            for e, asc, nf in node.keys
        ]
        return f"Sort {', '.join(keys)}"
    if isinstance(node, n.Limit):
        return f"Limit {node.n}"
    return type(node).__name__


def _describe_aggregate(node: n.Aggregate) -> str:
    keys = ", ".join(_named(name, e) for name, e in node.keys) or "(global)"
    aggs = ", ".join(f"{name} := {render_agg(call)}" for name, call in node.aggs)
    window = f" window={render_window(node.window)}" if node.window else ""
    return f"Aggregate keys=[{keys}] aggs=[{aggs}]{window} emit={node.emit}"


def _describe_rows(node: n.RowsWindow) -> str:
    parts = []
    if node.partition_by:
        parts.append("PARTITION BY " + ", ".join(render(e) for e in node.partition_by))
    if node.order_by:
        parts.append(
            "ORDER BY "
            + ", ".join(f"{render(e)}{'' if asc else ' DESC'}" for e, asc in node.order_by)
        )
    funcs = ", ".join(f"{name} := {render_win(call)}" for name, call in node.funcs)
    return f"RowsWindow {' '.join(parts) or '(arrival order)'}: {funcs}"


def _named(name: str, expr: Expr) -> str:
    text = render(expr)
    return text if text == _ident(name) else f"{text} AS {_ident(name)}"


# -- expressions -----------------------------------------------------------------------


def render(expr: Expr | None) -> str:
    """SQL-ish text of a plan expression."""
    if expr is None:
        return "NULL"
    if isinstance(expr, Col):
        return _ident(expr.name)
    if isinstance(expr, Lit):
        return _literal(expr.value)
    if isinstance(expr, Call):
        return _call(expr)
    if isinstance(expr, Case):
        whens = " ".join(f"WHEN {render(c)} THEN {render(v)}" for c, v in expr.whens)
        default = f" ELSE {render(expr.default)}" if expr.default is not None else ""
        return f"CASE {whens}{default} END"
    if isinstance(expr, Cast):
        return f"CAST({render(expr.expr)} AS {expr.to})"
    return repr(expr)


def _call(call: Call) -> str:
    args = [render(a) for a in call.args]
    fn = call.fn
    if fn in _INFIX and len(args) == 2:
        return f"({args[0]} {_INFIX[fn]} {args[1]})"
    if fn == "neg":
        return f"-{args[0]}"
    if fn == "not":
        return f"NOT {args[0]}"
    if fn in ("is_null", "is_not_null"):
        return f"{args[0]} IS {'NOT ' if fn == 'is_not_null' else ''}NULL"
    if fn in ("in", "not_in"):
        return f"{args[0]} {'NOT ' if fn == 'not_in' else ''}IN ({', '.join(args[1:])})"
    if fn == "between":
        return f"{args[0]} BETWEEN {args[1]} AND {args[2]}"
    if fn == "extract":
        return f"EXTRACT({_unit(call.args[0])} FROM {args[1]})"
    return f"{fn.upper()}({', '.join(args)})"


def _unit(expr: Expr) -> str:
    return str(expr.value) if isinstance(expr, Lit) else render(expr)


def render_agg(call: AggCall) -> str:
    """``COUNT(*)``, ``COUNT(DISTINCT x)``, ``SUM(x)`` ..."""
    if call.fn == "count_star":
        return "COUNT(*)"
    distinct = "DISTINCT " if call.distinct else ""
    return f"{call.fn.upper()}({distinct}{', '.join(render(a) for a in call.args)})"


def render_win(call: WinCall) -> str:
    """A window function with its frame."""
    args = [render(a) for a in call.args]
    if call.fn in ("lag", "lead"):
        args.append(str(call.offset))
        if call.default is not None:
            args.append(render(call.default))
        return f"{call.fn.upper()}({', '.join(args)})"
    inner = "*" if call.fn == "count_star" else ", ".join(args)
    name = "COUNT" if call.fn == "count_star" else call.fn.upper()
    frame = "UNBOUNDED" if call.preceding is None else str(call.preceding)
    return f"{name}({inner}) ROWS {frame} PRECEDING"


def render_window(window: n.WindowSpec) -> str:
    """``TUMBLING(ts, 1s)``-style text of a window."""
    sizes = {
        "tumbling": [window.size_ms],
        "sliding": [window.size_ms, window.advance_ms],
        "session": [window.gap_ms],
    }[window.kind]
    args = ([window.time_column] if window.time_column else []) + [duration(ms) for ms in sizes]
    return f"{window.kind.upper()}({', '.join(args)})"


def duration(ms: int) -> str:
    """``1500`` -> ``1500ms``, ``60000`` -> ``1m``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)


def _ident(name: str) -> str:
    return name if name.replace("_", "a").isalnum() and not name[:1].isdigit() else f'"{name}"'
