"""Message formats: bytes <-> Arrow columns, a batch of messages at a time.

A :class:`Deserializer` turns the values of many Kafka messages into one
``pyarrow.RecordBatch`` plus the list of messages it could not decode (for the
dead-letter sink). A :class:`Serializer` turns a result batch into one
``bytes`` value per row.

Formats (``'<stream>.format'``):

- ``json``: one JSON object per message. Decoded in bulk: the values are
  joined with newlines and parsed as JSON lines by the file connector's decoder
  (one polars call, schema inferred from the first batch and kept); only
  a batch that fails falls back to message-by-message decoding to find the bad
  ones. Encoded with msgspec (decimals as strings, timestamps as ISO text).
- ``avro``: schemaless Avro (fastavro); the schema comes from
  ``'<stream>.avro.schema'`` (JSON text) or ``'<stream>.avro.schema.file'``.
  With ``'<stream>.avro.confluent'='true'`` the 5-byte Confluent wire header
  (magic byte + schema id) is skipped on read and written as id 0 on write.
  A sink without a schema derives one from the result columns.
- ``protobuf``: schema from ``'<stream>.proto.file'`` (a .proto file compiled
  with protoc from grpcio-tools), message ``'<stream>.proto.message'`` (default:
  the file's first message).
- ``raw``/``string``: the value as one ``value`` string column; ``bytes``: as a
  binary column.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa

from flowsql.connectors.jsonl import JsonlDecoder
from flowsql.errors import ConfigError, ConnectorError
from flowsql.plan import options

FORMATS = ("json", "avro", "protobuf", "raw", "string", "bytes")
VALUE_COLUMN = "value"


@dataclass
class Decoded:
    """The result of decoding a batch of messages.

    ``batch`` holds one row per good message, in input order; ``rows`` are the
    input indices of those rows (None = every message was good); ``errors``
    are ``(input index, reason)`` for the others.
    """

    batch: pa.RecordBatch
    rows: np.ndarray | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)


class Deserializer(Protocol):
    """Decodes message values, many at a time."""

    def decode(self, values: Sequence[bytes | None]) -> Decoded: ...


class Serializer(Protocol):
    """Encodes each row of a batch to one message value."""

    def encode(self, batch: pa.RecordBatch) -> list[bytes]: ...


# -- JSON -------------------------------------------------------------------


class JsonDeserializer:
    """JSON objects -> columns, in bulk.

    The values are joined with newlines and decoded as JSON lines by the file
    connector's :class:`~flowsql.connectors.jsonl.JsonlDecoder` (one polars
    call against a schema inferred from the first batch, then kept), so Kafka
    and file inputs type their columns the same way. Values holding raw
    newlines, empty values and tombstones take a message-by-message path.
    """

    def __init__(self) -> None:
        self.schema: pa.Schema | None = None
        self._lines = JsonlDecoder(offsets=True)

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        if not values:
            return Decoded(pa.record_batch({}))
        if all(values):  # no tombstone (None) and no empty value
            chunk = b"\n".join(values)  # type: ignore[arg-type]
            if chunk.count(b"\n") == len(values) - 1:  # one line per message
                return self._bulk(chunk, len(values))
        return self._one_by_one(values)

    def _bulk(self, chunk: bytes, count: int) -> Decoded:
        decoded = self._lines.decode(chunk, first_line=0, lines=count)
        errors = [(int(d.position.rsplit(" ", 1)[-1]), d.error) for d in decoded.letters]
        if decoded.batch is None:
            return Decoded(pa.record_batch({}), np.empty(0, np.int64), errors)
        batch = decoded.batch
        rows = batch.column(OFFSET_COLUMN).to_numpy()
        batch = batch.drop_columns([OFFSET_COLUMN])
        self.schema = batch.schema
        return Decoded(batch, None if not errors else rows.astype(np.int64), errors)

    def _one_by_one(self, values: Sequence[bytes | None]) -> Decoded:
        good: list[int] = []
        lines: list[bytes] = []
        errors: list[tuple[int, str]] = []
        for i, value in enumerate(values):
            reason, line = _json_line(value)
            if reason:
                errors.append((i, reason))
            else:
                good.append(i)
                lines.append(line)
        if not good:
            return Decoded(pa.record_batch({}), np.empty(0, np.int64), errors)
        inner = self._bulk(b"\n".join(lines), len(good))
        picked = np.asarray(good, np.int64)
        rows = picked if inner.rows is None else picked[inner.rows]
        errors += [(good[i], why) for i, why in inner.errors]
        errors.sort()
        return Decoded(inner.batch, rows, errors)


OFFSET_COLUMN = "_offset"


def _json_line(value: bytes | None) -> tuple[str, bytes]:
    """Why ``value`` is not one JSON object ("" when it is), and the object on one line."""
    if value is None:
        return "null message value (tombstone)", b""
    try:
        obj = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        return f"invalid JSON: {exc}", b""
    except RecursionError:
        # Too deep for msgspec here: the bulk decoder decides, as for any message.
        # A raw line break in valid JSON can only be whitespace between tokens.
        return "", value.replace(b"\r", b" ").replace(b"\n", b" ")
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}", b""
    return "", msgspec.json.encode(obj)


class JsonSerializer:
    """Rows -> JSON objects (decimals as strings, timestamps as ISO-8601)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_json_default, decimal_format="string")

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        if batch.num_rows == 0:
            return []
        text = self._encoder.encode_lines(batch.to_pylist())
        return text.split(b"\n")[:-1]


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise NotImplementedError(f"cannot encode {type(value).__name__} as JSON")


