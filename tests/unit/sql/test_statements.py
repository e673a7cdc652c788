"""Several statements per file, annotations, statement text and lines."""

from __future__ import annotations

from flowsql.plan.nodes import Project
from flowsql.sql import parse

FILE = """\
-- @job_mode: v2
-- @num_partitions: 4
CREATE STREAM big_trades AS
SELECT symbol, price FROM trades WHERE price > 100
WITH ('trades.type' = 'file_source', 'trades.path' = 'in.jsonl');

-- an ordinary comment
-- @name : totals job
CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol;

SELECT 'a;b' AS semi FROM t -- trailing ; comment
"""


def test_statements_split_on_semicolons_outside_strings_and_comments() -> None:
    stmts = parse(FILE)
    assert [(s.kind, s.name) for s in stmts] == [
        ("stream", "big_trades"),
        ("table", "totals"),
        ("select", "query"),
    ]
    last = stmts[2].plan
    assert isinstance(last, Project) and last.exprs[0][0] == "semi"


def test_annotations_attach_to_the_following_statement() -> None:
    stmts = parse(FILE)
    assert stmts[0].annotations == {"job_mode": "v2", "num_partitions": "4"}
    assert stmts[1].annotations == {"name": "totals job"}
    assert stmts[2].annotations == {}


def test_statement_text_and_first_line() -> None:
    stmts = parse(FILE)
    assert [s.line for s in stmts] == [3, 9, 11]
    assert stmts[0].sql.startswith("CREATE STREAM big_trades AS\nSELECT symbol")
    assert stmts[0].sql.endswith("'in.jsonl')")
    assert stmts[0].properties == {"trades.type": "file_source", "trades.path": "in.jsonl"}


def test_empty_statements_are_skipped() -> None:
    assert len(parse(";; SELECT a FROM t ;;")) == 1
    assert parse("-- only a comment\n") == []
