"""The message format keys (``'<stream>.format'``, Avro and Protobuf schemas) are
read through the WITH-key registry: declared spellings, defaults and types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowsql.connectors.serde import (
    FORMATS,
    AvroDeserializer,
    AvroSerializer,
    JsonDeserializer,
    ProtobufDeserializer,
    RawDeserializer,
    deserializer_for,
    serializer_for,
)
from flowsql.errors import ConfigError

SCHEMA = '{"type": "record", "name": "T", "fields": [{"name": "symbol", "type": "string"}]}'


def test_json_is_the_declared_default() -> None:
    assert isinstance(deserializer_for({}, "t"), JsonDeserializer)
    assert isinstance(deserializer_for({"t.format": "TEXT"}, "t"), RawDeserializer)


def test_an_unknown_format_names_the_key_and_the_formats() -> None:
    with pytest.raises(ConfigError) as info:
        serializer_for({"t.format": "xml"}, "t")
    assert str(info.value) == f"invalid value 'xml' for 't.format': allowed {', '.join(FORMATS)}"


def test_avro_keys_and_their_old_spellings() -> None:
    pytest.importorskip("fastavro")
    found = deserializer_for({"t.format": "avro", "t.schema": SCHEMA}, "t")
    assert isinstance(found, AvroDeserializer) and found.skip == 0
    props = {"t.format": "avro", "t.avro.schema": SCHEMA, "t.avro.confluent": "TRUE"}
    assert deserializer_for(props, "t").skip == 5  # type: ignore[attr-defined]
    assert isinstance(serializer_for({"t.format": "avro"}, "t"), AvroSerializer)


def test_avro_confluent_takes_true_or_false_only() -> None:
    pytest.importorskip("fastavro")
    props = {"t.format": "avro", "t.avro.schema": SCHEMA, "t.avro.confluent": "yes"}
    message = "invalid value 'yes' for 't.avro.confluent': allowed true or false"
    with pytest.raises(ConfigError, match=re.escape(message)):
        deserializer_for(props, "t")


def test_a_missing_schema_names_the_declared_key() -> None:
    pytest.importorskip("fastavro")
    with pytest.raises(ConfigError, match=re.escape("'t.avro.schema'")):
        deserializer_for({"t.format": "avro"}, "t")
    with pytest.raises(ConfigError, match=re.escape("'t.proto.file'")):
        deserializer_for({"t.format": "protobuf"}, "t")


def test_proto_file_by_its_generic_spelling(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    proto = tmp_path / "trade.proto"
    proto.write_text('syntax = "proto3";\nmessage Trade { string symbol = 1; }\n')
    found = deserializer_for({"t.format": "proto", "t.schema.file": str(proto)}, "t")
    assert isinstance(found, ProtobufDeserializer)
    assert found.arrow.names == ["symbol"]
