"""The benchmarks still run and still check correctness (not timed: figures live in bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # runs the benchmarks (and git worktrees)

ROOT = REPO


def run_module(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_hotpath_benchmark_runs_and_verifies(tmp_path: Path) -> None:
    report = tmp_path / "not-yet" / "hotpath.json"  # like bench/results/ in a fresh clone
    out = run_module("bench.bench_hotpath", "--lines", "20000", "--repeat", "1", "--json", str(report))
    assert "full / sdk-reference" in out
    result = json.loads(report.read_text())
    assert result["verified"] and result["lines"] == 20000 and result["stages"]["full"]["lines_per_s"] > 0


def test_spool_benchmark_runs() -> None:
    out = run_module("bench.bench_spool", "--lines", "20000", "--repeat", "1")
    assert "append fsync_ms=200" in out


def test_everyday_benchmark_runs() -> None:
    out = run_module("bench.bench_everyday", "--rounds", "1", "--seconds", "2")
    assert "this tree: median" in out


def test_hotpath_benchmark_compares_against_a_commit() -> None:
    try:
        out = run_module("bench.bench_hotpath", "--against", "HEAD", "--rounds", "1", "--repeat", "1", "--lines", "5000")
        assert "this tree / HEAD: median" in out
    finally:
        for tree in (ROOT / "bench" / ".work" / "hotpath").glob("tree-*"):
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


@pytest.mark.e2e  # Debian's rsyslogd in front of the agent
def test_kill9_benchmark_runs_and_checks_its_promises() -> None:
    # RELP only: tests/e2e/test_relp_e2e.py runs both transports through the same tests/support/kill9.py.
    out = run_module("bench.bench_kill9", "--repeat", "1", "--transport", "relp", "--lines", "4000",
                     "--seconds", "1", "--kill-at", "0.5", "--down", "1")
    assert "| relp | 1 | 0 |" in out and "relp: lost median 0 " in out


def test_multiline_benchmark_runs_and_checks_each_trace_is_one_log() -> None:
    out = run_module("bench.bench_multiline", "--lines", "20000", "--repeat", "1")
    assert "java" in out
