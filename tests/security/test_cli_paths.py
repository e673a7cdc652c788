"""``flowsql run`` never destroys its inputs and leaves no temporary files (issue 9).

An output or dead-letter file that names an input (or the other output) is
refused before anything runs (exit 2), so is a missing or read-only output
directory; a run stopped by SIGTERM or SIGINT deletes its temporary files and
exits 143 or 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FLOWSQL = str(Path(sys.executable).with_name("flowsql"))
QUERY = "SELECT symbol, price FROM trades WHERE price > 0"
TRADES = "".join(json.dumps({"symbol": f"S{i % 3}", "price": 1.0 + i}) + "\n" for i in range(50))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "q.sql").write_text(QUERY)
    (tmp_path / "in.jsonl").write_text(TRADES)
    return tmp_path


def flowsql(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWSQL, "run", "q.sql", *args], cwd=work, capture_output=True, text=True, timeout=120
    )


def _untouched(work: Path, *expected: str) -> None:
    assert (work / "in.jsonl").read_text() == TRADES
    assert sorted(p.name for p in work.iterdir()) == sorted(["q.sql", "in.jsonl", *expected])


def test_dlq_naming_the_input_is_refused(work: Path) -> None:
    done = flowsql(work, "-i", "in.jsonl", "--dlq", "in.jsonl", "-o", "out.jsonl")
    assert done.returncode == 2, done.stderr
    assert "--dlq and input 'trades' are the same file" in done.stderr
    _untouched(work)


def test_output_naming_the_input_is_refused(work: Path) -> None:
    done = flowsql(work, "-i", "in.jsonl", "-o", "./in.jsonl")
    assert done.returncode == 2, done.stderr
    assert "--output and input 'trades' are the same file" in done.stderr
    _untouched(work)


def test_dlq_naming_the_output_is_refused(work: Path) -> None:
    done = flowsql(work, "-i", "in.jsonl", "-o", "out.jsonl", "--dlq", "out.jsonl")
    assert done.returncode == 2, done.stderr
    assert "--dlq and --output are the same file" in done.stderr
    _untouched(work)


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_links_to_the_input_are_refused(work: Path, link: str) -> None:
    alias = work / "alias.jsonl"
    if link == "hard":
        os.link(work / "in.jsonl", alias)
    else:
        alias.symlink_to(work / "in.jsonl")
    for args in (("-o", "alias.jsonl"), ("-o", "out.jsonl", "--dlq", "alias.jsonl")):
        done = flowsql(work, "-i", "in.jsonl", *args)
        assert done.returncode == 2, done.stderr
        assert "are the same file" in done.stderr
        _untouched(work, "alias.jsonl")


def test_output_over_the_sql_file_is_refused(work: Path) -> None:
    (work / "q.sql").rename(work / "app.jsonl")
    done = subprocess.run(
        [FLOWSQL, "run", "app.jsonl", "-i", "in.jsonl", "-o", "app.jsonl"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "--output and the SQL file are the same file" in done.stderr
    assert (work / "app.jsonl").read_text() == QUERY


def test_missing_output_directory_fails_before_running(work: Path) -> None:
    for args in (("-o", "nope/out.jsonl"), ("-o", "out.jsonl", "--dlq", "nope/dlq.jsonl")):
        done = flowsql(work, "-i", "in.jsonl", *args)
        assert done.returncode == 2, done.stderr
        assert "output directory does not exist: nope" in done.stderr
        assert "records in" not in done.stderr  # nothing ran
        _untouched(work)


def test_declared_sink_in_a_missing_directory_fails_before_running(work: Path) -> None:
    (work / "q.sql").write_text(
        f"CREATE STREAM out AS {QUERY}"
        " WITH ('out.type' = 'file_sink', 'out.path' = 'nope/out.jsonl')"
    )
    done = flowsql(work, "-i", "in.jsonl")
    assert done.returncode == 2, done.stderr
    assert "'out.path': output directory does not exist" in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory")
def test_read_only_output_directory_fails_before_running(work: Path) -> None:
    (work / "ro").mkdir(mode=0o555)
    done = flowsql(work, "-i", "in.jsonl", "-o", "ro/out.jsonl")
    assert done.returncode == 2, done.stderr
    assert "not writable" in done.stderr


def test_dlq_with_a_python_name_is_refused(work: Path) -> None:
    done = flowsql(work, "-i", "in.jsonl", "-o", "out.jsonl", "--dlq", "sitecustomize.py")
    assert done.returncode == 2, done.stderr
    assert "'--dlq'" in done.stderr and ".py" in done.stderr
    _untouched(work)


def test_distinct_files_still_run(work: Path) -> None:
    done = flowsql(work, "-i", "in.jsonl", "-o", "out.jsonl", "--dlq", "dlq.jsonl")
    assert done.returncode == 0, done.stderr
    assert len((work / "out.jsonl").read_text().splitlines()) == 50
    _untouched(work, "out.jsonl", "dlq.jsonl")


@pytest.mark.parametrize(
    ("processor", "signum", "code"),
    [("v1", signal.SIGTERM, 143), ("v2", signal.SIGTERM, 143), ("v1", signal.SIGINT, 130)],
)
def test_a_killed_run_leaves_no_temporary_files(
    work: Path, processor: str, signum: int, code: int
) -> None:
    run = subprocess.Popen(
        [FLOWSQL, "run", "q.sql", "-i", "trades=generator:records=500000000", "-o", "out.jsonl"]
        + ["--processor", processor, "--partitions", "2"],
        cwd=work,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in work.iterdir()):
            assert run.poll() is None and time.monotonic() < deadline, "no output started"
            time.sleep(0.02)
        run.send_signal(signum)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == code, stderr
    assert "unfinished output removed" in stderr
    assert sorted(p.name for p in work.iterdir()) == ["in.jsonl", "q.sql"]
