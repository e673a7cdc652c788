"""Durations in SQL text: the grammar lives in :mod:`flowsql.plan.durations`, shared
with the WITH keys of :mod:`flowsql.plan.options`."""

from __future__ import annotations

from flowsql.plan.durations import UNIT_MS, duration_ms, is_unit, parse_duration

__all__ = ["UNIT_MS", "duration_ms", "is_unit", "parse_duration"]
