from __future__ import annotations

import decimal
import json
import random

import pyarrow as pa
import pytest

from flowsql.connectors.jsonl import JsonlDecoder, encode_lines, infer_schema

GOOD = b'{"symbol":"A","price":1.5,"quantity":3,"timestamp":1000}\n'


def test_infers_types_in_first_seen_order() -> None:
    schema = infer_schema(
        b'{"s":"x","i":1,"f":1.5,"b":true,"n":null}\n{"s":"y","i":2,"f":2,"b":false,"o":{"k":1}}\n'
    )
    assert schema == pa.schema(
        [
            ("s", pa.string()),
            ("i", pa.int64()),
            ("f", pa.float64()),
            ("b", pa.bool_()),
            ("n", pa.string()),
            ("o", pa.string()),
        ]
    )


def test_majority_decides_a_column_type() -> None:
    lines = b'{"price":1}\n{"price":"oops"}\n{"price":2.5}\n'
    assert infer_schema(lines).field("price").type == pa.float64()
    assert infer_schema(b'{"c":"a"}\n{"c":"b"}\n{"c":3}\n').field("c").type == pa.string()


def test_clean_chunk_decodes_with_line_offsets() -> None:
    decoded = JsonlDecoder(source="trades", path="t.jsonl").decode(GOOD * 3, first_line=10)
    assert decoded.letters == []
    assert decoded.batch is not None
    assert decoded.batch.column("_offset").to_pylist() == [10, 11, 12]
    assert decoded.batch.column("price").to_pylist() == [1.5, 1.5, 1.5]


def test_bad_lines_become_dead_letters_and_good_lines_proceed() -> None:
    chunk = (
        GOOD
        + b'{"symbol":"B","price":"abc","quantity":3,"timestamp":1001}\n'
        + b"not json at all\n"
        + b"\n"
        + b'{"symbol":"C","price":2,"quantity":4,"timestamp":1002}\n'
        + b"[1, 2]\n"
        + b'{"symbol":"D","price":3,"quantity":true,"timestamp":1003}\n'
    )
    decoder = JsonlDecoder(source="trades", path="data/t.jsonl")
    decoded = decoder.decode(chunk, first_line=1)
    assert decoded.batch is not None
    assert decoded.batch.column("symbol").to_pylist() == ["A", "C"]
    assert decoded.batch.column("_offset").to_pylist() == [1, 5]
    positions = [letter.position for letter in decoded.letters]
    assert positions == ["data/t.jsonl:2", "data/t.jsonl:3", "data/t.jsonl:6", "data/t.jsonl:7"]
    by_line = {letter.position: letter for letter in decoded.letters}
    assert (
        by_line["data/t.jsonl:2"].original
        == '{"symbol":"B","price":"abc","quantity":3,"timestamp":1001}'
    )
    assert "price" in by_line["data/t.jsonl:2"].error
    assert "invalid JSON" in by_line["data/t.jsonl:3"].error
    assert by_line["data/t.jsonl:3"].original == "not json at all"
    assert all(letter.source == "trades" for letter in decoded.letters)


def test_later_chunk_with_wrong_type_against_inferred_schema() -> None:
    decoder = JsonlDecoder(path="f")
    decoder.decode(GOOD, 1)
    later = decoder.decode(b'{"symbol":"X","price":1,"quantity":"seven","timestamp":5}\n' + GOOD, 2)
    assert [letter.position for letter in later.letters] == ["f:2"]
    assert later.batch is not None and later.batch.num_rows == 1


def test_given_schema_and_decimal_column_stay_exact() -> None:
    schema = pa.schema([("amount", pa.decimal128(10, 2)), ("id", pa.int64())])
    decoded = JsonlDecoder(schema).decode(b'{"amount":123.45,"id":1}\n{"amount":"0.10","id":2}\n')
    assert decoded.batch is not None
    assert decoded.batch.column("amount").to_pylist() == [
        decimal.Decimal("123.45"),
        decimal.Decimal("0.10"),
    ]


def test_all_lines_bad_gives_no_batch() -> None:
    decoded = JsonlDecoder(pa.schema([("a", pa.int64())])).decode(b'{"a":"x"}\n{"a":true}\n')
    assert decoded.batch is None
    assert len(decoded.letters) == 2


def test_encode_lines_keys_order_and_types() -> None:
    batch = pa.record_batch(
        {
            "symbol": pa.array(["A", "B"]).dictionary_encode(),
            "total": pa.array([decimal.Decimal("8381.0205"), None], pa.decimal128(12, 4)),
            "_window_start": pa.array([1000, 2000], pa.int64()),
            "at": pa.array([1_704_067_200_000, 0], pa.timestamp("ms", "UTC")),
            "ratio": pa.array([0.5, float("nan")]),
        }
    )
    rows = [json.loads(line) for line in encode_lines(batch).splitlines()]
    assert rows == [
        {
            "symbol": "A",
            "total": "8381.0205",
            "_window_start": 1000,
            "at": 1_704_067_200_000,
            "ratio": 0.5,
        },
        {"symbol": "B", "total": None, "_window_start": 2000, "at": 0, "ratio": None},
    ]
    assert list(rows[0]) == ["symbol", "total", "_window_start", "at", "ratio"]


def test_encode_empty_batch() -> None:
    assert encode_lines(pa.record_batch({"a": pa.array([], pa.int64())})) == b""


CORRUPTIONS = [
    b"not json",
    b'{"symbol":"X","price":"cheap","quantity":1,"timestamp":1}',
    b'{"symbol":"X","price":1.0,"quantity":2.5,"timestamp":1}',
    b'{"symbol":"X","price":1.0,"quantity":true,"timestamp":1}',
    b'{"symbol":"X","price":1.0,"quantity":99999999999999999999,"timestamp":1}',
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"symbol":["a"],"price":{"x":1},"quantity":null}',
    b"",
    b"\r",
    b"   ",
    b'{"symbol":"X","price":1.0,"quantity":1,"timestamp":1}\r',
    b'{"unterminated": "str',
    b"\xff\xfe not utf8",
]


GLUED = b'{"symbol":"X","price":1.0,"quantity":1,"timestamp":1}{"symbol":"Y"}'


@pytest.mark.parametrize("glued", [False, True])
def test_fast_dirty_path_agrees_with_line_by_line(
    glued: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dirty chunks: msgspec finds the bad lines (the fast path) and the result
    equals checking every line. Two objects glued on one line pass msgspec but
    not polars, which sends the chunk line by line."""
    rng = random.Random(7)
    base = [
        b'{"symbol":"S%d","price":%d.25,"quantity":%d,"timestamp":%d}' % (i % 5, i, i, 1000 + i)
        for i in range(3000)
    ]
    corruptions = [*CORRUPTIONS, GLUED] if glued else CORRUPTIONS
    for trial in range(15):
        lines = list(base)
        for _ in range(rng.randint(1, 40)):
            lines[rng.randrange(len(lines))] = rng.choice(corruptions)
        if glued:
            lines[5] = GLUED
        chunk = b"\n".join(lines) + (b"\n" if trial % 2 else b"")
        decoder = JsonlDecoder(infer_schema(b"\n".join(base[:100])), path="f")
        slow = decoder._decode_line_by_line(chunk, 1)
        if not glued:
            monkeypatch.setattr(decoder, "_decode_line_by_line", _fail)
        fast = decoder.decode(chunk, 1)
        assert fast.letters == slow.letters, trial
        assert fast.batch is not None and slow.batch is not None
        assert fast.batch.equals(slow.batch), trial


def _fail(*args: object) -> None:
    raise AssertionError("took the line-by-line path")
