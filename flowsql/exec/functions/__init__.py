"""Vectorized kernels for the canonical scalar functions of
:data:`flowsql.plan.expr.SCALAR_FUNCTIONS`, by family."""

from __future__ import annotations

from flowsql.exec.functions import arithmetic, jsonpath, logical, numeric, strings, temporal
from flowsql.exec.functions.base import Datum, Function

#: Canonical name -> implementation.
FUNCTIONS: dict[str, Function] = {
    f.name: f
    for module in (arithmetic, numeric, logical, strings, temporal, jsonpath)
    for f in module.FUNCTIONS
}

__all__ = ["FUNCTIONS", "Datum", "Function"]
