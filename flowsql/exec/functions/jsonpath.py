"""JSON kernels: JSON_VALUE and JSON_EXTRACT with a JSONPath subset
(``$``, ``.key``, ``."key"``, ``['key']``, ``[0]``).

This is the one place on the scalar path that runs Python per value: Arrow
has no kernel that parses JSON text held in a string column. To keep it cheap
the column is dictionary-encoded first and each *distinct* document is parsed
once (with msgspec) and the results are mapped back through the indices.
Streams of repeated payloads (status blobs, enums in JSON) cost one parse per
distinct value per batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from flowsql.errors import ExecutionError
from flowsql.exec.functions.base import (
    Datum,
    Function,
    decode,
    fail,
    is_scalar,
    is_string_type,
    null_of,
    per_constant,
)

Step = str | int
_MISSING = object()
_STEP = re.compile(
    r"""\.(?P<name>[^.\[\]\s"']+)"""
    r"""|\."(?P<dq>[^"]*)\""""
    r"""|\[\s*(?P<index>\d+)\s*\]"""
    r"""|\[\s*'(?P<sq>[^']*)'\s*\]"""
    r"""|\[\s*"(?P<bq>[^"]*)"\s*\]"""
)


@lru_cache(maxsize=512)
def parse_path(path: str) -> tuple[Step, ...]:
    """JSONPath text to a tuple of object keys (str) and array indexes (int).

    Raises:
        ExecutionError: the path is not in the supported subset.
    """
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    elif text and text[0] not in ".[":
        text = "." + text
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None:
            raise ExecutionError(
                f"JSON path {path!r}: cannot read {text[pos:]!r}"
                " (supported: $, .key, .\"key\", ['key'], [0])"
            )
        index = match.group("index")
        steps.append(int(index) if index is not None else _key(match))
        pos = match.end()
    return tuple(steps)


def _key(match: re.Match[str]) -> str:
    return next(
        g
        for g in (match.group("name"), match.group("dq"), match.group("sq"), match.group("bq"))
        if g is not None
    )


def _load(document: str | bytes | None) -> Any:
    if document is None:
        return _MISSING
    try:
        return msgspec.json.decode(document)
    except msgspec.DecodeError:
        return _MISSING


def _walk(node: Any, steps: tuple[Step, ...]) -> Any:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return _MISSING
        elif not isinstance(node, dict) or step not in node:
            return _MISSING
        node = node[step]
    return node


def _scalar_text(node: Any) -> str | None:
    """JSON_VALUE: the text of a scalar; NULL for objects, arrays, null, missing."""
    if isinstance(node, str):
        return node
    if node is _MISSING or node is None or isinstance(node, dict | list):
        return None
    return msgspec.json.encode(node).decode()


def _node_text(node: Any) -> str | None:
    """JSON_EXTRACT: the node as compact JSON text; NULL when missing."""
    if node is _MISSING:
        return None
    return msgspec.json.encode(node).decode()


def _over_distinct(
    render: Callable[[Any], str | None],
) -> Callable[[pa.Array, list[Any]], pa.Array]:
    def run(documents: pa.Array, params: list[Any]) -> pa.Array:
        steps = parse_path(params[0])
        encoded = pc.dictionary_encode(documents)
        distinct = encoded.dictionary.to_pylist()
        rendered = pa.array([render(_walk(_load(d), steps)) for d in distinct], pa.string())
        return rendered.take(encoded.indices)

    return run


def _json_function(
    name: str, render: Callable[[Any], str | None]
) -> Callable[[list[Datum]], Datum]:
    run = _over_distinct(render)

    def kernel(args: list[Datum]) -> Datum:
        documents, path = _documents(name, args[0]), decode(args[1])
        if is_scalar(documents):
            result = kernel([pa.array([documents.as_py()], documents.type), path])
            return result[0]
        if is_scalar(path):
            return (
                run(documents, [path.as_py()])
                if path.is_valid
                else pa.nulls(len(documents), pa.string())
            )
        return per_constant(run, documents, [path], pa.string())

    return kernel


def _documents(name: str, value: Datum) -> Datum:
    value = decode(value)
    t = value.type
    if is_string_type(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return value
    if pa.types.is_null(t):
        return null_of(pa.string()) if is_scalar(value) else value.cast(pa.string())
    raise fail(name, [value], "argument must be a JSON string")


FUNCTIONS = (
    Function("json_value", _json_function("json_value", _scalar_text), 2, 2, "unary"),
    Function("json_extract", _json_function("json_extract", _node_text), 2, 2, "unary"),
)
