"""The PNG chart: records/s per scenario and runner (log scale), with the
reference engine's per-core figure as a line."""

from __future__ import annotations

from pathlib import Path

from flowsql.bench.report import rate
from flowsql.bench.scenarios import REFERENCE_V1_PER_CORE
from flowsql.bench.suite import SuiteRun


def have_matplotlib() -> bool:
    """Whether matplotlib (the 'bench' extra) imports; without it there is no chart."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(suite: SuiteRun, path: Path) -> Path:
    """Draw the checked rates of ``suite`` as grouped bars into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in suite.results))
    labels = list(dict.fromkeys(r.label for r in suite.results))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(scenarios)), 5.0))
    for i, label in enumerate(labels):
        xs, ys = [], []
        for j, name in enumerate(scenarios):
            r = next((r for r in suite.results if r.scenario == name and r.label == label), None)
            value = rate(r)
            if value:
                xs.append(j + (i - (len(labels) - 1) / 2) * width)
                ys.append(value)
        ax.bar(xs, ys, width, label=label)
    ax.axhline(REFERENCE_V1_PER_CORE, color="black", linestyle="--", linewidth=1)
    ax.text(-0.4, REFERENCE_V1_PER_CORE * 1.1, "reference engine, 1 core", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("records/s (median)")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=20, ha="right")
    opts = suite.options
    ax.set_title(
        f"flowsql bench: {opts.records:,} records, batch {opts.batch_size:,}, source {opts.source}"
    )
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
