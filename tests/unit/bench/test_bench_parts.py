"""The bench's parts: ceiling kernels agree with the engine, scenario
selection, peak memory, the peer workload's expected windows, peers."""

from __future__ import annotations

import numpy as np
import pytest

from flowsql.bench import ceiling, data, measure, peers, scenarios, suite
from flowsql.engine import Engine

ALL = (*scenarios.SCENARIOS, scenarios.PEER_SCENARIO)


def _engine_rows(sql: str, batches: list) -> int:
    engine = Engine(sql)
    rows = sum(o.num_rows for b in batches for o in engine.process(b))
    return rows + sum(o.num_rows for o in engine.flush())


@pytest.mark.parametrize("rate", [100_000.0, 1000.0, 3.0])  # sessions break at low rates
@pytest.mark.parametrize("scenario", ALL, ids=lambda s: s.name)
def test_ceiling_emits_what_the_engine_emits(scenario: scenarios.Scenario, rate: float) -> None:
    from flowsql.connectors.generator import make_generator

    source = make_generator(scenario.kind, records=4_000, rate=rate, batch_size=700)
    batches = list(source.batches())
    arrays, keys = ceiling.encode(batches, scenario.ceiling)
    rows, groups = ceiling.KERNELS[scenario.ceiling](arrays, keys)
    assert rows == _engine_rows(scenario.sql, batches)
    assert (groups == rows) != scenario.changes or rows == groups


def test_rows_window_ceiling_computes_the_moving_average() -> None:
    scenario = scenarios.BY_NAME["1_rows_window"]
    batches = data.generate(scenario.kind, 5_000, 300)
    arrays, keys = ceiling.encode(batches, scenario.ceiling)
    captured: list[np.ndarray] = []
    ceiling.rows_window(arrays, keys, sink=captured)
    mine = np.concatenate(captured)
    engine = Engine(scenario.sql)
    ref = np.concatenate(
        [o.column("moving_avg").to_numpy() for b in batches for o in engine.process(b)]
    )
    np.testing.assert_allclose(mine, ref, rtol=1e-9)


def test_select_scenarios_by_name_and_prefix() -> None:
    assert [s.name for s in scenarios.select("3a,6")] == ["3a_tumbling", "6_1brc"]
    assert scenarios.select("") == list(scenarios.SCENARIOS)
    assert [s.name for s in scenarios.select(["0_select"])] == ["0_select"]
    with pytest.raises(KeyError, match="nope"):
        scenarios.select("3a,nope")


def test_peak_memory_sees_an_allocation() -> None:
    with measure.PeakMemory() as small:
        pass
    with measure.PeakMemory() as big:
        block = np.ones(40_000_000 // 8)
        del block
    assert small.peak_mb > 0
    if small.exact and big.exact:
        assert big.peak_mb > small.peak_mb + 20


def test_descendants_lists_a_child_process() -> None:
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in measure.descendants(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_measure_keeps_every_run() -> None:
    runs = iter([measure.Outcome(0.5, 3), measure.Outcome(0.25, 3), measure.Outcome(1.0, 3)])
    m = measure.measure(lambda: next(runs), records=100, repeat=3)
    assert m.rates == [200.0, 400.0, 100.0]
    assert (m.median, m.low, m.high, m.rows) == (200.0, 100.0, 400.0, 3)


def test_peer_windows_counts_closed_windows() -> None:
    batches = data.generate("trades", 150_000, 10_000)  # 1.5 s of event time
    every, closed = suite.peer_windows(batches)
    assert every == _engine_rows(scenarios.PEER_SCENARIO.sql, batches)
    assert closed < every  # the last second is still open when the input ends


def test_peers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    python = peers.peer_python()
    if python is None:
        pytest.skip("quixstreams and bytewax are not installed (the `peers` extra)")
    batches = data.generate("trades", 120_000, 10_000)
    path = peers.write_records(data.as_table(batches), tmp_path / "p.arrow")
    every, closed = suite.peer_windows(batches)
    for engine, expected in (("quix", closed), ("bytewax", every)):
        got = peers.run_peer(python, engine, path, repeat=1, batch_size=10_000, timeout=600)
        assert "error" not in got, got
        assert got["rows"] == expected, engine