# -- raw ---------------------------------------------------------------------


class RawDeserializer:
    """The value as one column: ``value`` (utf-8 string, or binary for 'bytes')."""

    def __init__(self, binary: bool = False) -> None:
        self.binary = binary

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        arr = pa.array(values, pa.binary())
        if self.binary:
            return Decoded(pa.record_batch({VALUE_COLUMN: arr}))
        try:
            return Decoded(pa.record_batch({VALUE_COLUMN: arr.cast(pa.string())}))
        except pa.ArrowInvalid:
            return self._one_by_one(values)

    def _one_by_one(self, values: Sequence[bytes | None]) -> Decoded:
        good: list[int] = []
        out: list[str | None] = []
        errors: list[tuple[int, str]] = []
        for i, v in enumerate(values):
            try:
                out.append(None if v is None else v.decode("utf-8"))
                good.append(i)
            except UnicodeDecodeError as exc:
                errors.append((i, f"not UTF-8 text: {exc}"))
        batch = pa.record_batch({VALUE_COLUMN: pa.array(out, pa.string())})
        return Decoded(batch, np.asarray(good, dtype=np.int64), errors)


class RawSerializer:
    """The ``value`` column (or the only column) as the message value."""

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        names = batch.schema.names
        col = batch.column(VALUE_COLUMN if VALUE_COLUMN in names else 0)
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            return [b"" if v is None else v for v in col.to_pylist()]
        return [b"" if v is None else str(v).encode() for v in col.to_pylist()]


# -- Avro --------------------------------------------------------------------

_CONFLUENT_HEADER = struct.Struct(">bI")

_AVRO_ARROW: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}


def _fastavro() -> Any:
    try:
        import fastavro
    except ImportError as exc:
        raise ConnectorError("avro format needs fastavro: pip install 'flowsql[kafka]'") from exc
    return fastavro


class AvroDeserializer:
    """Schemaless Avro records -> columns (fastavro, one call per message)."""

    def __init__(self, schema: dict[str, Any], confluent: bool = False) -> None:
        fastavro = _fastavro()
        self._parsed = fastavro.parse_schema(schema)
        self._read = fastavro.schemaless_reader
        self.fields = [f["name"] for f in schema.get("fields", [])]
        self.arrow = pa.schema([(f["name"], avro_to_arrow(f["type"])) for f in schema["fields"]])
        self.skip = _CONFLUENT_HEADER.size if confluent else 0

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        read, parsed, skip = self._read, self._parsed, self.skip
        rows: list[Any] = []
        good: list[int] = []
        errors: list[tuple[int, str]] = []
        for i, value in enumerate(values):
            try:
                stream = io.BytesIO(value)  # type: ignore[arg-type]
                stream.seek(skip)
                rows.append(read(stream, parsed))
                good.append(i)
            except Exception as exc:  # fastavro raises many kinds for bad bytes
                errors.append((i, f"invalid Avro: {type(exc).__name__}: {exc}"))
        columns = {name: [r.get(name) for r in rows] for name in self.fields}
        batch = pa.RecordBatch.from_pydict(columns, schema=self.arrow)
        rows_idx = None if not errors else np.asarray(good, dtype=np.int64)
        return Decoded(batch, rows_idx, errors)


