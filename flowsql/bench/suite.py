"""``run_suite``: every selected scenario through every runner, on the same data.

Per scenario: generate the data once (not timed); run **direct**, **V1**, **V2**
at each partition count (from memory, or from a JSONL file written once with
``source="jsonl"``), the numpy **ceiling** and **DuckDB** (when installed); with ``peers``, the
shared filter + tumbling workload on flowsql, Quix Streams and Bytewax. Row
counts are checked afterwards (:mod:`flowsql.bench.report`).
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowsql.bench import data, peers, runners
from flowsql.bench.measure import Measurement, measure_once
from flowsql.bench.scenarios import PEER_MIN_QUANTITY, PEER_SCENARIO, Scenario
from flowsql.engine import DEFAULT_BATCH_SIZE, Engine
from flowsql.plan.nodes import Statement

log = logging.getLogger(__name__)

#: Called with a description before each timed run, and with "" after it.
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What ``flowsql bench`` runs (see the command's help)."""

    records: int = 1_000_000
    scenarios: tuple[Scenario, ...] = ()
    partitions: tuple[int, ...] = (1, 2)
    source: str = "memory"
    peers: bool = False
    repeat: int = 3
    batch_size: int = DEFAULT_BATCH_SIZE
    peer_records: int = 100_000
    peers_python: str | None = None
    peer_timeout_s: float = 1800.0
    duckdb_threads: int = 1
    workdir: Path | None = None


@dataclass
class Result:
    """One runner on one scenario."""

    scenario: str
    runner: str  # direct | V1 | V2 | ceiling | duckdb | quix | bytewax
    source: str  # memory | jsonl
    m: Measurement
    partitions: int | None = None
    expected_rows: int | None = None  # filled by report.check
    check: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        base = f"V2x{self.partitions}" if self.runner == "V2" else self.runner
        return f"{base} ({self.source})" if self.source == "jsonl" else base


@dataclass
class SuiteRun:
    """Everything measured, plus what the checks need."""

    options: BenchOptions
    results: list[Result] = field(default_factory=list)
    #: per scenario: rows of a reference run over the JSONL source's own batches
    jsonl_rows: dict[str, int] = field(default_factory=dict)
    #: peer workload: windows in total and windows closed before the input ended
    peer_windows: tuple[int, int] | None = None
    records: dict[str, int] = field(default_factory=dict)


def planned_runs(opts: BenchOptions) -> int:
    """How many timed runs ``run_suite`` will make (for the progress bar)."""
    fixed = 4 if runners.have_duckdb() else 3  # direct, V1, ceiling and DuckDB
    per_scenario = (fixed + len(opts.partitions)) * opts.repeat
    total = per_scenario * len(opts.scenarios)
    if opts.peers:
        total += 4 * opts.repeat
    return total


def run_suite(opts: BenchOptions, progress: Progress | None = None) -> SuiteRun:
    """Run every scenario of ``opts``; return the raw results."""
    say = progress or (lambda _: None)
    suite = SuiteRun(opts)
    say("loading modules")
    warm_up()
    with tempfile.TemporaryDirectory(prefix="flowsql-bench-", dir=opts.workdir) as tmp:
        for scenario in opts.scenarios:
            _run_scenario(suite, scenario, Path(tmp), say)
        if opts.peers:
            _run_peers(suite, Path(tmp), say)
    return suite


def warm_up() -> None:
    """Import what the runners use, so no timed run pays for a first import."""
    for module in (
        "polars",
        "msgspec",
        "flowsql.sql",
        "flowsql.connectors.files",
        "flowsql.connectors.jsonl",
        "flowsql.connectors.memory",
        "flowsql.runtime.coordinator",
        "flowsql.runtime.runner",
        "flowsql.runtime.splits",
    ):
        importlib.import_module(module)
    runners.have_duckdb()  # imports DuckDB when the 'bench' extra is installed


@dataclass
class _Planned:
    """A runner to measure: its result (filled in place) and its run."""

    result: Result
    run: runners.Run
    info: runners.JobRun | None = None


def _run_scenario(suite: SuiteRun, scenario: Scenario, tmp: Path, say: Progress) -> None:
    opts = suite.options
    say(f"{scenario.name}: generating {opts.records:,} {scenario.kind}")
    batches = data.generate(scenario.kind, opts.records, opts.batch_size)
    suite.records[scenario.name] = opts.records
    statement = runners.parse(scenario.sql)
    if opts.source == "jsonl":
        say(f"{scenario.name}: writing JSONL")
        path = data.write_jsonl(batches, tmp / f"{scenario.kind}.jsonl")
        source = runners.jsonl_source(scenario.kind, path, opts.batch_size)
        suite.jsonl_rows[scenario.name] = _reference_rows(statement, source)
    else:
        source = runners.memory_source(scenario.kind, batches, opts.batch_size)
    plan = [_plan(scenario.name, "direct", "memory", runners.direct(statement, batches))]
    plan += _plan_jobs(scenario.name, statement, source, opts)
    plan.append(_plan(scenario.name, "ceiling", "memory", runners.numpy_ceiling(scenario, batches)))
    if runners.have_duckdb():
        duck = runners.duckdb_batch(scenario, batches, opts.duckdb_threads)
        plan.append(_plan(scenario.name, "duckdb", "memory", duck))
    _measure_interleaved(suite, plan, opts.records, opts.repeat, say)


