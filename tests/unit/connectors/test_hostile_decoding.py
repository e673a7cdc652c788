"""Hostile bytes in the file and Kafka decoders (issue 9): a dead letter with its
line and reason, or one clean error naming the file; never a crash, never a
value changed on the way."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsql.connectors.files import CsvSource, JsonlSource, ParquetSource
from flowsql.connectors.jsonl import MAX_JSON_DEPTH, JsonlDecoder, encode_lines, infer_schema
from flowsql.connectors.serde import JsonDeserializer
from flowsql.errors import ConnectorError
from flowsql.records import OFFSET

INT64_MAX = (1 << 63) - 1
TOO_DEEP = f"JSON nested too deep (more than {MAX_JSON_DEPTH} levels)"
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


def _nested(levels: int, kinds: list[bool] | None = None) -> bytes:
    """A JSON object ``levels`` deep (the outer object is level 1): arrays, or
    per level an object when ``kinds[i]``."""
    inner = levels - 1
    kinds = kinds or [False] * inner
    opens = b"".join(b'{"k":' if kinds[i % len(kinds)] else b"[" for i in range(inner))
    closes = b"".join(b"}" if kinds[i % len(kinds)] else b"]" for i in reversed(range(inner)))
    return b'{"id": 1, "v": ' + opens + b"1" + closes + b"}"


def _letters(decoded: object) -> list[tuple[str, str]]:
    return [(x.position, x.error) for x in decoded.letters]  # type: ignore[attr-defined]


# -- JSON depth ---------------------------------------------------------------------


def test_the_deepest_line_allowed_decodes_on_the_bulk_path() -> None:
    line = _nested(MAX_JSON_DEPTH)
    decoded = JsonlDecoder(SCHEMA, path="f").decode(b'{"id": 0}\n' + line + b"\n")
    assert decoded.letters == [] and decoded.batch is not None
    value = decoded.batch.column("v")[1].as_py()
    assert value == "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)


def test_one_level_deeper_is_a_dead_letter_and_the_rest_goes_on() -> None:
    """The chunk takes the slow path, where msgspec (bound by Python's stack)
    cannot follow even the allowed depth: polars decides, as on the bulk path."""
    lines = [b'{"id": 0}', _nested(MAX_JSON_DEPTH), _nested(MAX_JSON_DEPTH + 1), _nested(50_000)]
    decoded = JsonlDecoder(SCHEMA, path="f").decode(b"\n".join([*lines, b'{"id": 5}']) + b"\n")
    assert decoded.batch is not None
    assert decoded.batch.column("id").to_pylist() == [0, 1, 5]
    assert decoded.batch.column(OFFSET).to_pylist() == [1, 2, 5]
    assert _letters(decoded) == [("f:3", TOO_DEEP), ("f:4", TOO_DEEP)]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, MAX_JSON_DEPTH + 80) | st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 2),
    st.lists(st.booleans(), min_size=1, max_size=8),
    st.booleans(),
)
def test_fuzz_json_depth(levels: int, kinds: list[bool], dirty: bool) -> None:
    """Arrays and objects to the limit and past it: a row exactly when within it,
    on the bulk and the slow path alike."""
    chunk = b'{"id": 0}\n' + _nested(levels, kinds) + b"\n" + (b"oops\n" if dirty else b"")
    decoded = JsonlDecoder(SCHEMA, path="f").decode(chunk)
    assert decoded.batch is not None
    rows = decoded.batch.column("id").to_pylist()
    letters = _letters(decoded)
    if levels <= MAX_JSON_DEPTH:
        assert rows == [0, 1] and ("f:2", TOO_DEEP) not in letters
    else:
        assert rows == [0] and letters[0] == ("f:2", TOO_DEEP)


def test_deep_lines_take_no_part_in_inference() -> None:
    schema = infer_schema(_nested(50_000) + b'\n{"id": 1, "v": "x"}\n')
    assert schema == pa.schema([("id", pa.int64()), ("v", pa.string())])


def test_kafka_json_values_too_deep() -> None:
    deep, ok = _nested(50_000), _nested(MAX_JSON_DEPTH).replace(b", ", b",\n")
    decoded = JsonDeserializer().decode([b'{"id": 0, "v": "a"}', deep, None, ok])
    assert decoded.batch.column("id").to_pylist() == [0, 1]
    assert decoded.errors == [(1, TOO_DEEP), (2, "null message value (tombstone)")]


def test_a_json_array_file_too_deep_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" + _nested(50_000) + b"]")
    with pytest.raises(ConnectorError, match="nested too deep"):
        _ = JsonlSource(path).schema


# -- integers beyond int64 ----------------------------------------------------------


def test_large_integers_keep_the_column_integer() -> None:
    sample = b'{"a": 1}\n{"a": 9223372036854775807}\n{"a": 99999999999999999999}\n'
    sample += b'{"a": 18446744073709551615}\n{"a": -9223372036854775809}\n'
    assert infer_schema(sample) == pa.schema([("a", pa.int64())])
    decoded = JsonlDecoder(path="f").decode(sample)
    assert decoded.batch is not None
    assert decoded.batch.column("a").to_pylist() == [1, INT64_MAX]
    assert [e for _, e in _letters(decoded)] == [
        f"column 'a': integer {v} does not fit in int64"
        for v in (99999999999999999999, 18446744073709551615, -9223372036854775809)
    ]


@pytest.mark.parametrize("value", [b"1.5", b"1e3", b"2E-2", b"1.0"])
def test_a_fraction_or_an_exponent_makes_the_column_float(value: bytes) -> None:
    sample = b'{"a": 1}\n{"a": ' + value + b"}\n"
    assert infer_schema(sample) == pa.schema([("a", pa.float64())])


# -- a sample without one good line -------------------------------------------------


def test_a_sample_without_good_lines_gives_no_columns_and_keeps_counting() -> None:
    decoder = JsonlDecoder(path="f")
    first = decoder.decode(b"nope\n[1]\n\n{bad\n")
    assert decoder.schema == pa.schema([])
    assert first.batch is None and [p for p, _ in _letters(first)] == ["f:1", "f:2", "f:4"]
    later = decoder.decode(b'{"a": 1}\n{}\nnope\n', first_line=5)
    assert later.batch is not None and later.batch.column(OFFSET).to_pylist() == [5, 6]
    assert _letters(later) == [
        ("f:7", "invalid JSON: JSON is malformed: invalid character (byte 4)")
    ]
    assert encode_lines(later.batch.drop_columns([OFFSET])) == b"{}\n{}\n"


def test_random_bytes_are_dead_letters(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20 + b"\n" + bytes(reversed(range(256))) * 3
    path = tmp_path / "noise.jsonl"
    path.write_bytes(data)
    source = JsonlSource(path)
    assert list(source.batches()) == []
    lines = sum(1 for line in data.split(b"\n") if line.strip())
    assert source.dead_lettered == lines and source.schema.names == [OFFSET]


# -- CSV ----------------------------------------------------------------------------


def _csv(tmp_path: Path, data: bytes, **options: object) -> tuple[list[dict], list[tuple]]:
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    source = CsvSource(path, **options)  # type: ignore[arg-type]
    rows = [row for batch in source.batches() for row in batch.to_pylist()]
    letters = [
        (x.position.rsplit(":", 1)[1], x.error, x.original) for x in source.dead_letters.letters
    ]  # type: ignore[attr-defined]
    return rows, letters


def test_invalid_utf8_in_a_csv_field_is_a_dead_letter(tmp_path: Path) -> None:
    rows, letters = _csv(tmp_path, b"id,name\n1,a\n2,caf\xe9\n3,c\n4,d,\xff\n5,e\n")
    assert [r["id"] for r in rows] == [1, 3, 5]
    assert letters == [
        ("5", "wrong number of fields", "4,d,\ufffd"),
        ("3", "column 'name': invalid UTF-8", "2,caf\ufffd"),
    ]


def test_invalid_utf8_lines_across_blocks_keep_their_numbers(tmp_path: Path) -> None:
    lines = [b"id,name"] + [b"%d,n%d" % (i, i) for i in range(2, 400)]
    for n in (37, 201, 399):
        lines[n - 1] = b"%d,\xc3\x28" % n  # an invalid two-byte sequence
    rows, letters = _csv(tmp_path, b"\n".join(lines) + b"\n", chunk_bytes=256)
    assert len(rows) == 398 - 3
    assert [line for line, _, _ in letters] == ["37", "201", "399"]
    assert all("invalid UTF-8" in error for _, error, _ in letters)


def test_invalid_utf8_in_the_header_only_marks_the_name(tmp_path: Path) -> None:
    rows, letters = _csv(tmp_path, b"id,n\xffame\n1,a\n")
    assert rows == [{"id": 1, "n\ufffdame": "a", OFFSET: 2}] and letters == []


def test_csv_integers_beyond_int64_are_dead_letters(tmp_path: Path) -> None:
    values = [
        "9223372036854775807",
        "-9223372036854775808",
        "+5",
        "00000000000000000000000042",
        "9223372036854775808",
        "99999999999999999999999",
        "-9223372036854775809",
        "1" * 5000,
    ]
    rows, letters = _csv(tmp_path, ("a\n" + "\n".join(values) + "\n").encode())
    assert [r["a"] for r in rows] == [INT64_MAX, -(1 << 63), 5, 42]
    assert [error for _, error, _ in letters] == [
        f"column 'a': integer {v} does not fit in int64" for v in values[4:]
    ]


def test_csv_numbers_beyond_float64_are_dead_letters(tmp_path: Path) -> None:
    rows, letters = _csv(tmp_path, b"x\n1.5\n1e400\n-inf\n-2E999\n2.5\n")
    assert [r["x"] for r in rows] == [1.5, float("-inf"), 2.5]
    assert [(line, error) for line, error, _ in letters] == [
        ("3", "column 'x': number 1e400 is out of the float64 range"),
        ("5", "column 'x': number -2E999 is out of the float64 range"),
    ]


# -- Parquet ------------------------------------------------------------------------


def _parquet(path: Path) -> bytes:
    table = pa.table({"a": list(range(5000)), "s": [f"s{i}" for i in range(5000)]})
    pq.write_table(table, path, row_group_size=1000)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "no footer"])
def test_an_unreadable_parquet_file_is_one_clean_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.parquet"
    data = _parquet(path)
    path.write_bytes(
        {
            "empty": b"",
            "truncated": data[: len(data) // 2],
            "garbage": b"PAR1" + bytes(range(256)) + b"PAR1",
            "no footer": data[:-8],
        }[damage]
    )
    with pytest.raises(ConnectorError) as err:
        _ = ParquetSource(path).schema
    assert str(err.value).startswith(f"cannot read Parquet file {path}: ")
    assert "\n" not in str(err.value)


def test_a_corrupt_page_fails_the_read_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    data = bytearray(_parquet(path))
    at = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    data[at : at + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    source = ParquetSource(path)
    assert source.schema.names == ["a", "s"]  # the footer is fine
    with pytest.raises(ConnectorError, match=f"cannot read Parquet file {path}: ") as err:
        list(source.batches())
    assert "\n" not in str(err.value)


def test_hostile_keys() -> None:
    """Keys msgspec cannot name a field after and a NUL polars cannot name a column
    after: no crash; the NUL key is no column, the others are, with their values."""
    chunk = (
        b'{"a": 1, "b\\u0000c": 2}\n{"a": 2, "q\\"\\\\\\n": "s"}\n{"a": 3, "q\\"\\\\\\n": "x"}\n'
        b'{"a": "bad", "q\\"\\\\\\n": 6}\n'
    )
    schema = infer_schema(chunk)
    assert schema.names == ["a", 'q"\\\n']
    decoded = JsonlDecoder(schema, path="f").decode(chunk)
    assert decoded.batch is not None
    assert decoded.batch.drop_columns([OFFSET]).to_pylist() == [
        {"a": 1, 'q"\\\n': None},
        {"a": 2, 'q"\\\n': "s"},
        {"a": 3, 'q"\\\n': "x"},
    ]
    assert [e for _, e in _letters(decoded)] == [
        "column 'a': expected an integer, got string \"bad\""
    ]