def avro_to_arrow(avro_type: Any) -> pa.DataType:
    """Arrow type of an Avro field type (unions with null become nullable)."""
    if isinstance(avro_type, list):
        non_null = [t for t in avro_type if t != "null"]
        return avro_to_arrow(non_null[0]) if len(non_null) == 1 else pa.string()
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC")
        if logical == "timestamp-micros":
            return pa.timestamp("us", tz="UTC")
        if logical == "decimal":
            return pa.decimal128(int(avro_type["precision"]), int(avro_type.get("scale", 0)))
        if avro_type.get("type") == "array":
            return pa.list_(avro_to_arrow(avro_type["items"]))
        if avro_type.get("type") == "record":
            return pa.struct([(f["name"], avro_to_arrow(f["type"])) for f in avro_type["fields"]])
        if avro_type.get("type") == "enum":
            return pa.string()
        return avro_to_arrow(avro_type.get("type"))
    if avro_type not in _AVRO_ARROW:
        raise ConfigError("avro.schema", avro_type, ", ".join(_AVRO_ARROW))
    return _AVRO_ARROW[avro_type]


def arrow_to_avro(schema: pa.Schema, name: str = "Row") -> dict[str, Any]:
    """An Avro record schema for result rows (every field nullable)."""
    return {
        "type": "record",
        "name": name,
        "fields": [{"name": f.name, "type": ["null", _avro_type(f.type)]} for f in schema],
    }


def _avro_type(t: pa.DataType) -> Any:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "long"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_decimal(t):
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": t.precision,
            "scale": t.scale,
        }
    if pa.types.is_timestamp(t):
        return {"type": "long", "logicalType": "timestamp-millis"}
    if pa.types.is_binary(t):
        return "bytes"
    if pa.types.is_dictionary(t):
        return _avro_type(t.value_type)
    return "string"


class AvroSerializer:
    """Rows -> schemaless Avro (the declared schema, else one derived from the columns)."""

    def __init__(self, schema: dict[str, Any] | None = None, confluent: bool = False) -> None:
        self.schema = schema
        self._parsed: Any = None
        self.header = _CONFLUENT_HEADER.pack(0, 0) if confluent else b""
        _fastavro()  # a missing extra fails when the job starts, not at its first batch

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        fastavro = _fastavro()
        if self._parsed is None:
            self._parsed = fastavro.parse_schema(self.schema or arrow_to_avro(batch.schema))
        write, parsed, header = fastavro.schemaless_writer, self._parsed, self.header
        out = []
        for row in batch.to_pylist():
            buf = io.BytesIO()
            buf.write(header)
            write(buf, parsed, row)
            out.append(buf.getvalue())
        return out


# -- Protobuf ----------------------------------------------------------------


def compile_proto(path: str | Path, message: str | None = None) -> type:
    """Compile a .proto file with protoc (grpcio-tools) and return the message class.

    Args:
        path: the .proto file; imports are resolved from its directory and the
            well-known types shipped with grpcio-tools.
        message: message name (with or without package); default: the file's
            first message.

    Raises:
        ConnectorError: protoc is missing or the file does not compile.
    """
    try:
        import grpc_tools
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from grpc_tools import protoc
    except ImportError as exc:
        raise ConnectorError(
            f"protobuf format needs protobuf and grpcio-tools ({exc.name} is missing):"
            " pip install 'flowsql[kafka]'"
        ) from exc

    proto = Path(path).resolve()
    if not proto.is_file():
        raise ConnectorError(f"proto file not found: {proto}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    fd, out = tempfile.mkstemp(suffix=".pb")
    os.close(fd)
    try:
        args = ["protoc", f"-I{proto.parent}", f"-I{include}", "--include_imports"]
        if protoc.main([*args, f"--descriptor_set_out={out}", proto.name]) != 0:
            raise ConnectorError(f"protoc could not compile {proto} (see messages above)")
        files = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes()).file
    finally:
        os.unlink(out)
    pool = descriptor_pool.DescriptorPool()
    for f in files:
        pool.Add(f)
    target = files[-1]
    name = message or target.message_type[0].name
    full = name if "." in name or not target.package else f"{target.package}.{name}"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
    except KeyError as exc:
        known = ", ".join(m.name for m in target.message_type)
        raise ConfigError("proto.message", name, known) from exc


