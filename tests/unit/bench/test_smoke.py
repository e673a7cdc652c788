"""Smoke test of ``flowsql bench``: every scenario on a few thousand records
through the real bench code paths. No timing assertions: only that direct, V1,
V2, the ceiling and DuckDB agree on row counts, and the outputs' shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowsql.bench import report, scenarios
from flowsql.bench.suite import BenchOptions, SuiteRun, planned_runs, run_suite

RECORDS = 3_000
BATCH = 500  # several micro-batches per run


@pytest.fixture(scope="module")
def memory_run() -> SuiteRun:
    opts = BenchOptions(
        records=RECORDS,
        scenarios=scenarios.SCENARIOS,
        partitions=(1, 2),
        repeat=1,
        batch_size=BATCH,
    )
    calls: list[str] = []
    suite = run_suite(opts, calls.append)
    assert calls.count("") == planned_runs(opts)
    report.check(suite)
    return suite


def test_every_scenario_runs_on_every_runner(memory_run: SuiteRun) -> None:
    labels = {"direct", "V1", "V2x1", "V2x2", "ceiling", "duckdb"}
    for s in scenarios.SCENARIOS:
        got = {r.label for r in memory_run.results if r.scenario == s.name}
        assert got == labels, s.name


@pytest.mark.parametrize("scenario", [s.name for s in scenarios.SCENARIOS])
def test_row_counts_agree(memory_run: SuiteRun, scenario: str) -> None:
    rows = [r for r in memory_run.results if r.scenario == scenario]
    assert all(r.m.error is None for r in rows), [r.m.error for r in rows]
    assert [r.check for r in rows] == [report.OK] * len(rows), [(r.label, r.check) for r in rows]
    streaming = {r.label: r.m.rows for r in rows if r.runner != "duckdb"}
    assert len(set(streaming.values())) == 1, streaming
    assert all(r.m.rows > 0 for r in rows)


def test_json_shape(memory_run: SuiteRun, tmp_path: Path) -> None:
    doc = report.to_json(memory_run, {"nproc": 2})
    path = tmp_path / "bench.json"
    report.write_json(doc, path)
    loaded = json.loads(path.read_text())
    assert set(loaded) == {"options", "machine", "results", "ratios", "targets"}
    assert loaded["options"]["records"] == RECORDS
    first = loaded["results"][0]
    for key in ("scenario", "runner", "label", "partitions", "source", "records", "seconds"):
        assert key in first
    for key in ("rates", "median", "min", "max", "cpu_seconds", "cpu_rate", "peak_rss_mb"):
        assert key in first
    for key in ("rows", "expected_rows", "check", "notes"):
        assert key in first
    assert first["cpu_rate"] > 0
    assert len(first["seconds"]) == 1 and first["median"] > 0 and first["peak_rss_mb"] > 0
    assert set(loaded["ratios"]) == {s.name for s in scenarios.SCENARIOS}
    assert "v1_over_direct" in loaded["ratios"]["3a_tumbling"]
    assert "v2x2_efficiency" in loaded["ratios"]["3a_tumbling"]
    assert all({"name", "wanted", "measured", "met"} == set(t) for t in loaded["targets"])


def test_tables_and_markdown(memory_run: SuiteRun) -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    report.print_report(memory_run, console)
    text = console.export_text()
    assert "3a_tumbling" in text and "V2x2" in text and "targets" in text
    md = report.markdown(report.to_json(memory_run, {}))
    assert md.count("| 3a_tumbling |") == 7  # six runs and the ratios row


@pytest.mark.parametrize("scenario", ["0_select", "3a_tumbling", "6_1brc", "1_rows_window"])
def test_jsonl_source_agrees(scenario: str) -> None:
    opts = BenchOptions(
        records=RECORDS,
        scenarios=(scenarios.BY_NAME[scenario],),
        partitions=(2,),
        source="jsonl",
        repeat=1,
        batch_size=BATCH,
    )
    suite = run_suite(opts)
    report.check(suite)
    checks = {r.label: r.check for r in suite.results}
    assert set(checks) == {"direct", "V1 (jsonl)", "V2x2 (jsonl)", "ceiling", "duckdb"}
    assert set(checks.values()) == {report.OK}, checks


def test_mismatch_is_flagged(memory_run: SuiteRun) -> None:
    suite = SuiteRun(memory_run.options, results=list(memory_run.results))
    tampered = next(r for r in suite.results if r.label == "V1" and r.scenario == "3a_tumbling")
    original = tampered.m.rows
    tampered.m.rows += 1
    try:
        report.check(suite)
        assert tampered.check.startswith("MISMATCH")
        assert report.rate(tampered) is None
        assert report.ratios(suite)["3a_tumbling"]["v1_over_direct"] is None
    finally:
        tampered.m.rows = original
        report.check(suite)


def test_cli_writes_json_and_png(tmp_path: Path) -> None:
    from flowsql.cli import _register, app

    _register()
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    args = ["bench", "--records", "2000", "--scenarios", "3a,0", "--partitions", "1"]
    args += ["--repeat", "1", "--batch-size", "500", "--json", str(out), "--plot", str(png)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [r["label"] for r in doc["results"]][:3] == ["direct", "V1", "V2x1"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets" in result.output


def test_cli_rejects_bad_options() -> None:
    from flowsql.cli import _register, app

    _register()
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "--scenarios", "9_nope"])
    assert bad.exit_code == 2 and "unknown scenario" in bad.output
    bad = runner.invoke(app, ["bench", "--partitions", "0"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["bench", "--source", "kafka"])
    assert bad.exit_code == 2
