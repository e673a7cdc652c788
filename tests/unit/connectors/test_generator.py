from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowsql.connectors.generator import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_START_MS,
    FIELDS,
    KINDS,
    make_generator,
)
from flowsql.errors import ConfigError
from flowsql.plan import options


def _table(kind: str = "trades", **opts: object) -> pa.Table:
    return pa.Table.from_batches(list(make_generator(kind, **opts).batches()))


def test_trades_schema() -> None:
    table = _table(records=10)
    assert table.schema.names == ["symbol", "price", "quantity", "timestamp", "_timestamp"]
    assert table.schema.field("symbol").type == pa.dictionary(pa.int32(), pa.string())
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("quantity").type == pa.int64()
    assert table.schema.field("timestamp").type == pa.int64()
    assert table.column("timestamp").equals(table.column("_timestamp"))


def test_same_seed_same_rows_and_other_seed_other_rows() -> None:
    a = _table(records=5000, seed=7)
    b = _table(records=5000, seed=7)
    c = _table(records=5000, seed=8)
    assert a.equals(b)
    assert not a.column("price").equals(c.column("price"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_rows_do_not_depend_on_batch_size(kind: str) -> None:
    small = _table(kind, records=250_123, batch_size=7_777)
    large = _table(kind, records=250_123, batch_size=200_000)
    assert small.num_rows == large.num_rows == 250_123
    assert small.equals(large)


def test_batches_have_batch_size_rows() -> None:
    sizes = [b.num_rows for b in make_generator(records=25, batch_size=10).batches()]
    assert sizes == [10, 10, 5]


def test_timestamps_advance_at_rate_from_start() -> None:
    table = _table(records=3000, rate=1000)
    ts = table.column("timestamp").to_numpy()
    assert ts[0] == DEFAULT_START_MS
    np.testing.assert_array_equal(ts, DEFAULT_START_MS + np.arange(3000))
    fast = _table(records=1000, rate=100_000).column("timestamp").to_numpy()
    assert fast[99] == DEFAULT_START_MS and fast[100] == DEFAULT_START_MS + 1


def test_symbols_option_and_names() -> None:
    table = _table(records=20_000, symbols=5)
    names = sorted(
        pc.unique(table.column("symbol").combine_chunks().dictionary_decode()).to_pylist()
    )
    assert names == ["SYM000", "SYM001", "SYM002", "SYM003", "SYM004"]
    assert pc.min(table.column("price")).as_py() > 0


def test_readings_have_413_stations_and_orders_ascending_ids() -> None:
    stations = _table("readings", records=200_000).column("station").combine_chunks()
    assert len(stations.dictionary) == 413
    assert len(pc.unique(stations.dictionary_decode())) == 413
    ids = _table("orders", records=1000, batch_size=300).column("order_id").to_pylist()
    assert ids == list(range(1, 1001))


def test_options_given_as_strings_like_sql_with() -> None:
    source = make_generator("market_data", records="1_000", symbols="3", rate="500", seed="1")
    table = pa.Table.from_batches(list(source.batches()))
    assert table.num_rows == 1000
    assert {"bid", "ask", "volume"} <= set(table.schema.names)
    assert pc.all(pc.less_equal(table.column("bid"), table.column("ask"))).as_py()


def test_start_accepts_iso() -> None:
    table = _table(records=1, start="2024-06-01T00:00:00Z")
    assert table.column("timestamp")[0].as_py() == 1_717_200_000_000


@pytest.mark.parametrize(
    ("kind", "opts"),
    [
        ("nope", {}),
        ("trades", {"rate": 0}),
        ("trades", {"records": "many"}),
        ("trades", {"colour": 1}),
    ],
)
def test_bad_options_name_the_key(kind: str, opts: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_generator(kind, **opts)


def test_the_kinds_and_defaults_are_the_declared_ones() -> None:
    assert tuple(KINDS) == options.GENERATOR_KIND.allowed
    made = make_generator().options
    declared = {
        FIELDS[o]: options.get({}, o)
        for o in FIELDS
        if o.default is not None and o is not options.GENERATOR_START
    }
    assert declared == {"records": "1000000", "rate": "100000", "seed": 42}
    assert (made.records, made.rate, made.seed) == (1_000_000, 100_000.0, 42)
    assert made.start_ms == DEFAULT_START_MS == 1_704_067_200_000
    assert (made.symbols, made.batch_size) == (None, DEFAULT_BATCH_SIZE)


def test_every_declared_spelling_is_taken() -> None:
    source = make_generator("readings", stations="7", **{"batch.size": "3"}, start_ms="0")
    assert (source.options.symbols, source.options.batch_size, source.options.start_ms) == (7, 3, 0)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"seed": "x"}, "invalid value 'x' for 'feed.seed': allowed an integer 0 or more"),
        ({"keys": "0"}, "invalid value '0' for 'feed.keys': allowed an integer 1 to 2147483647"),
        ({"records": "lots"}, "invalid value 'lots' for 'feed.records': allowed a number"),
        ({"start": "soon"}, "invalid value 'soon' for 'feed.start': allowed epoch ms or ISO-8601"),
    ],
)
def test_bad_values_name_the_key_as_given(opts: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_generator(name="feed", **opts)
    assert str(info.value) == message
