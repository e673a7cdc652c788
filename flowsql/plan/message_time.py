"""Which time a statement's output messages carry: each row's event time.

A sink that stamps its messages (Kafka: the record timestamp) writes the
event time of each output row, so a job reading the topic windows over
``_timestamp`` exactly as this job did:

- a windowed aggregate row: its window end − 1 ms (the last instant inside
  the window, Flink's ``window_time``);
- a non-windowed aggregate row: the largest event time of its group;
- any other row: its own event time (``_timestamp``: the event-time column or
  the source's record time).

The engine already computes that value as the row's ``_timestamp``; the
``SELECT`` list drops it unless selected. :func:`with_message_time` is the
plan rewrite that keeps it, under :data:`MESSAGE_TIME`, for the sink to read
and strip. ``SELECT DISTINCT`` rows carry no event time (a row stands for
every equal row), so they keep the producer's wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from flowsql.plan import nodes as n
from flowsql.plan.expr import Col
from flowsql.records import TIMESTAMP

#: Output column with each row's event time (epoch ms) for the sink; never
#: written into a message value.
MESSAGE_TIME = "__message_time"


@dataclass(frozen=True)
class MessageTime:
    """Where the timestamps of a statement's output messages come from.

    Attributes:
        carried: each row's event time rides along in :data:`MESSAGE_TIME`
            (else the producer's wall clock).
        meaning: the rule, in words (for ``explain`` and the docs).
    """

    carried: bool
    meaning: str


def message_time(statement: n.Statement) -> MessageTime:
    """The message-time rule of ``statement``'s output, read from its plan."""
    nodes = n.walk(statement.plan)
    if any(isinstance(x, n.Distinct) for x in nodes):
        return MessageTime(False, "the wall clock (SELECT DISTINCT rows carry no event time)")
    agg = next((x for x in nodes if isinstance(x, n.Aggregate)), None)
    if agg is not None and agg.window is not None:
        return MessageTime(True, "window end - 1 ms of each result row")
    if agg is not None:
        return MessageTime(True, "the largest event time of each row's group")
    return MessageTime(True, f"each row's event time ({TIMESTAMP})")


def with_message_time(statement: n.Statement) -> n.Statement:
    """``statement`` whose output also holds :data:`MESSAGE_TIME`, each row's
    event time; unchanged when its rows carry none, or already rewritten.

    Apply it to the statement a processor runs when that processor's rows go
    to a sink that reads :data:`MESSAGE_TIME` (``KafkaSink``); the sink drops
    the column from the message value.
    """
    if not message_time(statement).carried:
        return statement
    plan = _carry(statement.plan)
    return statement if plan is statement.plan else replace(statement, plan=plan)


def _carry(node: n.Node) -> n.Node:
    """The plan with :data:`MESSAGE_TIME` added to its SELECT list (the
    ``Project`` under any ``Sort``/``Limit``, which pass columns through)."""
    if isinstance(node, n.Project):
        if any(name == MESSAGE_TIME for name, _ in node.exprs):
            return node
        return replace(node, exprs=(*node.exprs, (MESSAGE_TIME, Col(TIMESTAMP))))
    if isinstance(node, n.Sort | n.Limit):
        inner = _carry(node.input)
        return node if inner is node.input else replace(node, input=inner)
    return node
