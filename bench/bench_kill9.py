"""What a ``kill -9`` of the agent costs on the rsyslog hop: plain TCP (the tutorial's block)
against RELP (the README's omrelp action), with Debian's real rsyslogd in front.

    python -m bench.bench_kill9 [--repeat 5] [--transport tcp,relp] [--lines 20000]

Each run is ``tests/support/kill9.py``'s: 20,000 numbered lines into rsyslog over 4 s (5,000 lines/s),
SIGKILL one second in, a restart 3 s later on the same spool. It prints,
per run, the lines lost and duplicated, what the killed agent had read and left in its spool,
and then the medians. The tests assert what is promised (RELP loses nothing; over either
transport nothing the agent had read is lost); how much plain TCP loses is what this measures.

The exit status is 1 if a run breaks a promise (RELP lost a line, a line the agent had read was
not delivered, the stand-in rejected something, the agent did not exit 0 on SIGTERM), else 0.
Needs rsyslog and rsyslog-relp (``make system-deps``).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from tests.support.kill9 import TRANSPORTS, KillRun, kill_9_run


def broken_promises(run: KillRun) -> list[str]:
    problems = []
    if run.transport == "relp" and run.lost:
        problems.append(f"RELP lost {run.lost}")
    if len(run.read_by_the_killed_agent) < run.read_before_kill:
        problems.append("lines the agent had read are neither delivered nor spooled")
    if run.spooled_at_kill - set(run.counts):
        problems.append("spooled lines were not delivered")
    if run.rejections:
        problems.append(f"{len(run.rejections)} rejections")
    if run.exit_code != 0:
        problems.append(f"exit code {run.exit_code} on SIGTERM")
    return problems


def row(i: int, run: KillRun) -> str:
    return (f"| {run.transport} | {i} | {run.lost} | {run.duplicates} | {run.read_before_kill} | "
            f"{len(run.delivered_at_kill)} | {len(run.spooled_at_kill)} | {run.seconds:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per transport")
    parser.add_argument("--transport", default="tcp,relp", help="comma-separated: tcp, relp")
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=4.0, help="how long the lines take to go in")
    parser.add_argument("--kill-at", type=float, default=1.0, help="seconds after the first line")
    parser.add_argument("--down", type=float, default=3.0, help="seconds between the kill and the restart")
    parser.add_argument("--read-coalesce-ms", type=int, default=None, help="the agent's input.read_coalesce_ms (default: its default)")
    args = parser.parse_args()
    transports = [t for t in args.transport.split(",") if t]
    unknown = set(transports) - set(TRANSPORTS)
    if unknown:
        parser.error(f"unknown transport {sorted(unknown)}; choose from {TRANSPORTS}")

    print(f"kill -9 at {args.kill_at:g} s of {args.lines} lines sent over {args.seconds:g} s, restart after "
          f"{args.down:g} s, read_coalesce_ms {args.read_coalesce_ms if args.read_coalesce_ms is not None else 'default'}; "
          f"{platform.node()}, {platform.machine()}, Python {platform.python_version()}")
    print("| transport | run | lost | duplicates | read before the kill | delivered then | in its spool | s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    runs: dict[str, list[KillRun]] = {t: [] for t in transports}
    failed = []
    for i in range(1, args.repeat + 1):
        for transport in transports:  # alternating, so both see the same moments of the host
            workdir = Path(tempfile.mkdtemp(prefix=f"kill9-{transport}-"))
            try:
                run = asyncio.run(kill_9_run(workdir, transport, lines=args.lines, inject_seconds=args.seconds,
                                             kill_at=args.kill_at, down_for=args.down,
                                             read_coalesce_ms=args.read_coalesce_ms))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            runs[transport].append(run)
            print(row(i, run), flush=True)
            problems = broken_promises(run)
            if problems:
                failed.append(f"{transport} run {i}: {'; '.join(problems)}; {run.summary()}")
    for transport, done in runs.items():
        lost = [r.lost for r in done]
        dups = [r.duplicates for r in done]
        print(f"{transport}: lost median {statistics.median(lost):g} (min {min(lost)}, max {max(lost)}) of "
              f"{args.lines}; duplicates median {statistics.median(dups):g} (min {min(dups)}, max {max(dups)})")
    for line in failed:
        print("FAILED:", line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
