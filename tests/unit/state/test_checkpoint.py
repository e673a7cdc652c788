"""The checkpoint store and the choice made on restart."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowsql.errors import ExecutionError
from flowsql.state.checkpoint import (
    Checkpoint,
    FileCheckpointStore,
    MemoryCheckpointStore,
    choose,
    fingerprint,
)


def _ckpt(i: int, offset: int) -> Checkpoint:
    state = {"table": pa.table({"k": ["a"], "v": [i]}), "n": i}
    return Checkpoint(id=i, offsets={"t:0": offset}, state=state, query="q")


@pytest.mark.parametrize(
    "make", [lambda p: FileCheckpointStore(p, "job"), lambda p: MemoryCheckpointStore()]
)
def test_stage_then_promote(tmp_path, make):
    store = make(tmp_path)
    assert store.load("t:0") == (None, None)
    store.stage("t:0", _ckpt(1, 10))
    committed, staged = store.load("t:0")
    assert committed is None and staged is not None and staged.offsets == {"t:0": 10}
    store.promote("t:0")
    committed, staged = store.load("t:0")
    assert staged is None and committed is not None
    assert committed.state["table"].equals(pa.table({"k": ["a"], "v": [1]}))


def test_choose_follows_the_offsets_kafka_committed():
    committed, staged = _ckpt(1, 10), _ckpt(2, 20)
    # died after the offset commit, before promoting: the staged state matches Kafka
    assert choose(committed, staged, {"t:0": 20}) is staged
    # died before the offset commit: Kafka still holds the committed checkpoint's offsets
    assert choose(committed, staged, {"t:0": 10}) is committed
    assert choose(None, staged, {}) is None
    assert choose(committed, None, {"t:0": 10}) is committed


def test_a_damaged_checkpoint_is_refused(tmp_path):
    store = FileCheckpointStore(tmp_path, "job")
    store.stage("t:0", _ckpt(1, 10))
    store.promote("t:0")
    path = next(tmp_path.rglob("committed.ckpt"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ExecutionError, match="damaged"):
        store.load("t:0")


def test_writes_leave_no_temporary_files(tmp_path):
    store = FileCheckpointStore(tmp_path, "job")
    for i in range(3):
        store.stage("t:0", _ckpt(i, i))
        store.promote("t:0")
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["committed.ckpt"]


def test_fingerprint_ignores_whitespace():
    assert fingerprint("SELECT  a\nFROM t") == fingerprint("SELECT a FROM t")
    assert fingerprint("SELECT a FROM t") != fingerprint("SELECT b FROM t")