def _proto_arrow(fd: Any) -> pa.DataType:
    from google.protobuf.descriptor import FieldDescriptor as F

    cpp = fd.cpp_type
    base: pa.DataType
    if cpp in (F.CPPTYPE_INT32, F.CPPTYPE_UINT32):
        base = pa.int32() if cpp == F.CPPTYPE_INT32 else pa.int64()
    elif cpp in (F.CPPTYPE_INT64, F.CPPTYPE_UINT64):
        base = pa.int64() if cpp == F.CPPTYPE_INT64 else pa.uint64()
    elif cpp == F.CPPTYPE_DOUBLE:
        base = pa.float64()
    elif cpp == F.CPPTYPE_FLOAT:
        base = pa.float32()
    elif cpp == F.CPPTYPE_BOOL:
        base = pa.bool_()
    elif cpp == F.CPPTYPE_STRING:
        base = pa.binary() if fd.type == F.TYPE_BYTES else pa.string()
    elif cpp == F.CPPTYPE_ENUM:
        base = pa.string()
    else:
        return pa.string()  # nested messages as JSON text
    return pa.list_(base) if _repeated(fd) else base


def _repeated(fd: Any) -> bool:
    if hasattr(fd, "is_repeated"):  # protobuf >= 6; older releases have only the label
        return bool(fd.is_repeated)
    return bool(fd.label == fd.LABEL_REPEATED)


class ProtobufDeserializer:
    """Protobuf messages -> columns (one column per field of the message)."""

    def __init__(self, message_class: type) -> None:
        self.cls = message_class
        desc = message_class.DESCRIPTOR  # type: ignore[attr-defined]
        self.fields = list(desc.fields)
        self.arrow = pa.schema([(f.name, _proto_arrow(f)) for f in self.fields])
        self._getters = [_proto_getter(f) for f in self.fields]

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        parse = self.cls.FromString  # type: ignore[attr-defined]
        msgs: list[Any] = []
        good: list[int] = []
        errors: list[tuple[int, str]] = []
        for i, value in enumerate(values):
            try:
                msgs.append(parse(value or b""))
                good.append(i)
            except Exception as exc:  # DecodeError and friends
                errors.append((i, f"invalid protobuf: {exc}"))
        columns = [
            pa.array([get(m) for m in msgs], f.type)
            for get, f in zip(self._getters, self.arrow, strict=True)
        ]
        batch = pa.RecordBatch.from_arrays(columns, schema=self.arrow)
        return Decoded(batch, None if not errors else np.asarray(good, dtype=np.int64), errors)


def _proto_getter(fd: Any) -> Callable[[Any], Any]:
    from google.protobuf import json_format
    from google.protobuf.descriptor import FieldDescriptor as F

    name = fd.name
    # A message class generated by protoc at run time: its fields are attributes
    # named by the descriptor, so they are read by name.
    get = attrgetter(name)
    if fd.cpp_type == F.CPPTYPE_MESSAGE:
        if _repeated(fd):
            return lambda m: json.dumps([json_format.MessageToDict(x) for x in get(m)])
        return lambda m: json.dumps(json_format.MessageToDict(get(m))) if m.HasField(name) else None
    if fd.cpp_type == F.CPPTYPE_ENUM:
        names = fd.enum_type.values_by_number
        if _repeated(fd):
            return lambda m: [names[v].name if v in names else str(v) for v in get(m)]
        return lambda m: names[v].name if (v := get(m)) in names else str(v)
    if _repeated(fd):
        return lambda m: list(get(m))
    return get


