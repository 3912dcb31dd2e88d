"""The everyday rate, A/B: this tree's agent against another commit's, in alternating runs.

    python -m bench.bench_everyday [--against REV] [--rounds 3] [--seconds 20] [--rate 1000]

Each run is what ``bench_e2e``'s everyday part does (the default config, spool on, one write per
line, the agent pinned to core 0, sender and stand-in on core 1), but the agent's CPU is read from
``/proc/PID/task/*/schedstat`` (nanoseconds) instead of ``/proc/PID/stat`` (10 ms ticks), so that
20 s resolve small differences. With ``--against REV`` the rounds alternate between REV (checked out
with ``git worktree`` under ``bench/.work/``, run as ``python -m agent`` from there) and this tree,
so both see the same host load; quote the paired medians. The machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import bench_e2e as e2e
from bench.corpus import build_corpus

WORK = Path(__file__).resolve().parent / ".work" / "everyday"


def agent_cpu_percent(tree: Path, workdir: Path, corpus: Path, rate: float, seconds: float) -> dict:
    procs = e2e.Procs()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        standin = e2e.Standin(procs, workdir)
        here = e2e.REPO
        e2e.REPO = tree  # the agent runs as `python -m agent` from that tree
        try:
            agent, port = e2e.start_agent(procs, workdir, standin, linger_ms=None)
        finally:
            e2e.REPO = here
        sender = e2e.start_sender(procs, port, corpus, "--mode", "paced", "--rate", str(rate), "--seconds", str(seconds))
        time.sleep(1.0)  # start-up is not the everyday rate
        t0, cpu0 = time.monotonic(), e2e.sched_seconds(agent.pid)[0]
        sender.stdin.write("go\n")
        sender.stdin.flush()
        e2e.sender_result(procs, sender, timeout=seconds + 60)
        t1, cpu1 = time.monotonic(), e2e.sched_seconds(agent.pid)[0]
        rss_mb = e2e.proc_status_kb(agent.pid, "VmHWM") / 1024
        e2e.stop_agent(procs, agent, workdir)
        standin.close(procs)
        return {"cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "peak_rss_mb": rss_mb}
    finally:
        procs.stop_all()


def worktree(rev: str, work: Path = WORK) -> Path:
    """REV checked out (detached) under ``work``; named by its commit, so a moved HEAD or branch
    gets a fresh checkout and an unchanged one is reused."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=e2e.REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    where = work / f"tree-{commit[:12]}"
    if not (where / "agent").is_dir():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(where), rev], cwd=e2e.REPO, check=True,
                       capture_output=True)
    return where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_everyday", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="REV", help="a commit to compare with, in alternating runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args(argv)
    e2e.slsfwd_command = lambda: [sys.executable, "-m", "agent"]
    WORK.mkdir(parents=True, exist_ok=True)
    corpus = WORK / "corpus.bin"
    corpus.write_bytes(build_corpus(int(args.rate * (args.seconds + 5))))
    trees = {"this tree": e2e.REPO}
    if args.against:
        trees = {args.against: worktree(args.against), **trees}
    results: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            res = agent_cpu_percent(tree, WORK / "run", corpus, args.rate, args.seconds)
            results[name].append(res["cpu_pct"])
            print(f"round {r + 1}: {name:>12}: {res['cpu_pct']:.3f} % of a core "
                  f"(peak RSS {res['peak_rss_mb']:.1f} MB)", flush=True)
    for name, values in results.items():
        print(f"{name:>12}: median {statistics.median(values):.3f} % ({', '.join(f'{v:.3f}' for v in values)})")
    if args.against:
        base, new = (statistics.median(v) for v in results.values())
        print(f"this tree / {args.against}: {new / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
