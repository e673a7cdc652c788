"""Placeholder; replaced below."""

from __future__ import annotations

from flowsql.plan.nodes import Statement


def bind(statement: Statement, schemas: object) -> Statement:
    return statement
