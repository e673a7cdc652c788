"""bind(): column checks with did-you-mean, SELECT * expansion, Scan.columns."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.errors import PlanError
from flowsql.plan.expr import Col
from flowsql.plan.nodes import Project, Scan, walk
from flowsql.sql import bind, parse_one

TRADES = pa.schema([("symbol", pa.string()), ("price", pa.float64()), ("quantity", pa.int64())])
SCHEMAS = {"trades": TRADES}


def _bind(sql: str) -> Project:
    plan = bind(parse_one(sql), SCHEMAS).plan
    return plan  # type: ignore[return-value]


def test_select_star_expands_to_non_system_columns() -> None:
    plan = _bind("SELECT *, price * 2 AS double FROM trades WHERE price > 1")
    assert isinstance(plan, Project) and not plan.star
    assert [name for name, _ in plan.exprs] == ["symbol", "price", "quantity", "double"]
    assert plan.exprs[0] == ("symbol", Col("symbol"))
    scan = walk(plan)[-1]
    assert scan == Scan("trades", ("symbol", "price", "quantity"))


def test_system_columns_are_selectable() -> None:
    plan = _bind("SELECT symbol, _timestamp, _key, _partition, _offset FROM trades")
    assert [name for name, _ in plan.exprs][1:] == ["_timestamp", "_key", "_partition", "_offset"]


def test_window_columns_bind_in_windowed_queries() -> None:
    plan = _bind(
        "SELECT symbol, _window_start, _window_end, COUNT(*) AS n FROM trades "
        "GROUP BY symbol WINDOW TUMBLING(1s)"
    )
    assert [name for name, _ in plan.exprs] == ["symbol", "_window_start", "_window_end", "n"]


def test_unknown_column_names_it_with_position_and_hint() -> None:
    with pytest.raises(PlanError, match="unknown column 'pricee'") as err:
        _bind("SELECT symbol\nFROM trades\nWHERE  pricee > 1")
    assert (err.value.line, err.value.column) == (3, 8)
    assert err.value.hint == "did you mean 'price'?"


def test_unknown_column_in_aggregate_argument_and_key() -> None:
    with pytest.raises(PlanError, match="'qty'") as err:
        _bind("SELECT symbol, SUM(qty) FROM trades GROUP BY symbol")
    assert err.value.column == 20
    with pytest.raises(PlanError, match="'symbl'") as key_err:
        _bind("SELECT symbl, COUNT(*) FROM trades GROUP BY symbl")
    assert "symbol" in key_err.value.hint


def test_unknown_window_time_column() -> None:
    with pytest.raises(PlanError, match="'tss'"):
        _bind("SELECT COUNT(*) FROM trades WINDOW TUMBLING(tss, 1s)")


def test_unknown_column_without_close_match_lists_columns() -> None:
    with pytest.raises(PlanError) as err:
        _bind("SELECT zzz FROM trades")
    assert "symbol" in err.value.hint


def test_unknown_stream() -> None:
    with pytest.raises(PlanError, match="unknown stream 'trade'") as err:
        _bind("SELECT symbol FROM trade")
    assert "trades" in err.value.hint


def test_rows_window_columns_are_visible_above() -> None:
    plan = _bind(
        "SELECT symbol, price - LAG(price) OVER (PARTITION BY symbol ORDER BY _timestamp) AS d "
        "FROM trades"
    )
    assert [name for name, _ in plan.exprs] == ["symbol", "d"]
    with pytest.raises(PlanError, match="'prce'"):
        _bind("SELECT LAG(prce) OVER (PARTITION BY symbol) AS d FROM trades")


def test_order_by_binds_against_output_columns() -> None:
    bind(parse_one("SELECT symbol AS s FROM trades ORDER BY s"), SCHEMAS)
    bind(parse_one("SELECT * FROM trades ORDER BY price"), SCHEMAS)
    with pytest.raises(PlanError, match="'prize'"):
        bind(parse_one("SELECT * FROM trades ORDER BY prize"), SCHEMAS)
