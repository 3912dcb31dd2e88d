"""How long a burst of rejected logs stalls the event loop, this tree against another commit.

    python -m bench.bench_deadletter_stall [--against REV] [--logs 512] [--old-files 50] [--repeat 3]

A shipper whose every PutLogs answer is a non-retriable 400 (``InvalidKey``) gets one
batch of ``--logs`` logs: it bisects the batch down to single logs and dead-letters each one,
which is the worst burst the error table can produce. The dead-letter directory already holds
``--old-files`` files, as after many restarts. Meanwhile a probe sleeps 1 ms at a time on the
same loop and records how late it wakes: that lateness is what receiving and shipping would
wait. Reported: the probe's worst and 99th-percentile lateness, and the loop time lost in wakes
more than 5 ms late. The dead-letter directory lives under ``bench/.work/`` (the repository's
disk, so the fsyncs are real). With ``--against REV`` the same measurement runs on REV's
``agent`` package (``git archive`` under ``bench/.work/``), alternating with this tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "deadletter"


async def _measure(n_logs: int, old_files: int, directory: Path) -> dict:
    from agent.output.deadletter import DeadLetters
    from agent.output.errors import ShipError
    from agent.output.sdk import log_group_raw_class
    from agent.output.ship import Shipper
    from agent.pipeline.batch import Destination
    from agent.pipeline.encode import encode_log

    log_group_raw_class()  # loaded at start in the agent (signing), so not part of the stall

    class Rejecting:
        async def put(self, dest, source, tags, logs) -> None:
            await asyncio.sleep(0)  # an answer takes at least a loop turn
            raise ShipError("InvalidKey", "rejected", status=400)

        async def close(self) -> None:
            return None

    for i in range(old_files):
        (directory / f"dead-letter-{1700000000 + i}-1.jsonl").write_bytes(b'{"reason": "old"}\n' * 100)
    shipper = Shipper(Rejecting(), tags=[], max_in_flight=4, dead_letters=DeadLetters(directory, 10**12))
    logs = [encode_log(int(time.time()), [("msg", f"rejected {i} ".encode() * 8)]) for i in range(n_logs)]
    lateness: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            lateness.append(loop.time() - before - 0.001)

    probing = asyncio.get_running_loop().create_task(probe())
    started = time.perf_counter()
    await shipper._deliver(Destination("p", "l", ""), "10.0.0.1", logs)
    elapsed = time.perf_counter() - started
    done.set()
    await probing
    written = sum(p.read_bytes().count(b"\n") for p in directory.glob("dead-letter-*.jsonl")) - old_files * 100
    lateness.sort()
    return {
        "dead_lettered": written,
        "seconds": elapsed,
        "max_ms": lateness[-1] * 1000,
        "p99_ms": lateness[int(len(lateness) * 0.99)] * 1000,
        "stalled_ms": sum(x for x in lateness if x > 0.005) * 1000,
    }


def _run_tree(tree: Path, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(dir=WORK) as directory:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--measure", "--logs", str(args.logs),
             "--old-files", str(args.old_files), "--directory", directory],
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True,
        )
    return json.loads(out.stdout)


def _tree_at(rev: str) -> Path:
    commit = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    tree = WORK / f"tree-{commit[:12]}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit, "agent"], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="a commit to compare with (its agent package)")
    parser.add_argument("--logs", type=int, default=512)
    parser.add_argument("--old-files", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(_measure(args.logs, args.old_files, args.directory))))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    trees = {"this tree": REPO} | ({args.against: _tree_at(args.against)} if args.against else {})
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            runs[name].append(_run_tree(tree, args))
    print(f"{args.logs} rejected logs, {args.old_files} old dead-letter files; medians of {args.repeat} runs")
    print(f"{'tree':>14} {'dead-lettered':>14} {'seconds':>8} {'max ms':>8} {'p99 ms':>8} {'stalled ms':>11}")
    for name, results in runs.items():
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"{name:>14} {med['dead_lettered']:>14.0f} {med['seconds']:>8.2f} {med['max_ms']:>8.1f} "
              f"{med['p99_ms']:>8.1f} {med['stalled_ms']:>11.0f}")
    shutil.rmtree(WORK / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
