from __future__ import annotations

import decimal
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowsql.connectors.dlq import JsonlDeadLetters
from flowsql.connectors.files import JsonlSource, format_of, open_sink, open_source
from flowsql.connectors.generator import make_generator
from flowsql.errors import ConfigError, ConnectorError
from flowsql.records import OFFSET, DeadLetter, ListDeadLetters


def _trades(n: int = 1000) -> pa.Table:
    table = pa.Table.from_batches(list(make_generator(records=n, batch_size=300).batches()))
    return table.drop_columns(["_timestamp"])


def _read(path: Path, **kwargs: object) -> tuple[pa.Table, ListDeadLetters]:
    letters = ListDeadLetters()
    source = open_source(path, name="trades", dead_letters=letters, **kwargs)  # type: ignore[arg-type]
    batches = list(source.batches())
    table = pa.Table.from_batches(batches) if batches else pa.table({})
    assert source.dead_lettered == len(letters.letters)
    return table, letters


def _write(path: Path, table: pa.Table) -> None:
    sink = open_sink(path)
    for batch in table.to_batches(max_chunksize=333):
        sink.write(batch)
    sink.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".csv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    table = _trades()
    path = tmp_path / f"trades{suffix}"
    _write(path, table)
    back, letters = _read(path, batch_size=128)
    assert letters.letters == []
    assert back.column("symbol").to_pylist() == table.column("symbol").to_pylist()
    assert back.column("price").to_pylist() == table.column("price").to_pylist()
    assert back.column("quantity").to_pylist() == table.column("quantity").to_pylist()
    assert back.column("timestamp").to_pylist() == table.column("timestamp").to_pylist()
    assert max(b.num_rows for b in back.to_batches()) <= 128


def test_jsonl_line_numbers_across_chunks(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "v": i * 1.5}) for i in range(1, 501)]
    lines[99] = '{"id": "bad", "v": 1}'
    lines[349] = "{broken"
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines))  # no final newline
    letters = ListDeadLetters()
    source = JsonlSource(path, name="d", dead_letters=letters, chunk_bytes=1000)
    table = pa.Table.from_batches(list(source.batches()))
    assert table.num_rows == 498
    assert [x.position for x in letters.letters] == [f"{path}:100", f"{path}:350"]
    assert letters.letters[1].original == "{broken"
    offsets = table.column(OFFSET).to_pylist()
    assert offsets[:3] == [1, 2, 3] and 100 not in offsets and offsets[-1] == 500
    assert table.column("id").to_pylist() == offsets


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]')
    table, _ = _read(path)
    assert table.column("a").to_pylist() == [1, 2]


def test_csv_bad_rows_to_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("sym,price,qty\nA,1.5,3\nB,abc,3\nC,2\nD,2.5,4\nE,,5\n")
    table, letters = _read(path)
    assert table.column("sym").to_pylist() == ["A", "D", "E"]
    assert table.column("price").to_pylist() == [1.5, 2.5, None]
    assert table.column(OFFSET).to_pylist() == [2, 5, 6]
    found = {x.position: x for x in letters.letters}
    assert set(found) == {f"{path}:3", f"{path}:4"}
    assert found[f"{path}:3"].original == "B,abc,3"
    assert "price" in found[f"{path}:3"].error
    assert found[f"{path}:4"].original == "C,2"


def test_schema_is_known_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n')
    source = open_source(path, name="t")
    assert source.schema.names == ["a", "b", OFFSET]


def test_missing_input_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="nope.jsonl"):
        open_source(tmp_path / "nope.jsonl", name="trades")


def test_format_by_extension_or_explicit() -> None:
    assert format_of("a.ndjson") == "jsonl"
    assert format_of("a.data", "json") == "jsonl"
    assert format_of("a.PARQUET") == "parquet"
    with pytest.raises(ConfigError, match="a.txt"):
        format_of("a.txt")
    with pytest.raises(ConfigError, match="xml"):
        format_of("a.csv", "xml")


def test_sink_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = open_sink(path)
    sink.write(pa.record_batch({"a": [1, 2]}))
    assert not path.exists()
    sink.abort()
    assert not path.exists() and list(tmp_path.iterdir()) == []
    sink = open_sink(path)
    sink.write(pa.record_batch({"a": [1, 2]}))
    sink.close()
    assert path.read_text() == '{"a":1}\n{"a":2}\n'
    assert list(tmp_path.iterdir()) == [path]


def test_sink_with_no_rows_writes_an_empty_file(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.csv", "e.parquet"):
        sink = open_sink(tmp_path / name)
        sink.close()
        assert (tmp_path / name).exists()


def test_decimals_exact_in_every_format(tmp_path: Path) -> None:
    batch = pa.record_batch(
        {
            "d": pa.array(
                [decimal.Decimal("8381.0205"), decimal.Decimal("0.1000")], pa.decimal128(12, 4)
            )
        }
    )
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        sink = open_sink(tmp_path / name)
        sink.write(batch)
        sink.close()
    assert (tmp_path / "d.jsonl").read_text() == '{"d":"8381.0205"}\n{"d":"0.1000"}\n'
    assert (tmp_path / "d.csv").read_text().splitlines()[1:] == ["8381.0205", "0.1000"]
    assert pq.read_table(tmp_path / "d.parquet").column("d").type == pa.decimal128(12, 4)


def test_dead_letter_file(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    sink = JsonlDeadLetters(path)
    sink.write([DeadLetter("bad", "not json", "trades", "t.jsonl:3", "decode")])
    sink.write([DeadLetter("late", b'{"a": 1}', "trades", "", "aggregate")])
    sink.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {
        "error": "bad",
        "original": "not json",
        "source": "trades",
        "position": "t.jsonl:3",
        "operator": "decode",
    }
    assert rows[1]["original"] == '{"a": 1}'
    assert sink.count == 2


def test_dead_letter_file_created_even_when_empty(tmp_path: Path) -> None:
    JsonlDeadLetters(tmp_path / "none.jsonl").close()
    assert (tmp_path / "none.jsonl").read_text() == ""


def test_byte_order_mark_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    table, letters = _read(path)
    assert table.column("a").to_pylist() == [1, 2] and letters.letters == []
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    table, letters = _read(empty)
    assert table.num_rows == 0 and letters.letters == []


def test_output_file_has_the_usual_mode(tmp_path: Path) -> None:
    sink = open_sink(tmp_path / "o.jsonl")
    sink.close()
    assert (tmp_path / "o.jsonl").stat().st_mode & 0o044  # readable by others, not 0600


def test_empty_and_header_only_csv(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "h.csv").write_text("a,b\n")
    assert _read(tmp_path / "e.csv")[0].num_rows == 0
    source = open_source(tmp_path / "h.csv")
    assert source.schema.names == ["a", "b", OFFSET]
    assert list(source.batches()) == []


def test_non_atomic_sink_grows_in_place(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    sink = open_sink(path, atomic=False)
    sink.write(pa.record_batch({"a": [1]}))
    sink.flush()
    assert path.read_text() == '{"a":1}\n'
    sink.close()
    sink.close()  # twice is fine
    assert list(tmp_path.iterdir()) == [path]