def _plan(
    scenario: str,
    runner: str,
    source: str,
    run: runners.Run,
    partitions: int | None = None,
    info: runners.JobRun | None = None,
) -> _Planned:
    return _Planned(Result(scenario, runner, source, Measurement(0), partitions), run, info)


def _plan_jobs(
    scenario: str, statement: Statement, source: Callable[[], Any], opts: BenchOptions
) -> list[_Planned]:
    info = runners.JobRun()
    v1 = runners.job(statement, source, runners.v1(statement), info)
    plan = [_plan(scenario, "V1", opts.source, v1, info=info)]
    for p in opts.partitions:
        info = runners.JobRun()
        v2 = runners.job(statement, source, runners.v2(statement, p), info)
        plan.append(_plan(scenario, "V2", opts.source, v2, partitions=p, info=info))
    return plan


def _measure_interleaved(
    suite: SuiteRun, plan: list[_Planned], records: int, repeat: int, say: Progress
) -> None:
    """Run every planned runner once per round, ``repeat`` rounds: each runner
    sees the same spread of machine load (other processes come and go)."""
    for p in plan:
        p.result.m = Measurement(records)
    for round_ in range(max(1, repeat)):
        for p in plan:
            r = p.result
            say(f"{r.scenario}: {r.label} ({r.source}) run {round_ + 1}/{repeat}")
            if r.m.error is None:
                try:
                    measure_once(p.run, r.m)
                except Exception as exc:  # a failing runner is reported, not fatal
                    log.debug("%s: %s failed", r.scenario, r.label, exc_info=True)
                    r.m.error = f"{type(exc).__name__}: {exc}"
            say("")
    for p in plan:
        if p.info is not None and p.info.path:
            p.result.notes.append(f"path={p.info.path}")
            if p.result.runner == "V2":
                p.result.notes.append(f"startup={p.info.startup_s:.2f}s")
        suite.results.append(p.result)


def _reference_rows(statement: Statement, source: Callable[[], Any]) -> int:
    """Rows of one engine over the JSONL source's own batches (not timed): what
    V1 and V2 must produce from the file (EMIT CHANGES depends on batching)."""
    engine = Engine(statement)
    src = source()
    rows = sum(o.num_rows for b in src.batches() for o in engine.process(b))
    return rows + sum(o.num_rows for o in engine.flush())


# ------------------------------------------------------------------ peers


def _run_peers(suite: SuiteRun, tmp: Path, say: Progress) -> None:
    opts = suite.options
    scenario = PEER_SCENARIO
    n = min(opts.records, opts.peer_records)
    say(f"{scenario.name}: generating {n:,} trades")
    batches = data.generate(scenario.kind, n, opts.batch_size)
    suite.records[scenario.name] = n
    suite.peer_windows = peer_windows(batches)
    statement = runners.parse(scenario.sql)
    source = runners.memory_source(scenario.kind, batches, opts.batch_size)
    v1 = runners.job(statement, source, runners.v1(statement), runners.JobRun())
    plan = [
        _plan(scenario.name, "direct", "memory", runners.direct(statement, batches)),
        _plan(scenario.name, "V1", "memory", v1),
    ]
    _measure_interleaved(suite, plan, n, opts.repeat, say)
    python = peers.peer_python(opts.peers_python)
    path = peers.write_records(data.as_table(batches), tmp / "peers.arrow")
    for engine in peers.ENGINES:
        say(f"{scenario.name}: {engine}")
        report = (
            peers.run_peer(
                python,
                engine,
                path,
                repeat=opts.repeat,
                batch_size=opts.batch_size,
                timeout=opts.peer_timeout_s,
            )
            if python
            else {"error": "quixstreams/bytewax not importable: see --peers-python"}
        )
        suite.results.append(_peer_result(scenario.name, engine, n, report))
        for _ in range(opts.repeat):
            say("")


def _peer_result(scenario: str, engine: str, records: int, report: dict[str, Any]) -> Result:
    m = Measurement(records)
    if "error" in report:
        m.error = str(report["error"])
    else:
        m.seconds = [float(s) for s in report["seconds"]]
        m.rows = int(report["rows"])
        m.peak_rss_mb = float(report["peak_rss_mb"])
    result = Result(scenario, engine, "memory", m)
    if "version" in report:
        result.notes.append(str(report["version"]))
    return result


def peer_windows(batches: list[pa.RecordBatch]) -> tuple[int, int]:
    """(all windows, windows closed by the input itself) of the peer workload:
    distinct (symbol, 1 s window) among rows with ``quantity > 100``; closed
    when the largest event time of those rows reached the window's end."""
    table = data.as_table(batches)
    keep = table.column("quantity").to_numpy() > PEER_MIN_QUANTITY
    codes = table.column("symbol").combine_chunks().indices.to_numpy()[keep].astype(np.int64)
    ts = table.column("timestamp").to_numpy()[keep]
    if not len(ts):
        return 0, 0
    window = ts // 1000
    pairs = np.unique(window * (int(codes.max()) + 1) + codes)
    ends = (pairs // (int(codes.max()) + 1) + 1) * 1000
    return len(pairs), int(np.count_nonzero(ends <= ts.max()))