class ProtobufSerializer:
    """Rows -> protobuf messages; columns not in the message are ignored."""

    def __init__(self, message_class: type) -> None:
        from google.protobuf.descriptor import FieldDescriptor as F

        self.cls = message_class
        desc = message_class.DESCRIPTOR  # type: ignore[attr-defined]
        self.convert: dict[str, Callable[[Any], Any]] = {}
        for fd in desc.fields:
            if fd.cpp_type in (F.CPPTYPE_DOUBLE, F.CPPTYPE_FLOAT):
                self.convert[fd.name] = float
            elif fd.cpp_type in (
                F.CPPTYPE_INT32,
                F.CPPTYPE_INT64,
                F.CPPTYPE_UINT32,
                F.CPPTYPE_UINT64,
            ):
                self.convert[fd.name] = _to_int
            elif fd.cpp_type == F.CPPTYPE_STRING and fd.type != F.TYPE_BYTES:
                self.convert[fd.name] = _to_text
            else:
                self.convert[fd.name] = _identity

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        names = [n for n in batch.schema.names if n in self.convert]
        cols = [(n, self.convert[n], batch.column(n).to_pylist()) for n in names]
        out = []
        for i in range(batch.num_rows):
            kwargs = {n: conv(vals[i]) for n, conv, vals in cols if vals[i] is not None}
            out.append(self.cls(**kwargs).SerializeToString())
        return out


def _to_int(v: Any) -> int:
    if isinstance(v, dt.datetime):
        return int(v.timestamp() * 1000)
    return int(v)


def _to_text(v: Any) -> str:
    return v.isoformat() if isinstance(v, dt.datetime) else str(v)


def _identity(v: Any) -> Any:
    return v


# -- factory -----------------------------------------------------------------
#
# ``prefix`` is the stream whose keys configure the format (``'<prefix>.format'``);
# "" reads the bare keys. Every key is declared in flowsql.plan.options.


def _found(props: Mapping[str, str], option: options.Option, prefix: str) -> str | None:
    """The value of ``option`` as written (empty = unset), any spelling."""
    found = options.find(props, option, prefix)
    return found[1] if found is not None and found[1] else None


def _key(option: options.Option, prefix: str) -> str:
    return f"{prefix}.{option.name}" if prefix else option.name


def _avro_schema(props: Mapping[str, str], prefix: str, required: bool) -> dict[str, Any] | None:
    text = _found(props, options.AVRO_SCHEMA, prefix)
    path = _found(props, options.AVRO_SCHEMA_FILE, prefix)
    key = _key(options.AVRO_SCHEMA, prefix)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConnectorError(f"cannot read Avro schema file '{path}': {exc}") from exc
    if not text:
        if required:
            raise ConfigError(key, None, "an Avro schema (JSON) or .avro.schema.file")
        return None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(key, text[:60], f"valid JSON ({exc})") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ConfigError(key, text[:60], "an Avro record schema")
    return schema


def _confluent(props: Mapping[str, str], prefix: str) -> bool:
    return bool(options.get(props, options.AVRO_CONFLUENT, prefix))


def _proto_class(props: Mapping[str, str], prefix: str) -> type:
    path = _found(props, options.PROTO_FILE, prefix)
    if not path:
        raise ConfigError(_key(options.PROTO_FILE, prefix), None, "a .proto file path")
    return compile_proto(path, _found(props, options.PROTO_MESSAGE, prefix))


def _format(props: Mapping[str, str], prefix: str) -> str:
    fmt = (
        _found(props, options.KAFKA_FORMAT, prefix) or options.KAFKA_FORMAT.default or ""
    ).lower()
    fmt = {"proto": "protobuf", "text": "string"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ConfigError(_key(options.KAFKA_FORMAT, prefix), fmt, FORMATS)
    return fmt


def deserializer_for(props: Mapping[str, str], prefix: str) -> Deserializer:
    """The deserializer configured by ``'<prefix>.format'`` and its options."""
    fmt = _format(props, prefix)
    if fmt == "json":
        return JsonDeserializer()
    if fmt == "avro":
        schema = _avro_schema(props, prefix, True) or {}
        return AvroDeserializer(schema, _confluent(props, prefix))
    if fmt == "protobuf":
        return ProtobufDeserializer(_proto_class(props, prefix))
    return RawDeserializer(binary=fmt == "bytes")


def serializer_for(props: Mapping[str, str], prefix: str) -> Serializer:
    """The serializer configured by ``'<prefix>.format'`` and its options."""
    fmt = _format(props, prefix)
    if fmt == "json":
        return JsonSerializer()
    if fmt == "avro":
        return AvroSerializer(_avro_schema(props, prefix, False), _confluent(props, prefix))
    if fmt == "protobuf":
        return ProtobufSerializer(_proto_class(props, prefix))
    return RawSerializer()
