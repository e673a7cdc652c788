from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from flowsql.connectors.files import CsvSink, JsonlSink, JsonlSource, ParquetSink
from flowsql.connectors.generator import GeneratorSource
from flowsql.connectors.memory import MemorySink, MemorySource
from flowsql.connectors.registry import sink_for, sources_for
from flowsql.connectors.stdout import StdoutJsonlSink, TableSink
from flowsql.errors import ConfigError, ConnectorError
from flowsql.plan.nodes import Project, Scan, Statement


def _statement(source: str = "trades", **props: str) -> Statement:
    plan = Project(Scan(source), (), star=True)
    return Statement(plan, kind="stream", name="out", properties=dict(props))


def _file(tmp_path: Path, name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text('{"a": 1}\n')
    return path


def test_cli_input_binds_a_from_name(tmp_path: Path) -> None:
    path = _file(tmp_path)
    sources = sources_for(_statement(), {"trades": str(path)})
    assert isinstance(sources["trades"], JsonlSource)
    assert sources["trades"].name == "trades"


def test_with_file_source_keys(tmp_path: Path) -> None:
    path = _file(tmp_path, "t.data")
    statement = _statement(
        **{"trades.type": "file_source", "trades.path": str(path), "trades.format": "json"}
    )
    source = sources_for(statement)["trades"]
    assert isinstance(source, JsonlSource)
    assert pa.Table.from_batches(list(source.batches())).column("a").to_pylist() == [1]


def test_relative_path_found_beside_the_sql_file(tmp_path: Path) -> None:
    _file(tmp_path, "beside.jsonl")
    statement = _statement(**{"trades.type": "file_source", "trades.path": "beside.jsonl"})
    assert isinstance(sources_for(statement, base_dir=tmp_path)["trades"], JsonlSource)


def test_cli_input_wins_over_with(tmp_path: Path) -> None:
    path = _file(tmp_path, "cli.jsonl")
    statement = _statement(**{"trades.type": "file_source", "trades.path": "/nowhere.jsonl"})
    assert sources_for(statement, {"trades": str(path)})["trades"].path == path  # type: ignore[attr-defined]


def test_generator_declared_in_with_and_on_the_cli() -> None:
    statement = _statement(
        "orders", **{"orders.type": "generator", "orders.records": "10", "orders.seed": "3"}
    )
    source = sources_for(statement, batch_size=4)["orders"]
    assert isinstance(source, GeneratorSource) and source.kind == "orders"
    assert [b.num_rows for b in source.batches()] == [4, 4, 2]
    cli = sources_for(_statement(), {"trades": "generator:records=5,symbols=2"})["trades"]
    assert isinstance(cli, GeneratorSource) and cli.options.records == 5


def test_generator_unknown_option_names_the_key() -> None:
    statement = _statement(**{"trades.type": "generator", "trades.recods": "10"})
    with pytest.raises(ConfigError, match="trades.recods"):
        sources_for(statement)


def test_unbound_input_and_missing_path_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="--input trades=PATH"):
        sources_for(_statement())
    with pytest.raises(ConnectorError, match="missing.jsonl"):
        sources_for(_statement(), {"trades": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ConfigError, match="trades.type"):
        sources_for(_statement(**{"trades.type": "ftp"}))


@pytest.mark.parametrize(
    ("name", "cls"), [("o.jsonl", JsonlSink), ("o.csv", CsvSink), ("o.parquet", ParquetSink)]
)
def test_sink_by_output_extension(tmp_path: Path, name: str, cls: type) -> None:
    assert isinstance(sink_for(_statement(), tmp_path / name), cls)


def test_sink_declared_in_with(tmp_path: Path) -> None:
    statement = _statement(
        **{"out.type": "file_sink", "out.path": str(tmp_path / "x.out"), "out.format": "csv"}
    )
    assert isinstance(sink_for(statement), CsvSink)
    assert isinstance(sink_for(statement, tmp_path / "y.unknown"), CsvSink)


def test_default_sink_is_a_table_and_dash_is_stdout() -> None:
    assert isinstance(sink_for(_statement()), TableSink)
    assert isinstance(sink_for(_statement(), "-"), StdoutJsonlSink)


def test_memory_source_and_sink() -> None:
    source = MemorySource([{"a": i} for i in range(25)], name="m", batch_size=10)
    sink = MemorySink()
    for batch in source.batches():
        sink.write(batch)
    assert [b.num_rows for b in sink.batches] == [10, 10, 5]
    assert sink.table().column("a").to_pylist() == list(range(25))
    assert source.schema.names == ["a"]


def test_generator_keys_are_read_through_the_registry() -> None:
    statement = _statement(
        **{
            "trades.type": "Generator",
            "trades.kind": "orders",
            "trades.customers": "3",
            "trades.batch.size": "4",
            "trades.records": "10",
        }
    )
    source = sources_for(statement, batch_size=1000)["trades"]
    assert isinstance(source, GeneratorSource) and source.kind == "orders"
    assert (source.options.symbols, source.options.batch_size) == (3, 4)
    assert source.options.records == 10


def test_generator_defaults_are_the_declared_ones() -> None:
    source = sources_for(_statement(**{"trades.type": "generator"}), batch_size=7)["trades"]
    assert isinstance(source, GeneratorSource)
    assert (source.options.records, source.options.batch_size) == (1_000_000, 7)


def test_a_job_key_that_looks_like_a_stream_key_is_left_to_the_job() -> None:
    statement = _statement("dlq", **{"dlq.type": "generator", "dlq.path": "letters.jsonl"})
    assert isinstance(sources_for(statement)["dlq"], GeneratorSource)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("generator:recods=5", "invalid value '5' for 'trades.recods': allowed type,"),
        ("generator:kind=bonds", "invalid value 'bonds' for 'trades.kind': allowed trades, orders"),
    ],
)
def test_a_cli_generator_key_is_checked_against_the_declared_keys(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        sources_for(_statement(), {"trades": spec})


def test_connector_types_are_checked_against_the_source_or_sink_types() -> None:
    with pytest.raises(ConfigError) as source:
        sources_for(_statement(**{"trades.type": "file_sink"}))
    assert str(source.value) == (
        "invalid value 'file_sink' for 'trades.type': allowed file_source, generator, kafka_source"
    )
    with pytest.raises(ConfigError) as sink:
        sink_for(_statement(**{"out.type": "file_source", "out.path": "x.jsonl"}))
    assert str(sink.value).endswith("allowed file_sink, kafka_sink, stdout")
    assert isinstance(sink_for(_statement(**{"out.type": " STDOUT"})), TableSink)


def test_file_source_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a\tb\n1\t2\n")
    statement = _statement(**{"trades.path": str(path), "trades.delimiter": "tab"})
    source = sources_for(statement)["trades"]
    assert pa.Table.from_batches(list(source.batches())).column("b").to_pylist() == [2]
