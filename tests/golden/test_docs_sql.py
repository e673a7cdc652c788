"""Every ```sql example in docs/sql.md parses and plans, so the reference
stays true to the dialect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowsql.sql import parse

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_reference_has_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_example_parses_and_plans(sql: str) -> None:
    statements = parse(sql)
    assert statements, sql
