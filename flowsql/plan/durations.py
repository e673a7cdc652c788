"""The one duration grammar: ``1s``, ``500ms``, ``'2 seconds'``, ``1h``, a number of ms.

Used by window sizes in SQL text (``INTERVAL '1' SECOND`` goes through
:func:`duration_ms`) and by every duration-typed WITH key
(:mod:`flowsql.plan.options`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: Milliseconds per unit, by every spelling accepted (lower case).
UNIT_MS: dict[str, int] = {
    **dict.fromkeys(("ms", "msec", "msecs", "millis", "millisecond", "milliseconds"), 1),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1_000),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)?\s*$")


def is_unit(word: str) -> bool:
    """True when ``word`` names a duration unit (``ms``, ``SECOND``, ``days`` ...)."""
    return word.lower() in UNIT_MS


def duration_ms(amount: str | int | float | Decimal, unit: str) -> int:
    """``amount`` of ``unit`` in whole milliseconds.

    Raises:
        ValueError: the unit is unknown or the amount is not a number.
    """
    factor = UNIT_MS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown time unit '{unit}' (use ms, s, m, h, d or MILLISECOND..DAY)")
    try:
        value = Decimal(str(amount)) * factor
    except InvalidOperation:
        raise ValueError(f"'{amount}' is not a number") from None
    return int(value)


def parse_duration(text: str) -> int:
    """Parse ``'1s'``, ``'500ms'``, ``'2 seconds'``, ``'1h'`` or a bare number of ms into ms.

    Raises:
        ValueError: the text is not a duration.
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a duration (e.g. '500ms', '1s', '2 seconds', '1h')")
    return duration_ms(match.group(1), match.group(2) or "ms")
