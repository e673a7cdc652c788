"""Checks, ratios and targets of a suite run; the JSON document and the tables.

Row counts are checked before any rate is trusted: every runner's output
count is compared with what it must be (:func:`check`); a mismatch is shown in
the table next to the rate and the rate is left out of every ratio and target.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flowsql.bench.scenarios import (
    BY_NAME,
    PEER_SCENARIO,
    REFERENCE_DIRECT,
    REFERENCE_V1_PER_CORE,
    REFERENCE_V2_PER_CORE,
)
from flowsql.bench.suite import Result, SuiteRun

OK = "ok"


# ----------------------------------------------------------------- checks


def check(suite: SuiteRun) -> None:
    """Fill ``expected_rows`` and ``check`` of every result."""
    for name in dict.fromkeys(r.scenario for r in suite.results):
        rows = [r for r in suite.results if r.scenario == name]
        for r in rows:
            r.expected_rows = _expected(suite, name, r, rows)
            r.check = _verdict(r)


def _expected(suite: SuiteRun, name: str, r: Result, rows: list[Result]) -> int | None:
    if name == PEER_SCENARIO.name and suite.peer_windows is not None:
        every, closed = suite.peer_windows
        return closed if r.runner == "quix" else every
    direct = _find(rows, "direct")
    ceiling = _find(rows, "ceiling")
    if r.runner == "direct":
        return ceiling.m.rows if ceiling is not None and _valid(ceiling) else None
    if r.runner == "duckdb":
        if ceiling is not None and _valid(ceiling):
            return ceiling.m.groups
        changes = BY_NAME[name].changes
        return direct.m.rows if direct is not None and _valid(direct) and not changes else None
    if r.source == "jsonl" and name in suite.jsonl_rows:
        return suite.jsonl_rows[name]
    return direct.m.rows if direct is not None and _valid(direct) else None


def _verdict(r: Result) -> str:
    if r.m.error:
        return f"ERROR: {r.m.error}"
    if r.expected_rows is None:
        return "unchecked"
    if r.m.rows != r.expected_rows:
        return f"MISMATCH: {r.m.rows:,} rows, expected {r.expected_rows:,}"
    return OK


def _find(rows: list[Result], runner: str, partitions: int | None = None) -> Result | None:
    for r in rows:
        if r.runner == runner and (partitions is None or r.partitions == partitions):
            return r
    return None


def _valid(r: Result | None) -> bool:
    return r is not None and not r.m.error and bool(r.m.seconds)


def rate(r: Result | None) -> float | None:
    """The median rate of a result that passed its check, else None."""
    if r is None or r.check != OK:
        return None
    return r.m.median


# ----------------------------------------------------------------- ratios


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(suite: SuiteRun) -> dict[str, dict[str, float | None]]:
    """Per scenario: V1/direct, V2(p)/V1, efficiency(p), shares of the ceiling,
    DuckDB and the reference engine's figures, and the peers."""
    out: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys(r.scenario for r in suite.results):
        rows = [r for r in suite.results if r.scenario == name]
        direct, v1 = rate(_find(rows, "direct")), rate(_find(rows, "V1"))
        ceiling, duck = rate(_find(rows, "ceiling")), rate(_find(rows, "duckdb"))
        x: dict[str, float | None] = {
            "v1_over_direct": _div(v1, direct),
            "direct_over_ceiling": _div(direct, ceiling),
            "v1_over_ceiling": _div(v1, ceiling),
            "direct_over_duckdb": _div(direct, duck),
            "v1_over_duckdb": _div(v1, duck),
            "v1_over_reference_v1": _div(v1, REFERENCE_V1_PER_CORE),
            "direct_over_reference_direct_high": _div(direct, REFERENCE_DIRECT[1]),
        }
        for r in rows:
            if r.runner == "V2" and r.partitions:
                p, v2 = r.partitions, rate(r)
                x[f"v2x{p}_over_v1"] = _div(v2, v1)
                x[f"v2x{p}_efficiency"] = _div(_div(v2, v1), p)
                x[f"v2x{p}_per_core_over_reference_v2"] = _div(_div(v2, p), REFERENCE_V2_PER_CORE)
            if r.runner in ("quix", "bytewax"):
                x[f"v1_over_{r.runner}"] = _div(v1, rate(r))
                x[f"direct_over_{r.runner}"] = _div(direct, rate(r))
        out[name] = x
    return out


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One target of issues 3 and 4 and what was measured for it."""

    name: str
    wanted: str
    measured: float | None
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wanted": self.wanted,
            "measured": self.measured,
            "met": self.met,
        }


def _target(name: str, wanted: str, value: float | None, threshold: float) -> Target:
    return Target(name, wanted, value, None if value is None else value >= threshold)


def targets(suite: SuiteRun) -> list[Target]:
    """The issue targets this run can judge."""
    opts = suite.options
    x = ratios(suite)
    out: list[Target] = []
    tumbling = [r for r in suite.results if r.scenario == "3a_tumbling"]
    if tumbling and opts.batch_size == 10_000:
        t = x["3a_tumbling"]
        out.append(
            _target("3a direct rec/s (1 core)", ">= 10M", rate(_find(tumbling, "direct")), 10e6)
        )
        out.append(_target("3a direct / ceiling", ">= 0.20", t["direct_over_ceiling"], 0.2))
        if opts.source == "memory":  # from a file V1 also decodes: not comparable
            out.append(_target("3a V1 / direct (memory)", ">= 0.8", t["v1_over_direct"], 0.8))
        out.append(_target(f"3a V2x1 / V1 ({opts.source})", ">= 0.9", t.get("v2x1_over_v1"), 0.9))
        if opts.source == "jsonl":
            out.append(_target("3a V2x2 / V1 (jsonl)", ">= 1.6", t.get("v2x2_over_v1"), 1.6))
    for name, t in x.items():
        if name == PEER_SCENARIO.name:
            continue
        out.append(_target(f"{name} V1 / ref. V1 per core", ">= 10", t["v1_over_reference_v1"], 10))
        for key in sorted(k for k in t if k.endswith("_per_core_over_reference_v2")):
            p = key.split("_")[0]
            out.append(
                _target(f"{name} {p.upper()} per core / ref. V2 per core", ">= 10", t[key], 10)
            )
    if PEER_SCENARIO.name in x:
        t = x[PEER_SCENARIO.name]
        out.append(_target("peers: V1 / Quix Streams", ">= 10", t.get("v1_over_quix"), 10))
        out.append(_target("peers: V1 / Bytewax", ">= 5", t.get("v1_over_bytewax"), 5))
    return out


# ------------------------------------------------------------------- JSON


def to_json(suite: SuiteRun, machine: dict[str, Any]) -> dict[str, Any]:
    """The whole run as a JSON-able document."""
    opts = suite.options
    return {
        "options": {
            "records": opts.records,
            "scenarios": [s.name for s in opts.scenarios],
            "partitions": list(opts.partitions),
            "source": opts.source,
            "peers": opts.peers,
            "repeat": opts.repeat,
            "batch_size": opts.batch_size,
            "peer_records": opts.peer_records,
            "duckdb_threads": opts.duckdb_threads,
        },
        "machine": machine,
        "results": [_result_json(r) for r in suite.results],
        "ratios": ratios(suite),
        "targets": [t.as_dict() for t in targets(suite)],
    }


def _result_json(r: Result) -> dict[str, Any]:
    m = r.m
    return {
        "scenario": r.scenario,
        "runner": r.runner,
        "label": r.label,
        "partitions": r.partitions,
        "source": r.source,
        "records": m.records,
        "seconds": m.seconds,
        "cpu_seconds": m.cpu_seconds,
        "rates": m.rates,
        "cpu_rate": m.cpu_rate,
        "median": m.median,
        "min": m.low,
        "max": m.high,
        "peak_rss_mb": round(m.peak_rss_mb, 1),
        "rss_exact": m.rss_exact,
        "rows": m.rows,
        "expected_rows": r.expected_rows,
        "check": r.check,
        "error": m.error,
        "notes": r.notes,
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


# ----------------------------------------------------------------- tables


def results_table(suite: SuiteRun) -> Table:
    """Every run: rate (median, min-max), peak RSS, rows and their check."""
    table = Table(
        title="flowsql bench: records/s (median of K, min-max); records per CPU-second",
        show_lines=False,
    )
    for col, justify in (
        ("scenario", "left"),
        ("runner", "left"),
        ("rec/s", "right"),
        ("min-max", "right"),
        ("rec/CPU-s", "right"),
        ("peak RSS MB", "right"),
        ("rows", "right"),
        ("check", "left"),
        ("notes", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    last = ""
    for r in suite.results:
        m = r.m
        scenario = r.scenario if r.scenario != last else ""
        last = r.scenario
        ok = r.check == OK
        shown = f"{m.median:,.0f}" if m.seconds else "-"
        table.add_row(
            scenario,
            r.label,
            shown if ok else f"[red]{shown} ✗[/red]",
            f"{human(m.low)}-{human(m.high)}" if m.seconds else "",
            human(m.cpu_rate) if m.cpu_rate else "",
            f"{m.peak_rss_mb:,.0f}" if m.seconds else "",
            f"{m.rows:,}",
            r.check if ok else f"[red]{r.check}[/red]",
            " ".join(r.notes),
        )
    return table


#: Ratio keys shown in the table, with their column headers.
_HEADERS = {
    "v1_over_direct": "V1/direct",
    "v2x1_over_v1": "V2x1/V1",
    "v2x2_over_v1": "V2x2/V1",
    "v2x2_efficiency": "eff x2",
    "v2x4_over_v1": "V2x4/V1",
    "v2x4_efficiency": "eff x4",
    "direct_over_ceiling": "direct/ceil",
    "v1_over_ceiling": "V1/ceil",
    "direct_over_duckdb": "direct/DuckDB",
    "v1_over_reference_v1": "V1/ref V1",
    "v2x2_per_core_over_reference_v2": "V2x2 core/ref",
    "v1_over_quix": "V1/Quix",
    "v1_over_bytewax": "V1/Bytewax",
}


def ratios_table(suite: SuiteRun) -> Table:
    """Overheads, scaling and shares per scenario (all ratios are in the JSON)."""
    x = ratios(suite)
    keys = [k for k in _HEADERS if any(v.get(k) is not None for v in x.values())]
    table = Table(title="ratios (checked runs only)")
    table.add_column("scenario")
    for key in keys:
        table.add_column(_HEADERS[key], justify="right")
    for name, values in x.items():
        table.add_row(name, *(_fmt_ratio(values.get(key)) for key in keys))
    return table


def targets_table(suite: SuiteRun) -> Table:
    table = Table(title="targets (issues 3 and 4)")
    for col in ("target", "wanted", "measured", "met"):
        table.add_column(col)
    for t in targets(suite):
        measured = "-" if t.measured is None else _fmt_ratio(t.measured)
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "n/a"}[t.met]
        table.add_row(t.name, t.wanted, measured, met)
    return table


def print_report(suite: SuiteRun, console: Console) -> None:
    console.print(results_table(suite))
    console.print(ratios_table(suite))
    console.print(targets_table(suite))


def _fmt_ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return human(v) if v >= 1000 else f"{v:.2f}"


def human(v: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def markdown(doc: dict[str, Any]) -> str:
    """The results of a JSON document (:func:`to_json`) as Markdown tables:
    every run, then the ratios."""
    lines = [
        "| scenario | runner | rec/s (median) | min-max | rec/CPU-s | peak RSS MB | rows | check | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in doc["results"]:
        spread = f"{human(r['min'])}-{human(r['max'])}" if r["seconds"] else "-"
        cpu = human(r["cpu_rate"]) if r.get("cpu_rate") else "-"
        lines.append(
            f"| {r['scenario']} | {r['label']} | {r['median']:,.0f} | {spread} | {cpu}"
            f" | {r['peak_rss_mb']:,.0f} | {r['rows']:,} | {r['check']} | {' '.join(r['notes'])} |"
        )
    keys = [k for k in _HEADERS if any(v.get(k) is not None for v in doc["ratios"].values())]
    lines += ["", "| scenario | " + " | ".join(_HEADERS[k] for k in keys) + " |"]
    lines.append("|---|" + "---:|" * len(keys))
    for name, values in doc["ratios"].items():
        cells = " | ".join(_fmt_ratio(values.get(k)) for k in keys)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m flowsql.bench.report RESULTS.json``: print the Markdown tables."""
    args = sys.argv[1:] if argv is None else argv
    print(markdown(json.loads(Path(args[0]).read_text())))


if __name__ == "__main__":
    main()
