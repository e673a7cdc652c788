"""``flowsql bench``: engine direct vs V1 vs V2 over the reference scenarios,
against the numpy ceiling, DuckDB and (``--peers``) Quix Streams and Bytewax."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowsql.bench import machine, report
from flowsql.bench import scenarios as sc
from flowsql.bench.peers import peer_python
from flowsql.bench.plot import have_matplotlib, plot
from flowsql.bench.runners import have_duckdb
from flowsql.bench.suite import BenchOptions, planned_runs, run_suite
from flowsql.cli.errors import fail

log = logging.getLogger(__name__)

BENCH_EXTRA = "pip install 'flowsql[bench]'"
PEERS_EXTRA = "pip install 'flowsql[peers]'"


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the ``flowsql`` app."""
    app.command("bench")(bench)


def bench(
    records: Annotated[int, typer.Option(help="Records per scenario.", min=1)] = 1_000_000,
    scenarios: Annotated[
        str,
        typer.Option(
            help="Comma-separated scenario names or prefixes (default: all): "
            + ", ".join(s.name for s in sc.SCENARIOS)
        ),
    ] = "",
    partitions: Annotated[str, typer.Option(help="V2 partition counts, comma-separated.")] = "1,2",
    source: Annotated[
        str,
        typer.Option(
            help="memory: pre-built batches; jsonl: V1/V2 read a JSONL file (decode included)."
        ),
    ] = "memory",
    peers: Annotated[
        bool,
        typer.Option("--peers", help="Also run Quix Streams and Bytewax on the shared workload."),
    ] = False,
    repeat: Annotated[int, typer.Option(help="Runs per measurement (median reported).", min=1)] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG chart.")] = None,
    batch_size: Annotated[int, typer.Option(help="Micro-batch size.", min=1)] = 10_000,
    peer_records: Annotated[
        int, typer.Option(help="Records for the peer workload (peers are slow).", min=1)
    ] = 100_000,
    peers_python: Annotated[
        str | None,
        typer.Option(
            help="Interpreter with quixstreams and bytewax (default: $FLOWSQL_PEERS_PYTHON,"
            " this one, or ./.venv-peers)."
        ),
    ] = None,
    duckdb_threads: Annotated[int, typer.Option(help="DuckDB threads.", min=1)] = 1,
) -> None:
    """Benchmark flowsql: engine direct, V1 and V2 over the reference scenarios,
    against the numpy ceiling, DuckDB and (--peers) Quix Streams and Bytewax."""
    opts = BenchOptions(
        records=records,
        scenarios=tuple(_scenarios(scenarios)),
        partitions=_partitions(partitions),
        source=_source(source),
        peers=peers,
        repeat=repeat,
        batch_size=batch_size,
        peer_records=peer_records,
        peers_python=_peers_python(peers_python) if peers else peers_python,
        duckdb_threads=duckdb_threads,
    )
    if not have_duckdb():
        _note(f"skipping the DuckDB reference: duckdb is not installed ({BENCH_EXTRA})")
    if plot_path is not None and not have_matplotlib():
        _note(f"skipping the chart: matplotlib is not installed ({BENCH_EXTRA})")
        plot_path = None
    _run(opts, json_path, plot_path)


def _run(opts: BenchOptions, json_path: Path | None, plot_path: Path | None) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    before = machine.describe()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=planned_runs(opts))

        def progress(what: str) -> None:
            if what:
                bar.update(task, description=what)
            else:
                bar.advance(task)

        suite = run_suite(opts, progress)
    report.check(suite)
    info = before | {"load_avg_after": machine.load_avg()}
    console.print(
        f"{info['nproc']} cores, {info['cpu_model']}, {info['ram_gb']} GB;"
        f" load average before {info['load_avg']}, after {info['load_avg_after']}"
    )
    report.print_report(suite, console)
    if json_path is not None:
        report.write_json(report.to_json(suite, info), json_path)
        console.print(f"JSON: {json_path}")
    if plot_path is not None:
        plot(suite, plot_path)
        console.print(f"chart: {plot_path}")


def _peers_python(explicit: str | None) -> str:
    """The interpreter that runs Quix Streams and Bytewax, or exit 2 naming the extra."""
    python = peer_python(explicit)
    if python is None:
        fail(f"--peers needs Quix Streams and Bytewax: {PEERS_EXTRA} (or --peers-python PATH)")
    return python


def _note(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


def _scenarios(names: str) -> list[sc.Scenario]:
    try:
        return sc.select(names)
    except KeyError as exc:
        known = ", ".join(s.name for s in sc.SCENARIOS)
        fail(f"unknown scenario {exc.args[0]}; known: {known}")


def _partitions(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        fail(f"--partitions {text!r}: expected counts like 1,2,4")
    if not counts or min(counts) < 1:
        fail(f"--partitions {text!r}: expected counts >= 1 like 1,2,4")
    return counts


def _source(text: str) -> str:
    if text not in ("memory", "jsonl"):
        fail(f"--source {text!r}: expected memory or jsonl")
    return text
