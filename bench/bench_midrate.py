"""The agent's CPU and memory at a mid rate (10 MB/s), against syslog-ng fed the same lines in the same run.

    python -m bench.bench_midrate [--rounds 3] [--seconds 25] [--warmup 5] [--rate 20480]
                                  [--lines-per-write 64] [--line-bytes 500] [--idle-seconds 20] [--json PATH]
                                  [--against REV]

Per round (the order of the two sides alternates between rounds):

(a) ``slsfwd run`` with the default config (disk spool, ``linger_ms`` 2000, ``read_coalesce_ms`` 500),
    pinned to core 0, shipping to the PutLogs stand-in (``tests/support/standin.py --count-only``) on
    core 1. The sender (``bench/e2e_sender.py --mode paced``, core 1) writes ``--lines-per-write``
    lines of about ``--line-bytes`` bytes at a time, ``--rate`` lines a second on an absolute
    schedule, over one TCP connection, for ``--seconds``.
(b) syslog-ng (``bench/syslogng.py``: the regexp-parser configuration of ``bench_e2e``), core 0, the
    same sender and the same bytes at the same pace.

CPU is utime+stime of the whole process from ``/proc/PID/stat``, over the steady window (from
``--warmup`` seconds after the first write to one second before the last), as a share of one core.
Memory: ``VmRSS`` sampled every 0.5 s over the window (its maximum) and ``VmHWM`` at the end, from
``/proc/PID/status``. Wake-ups: the main thread's voluntary context switches a second. Nothing polls
either program during the window; the counts are checked afterwards (every line delivered).

With ``--against REV``, each round also runs REV's agent (its ``agent/`` exported with ``git archive``
under ``bench/.work/midrate/``, run as ``python -m agent`` from there) the same way: before/after
figures in the same run.

Then the everyday rate (``bench_e2e``'s run: 1,000 lines/s, one line a write, after
``--rest-seconds`` connected and silent): CPU, RSS at rest and at that rate.

The exit status is 1 if a run fails (lines missing, a rejection, an agent that does not exit 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import bench_e2e as e2e
from bench import syslogng
from bench.corpus import build_corpus

WORK = Path(__file__).resolve().parent / ".work" / "midrate"
CORPUS_LINES = 65536  # cycled by the sender; 1,024 writes of 64 lines
TARGET_CPU_RATIO = 0.2  # issue 21: at most a fifth of syslog-ng's CPU in the same run
TARGET_RSS_MB = 35.0
TARGET_IDLE_CPU_PCT = 0.5


def main_thread_wakeups(pid: int) -> int:
    """Voluntary context switches of the main thread: how often it slept and was woken."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def measure_window(pid: int, t_go: float, warmup: float, seconds: float) -> dict:
    """CPU, wake-ups and VmRSS of ``pid`` from ``t_go + warmup`` to one second before the sending ends."""
    start, end = t_go + warmup, t_go + seconds - 1.0
    time.sleep(max(0.0, start - time.monotonic()))
    t0, cpu0, wake0 = time.monotonic(), e2e.cpu_seconds(pid), main_thread_wakeups(pid)
    core0 = e2e.core_busy_seconds()[e2e.AGENT_CORE]
    rss_max = 0
    while time.monotonic() < end:
        rss_max = max(rss_max, e2e.proc_status_kb(pid, "VmRSS"))
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    t1, cpu1, wake1 = time.monotonic(), e2e.cpu_seconds(pid), main_thread_wakeups(pid)
    core1 = e2e.core_busy_seconds()[e2e.AGENT_CORE]
    span = t1 - t0
    return {
        "window_s": span,
        "cpu_s": cpu1 - cpu0,
        "cpu_pct": 100.0 * (cpu1 - cpu0) / span,
        "core_busy_pct": 100.0 * (core1 - core0) / span,  # everyone's, for the noise
        "wakeups_per_s": (wake1 - wake0) / span,
        "rss_mb": rss_max / 1024,
    }


def sender_args(args: argparse.Namespace) -> list[str]:
    return ["--mode", "paced", "--rate", str(args.rate), "--seconds", str(args.seconds),
            "--lines-per-write", str(args.lines_per_write)]


def exported_tree(rev: str) -> Path:
    """REV's ``agent/`` package in a directory of its own (``git archive``: the repository is only read)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=e2e.REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    where = WORK / f"tree-{commit[:12]}"
    if not (where / "agent" / "__main__.py").exists():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "agent"], cwd=e2e.REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def start_agent_of(tree: Path | None, procs: e2e.Procs, workdir: Path, standin: e2e.Standin):
    """``slsfwd run`` with the default config: this tree's, or ``python -m agent`` from ``tree``."""
    if tree is None:
        return e2e.start_agent(procs, workdir, standin, linger_ms=None)
    here, command = e2e.REPO, e2e.slsfwd_command
    e2e.REPO, e2e.slsfwd_command = tree, lambda: [sys.executable, "-m", "agent"]
    try:
        return e2e.start_agent(procs, workdir, standin, linger_ms=None)
    finally:
        e2e.REPO, e2e.slsfwd_command = here, command


def run_agent(procs: e2e.Procs, workdir: Path, corpus: Path, args: argparse.Namespace, tree: Path | None = None) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    standin = e2e.Standin(procs, workdir)
    agent, port = start_agent_of(tree, procs, workdir, standin)
    try:
        sender = e2e.start_sender(procs, port, corpus, *sender_args(args))
        time.sleep(1.0)  # start-up is not the load
        rest_rss_kb = e2e.proc_status_kb(agent.pid, "VmRSS")
        sender.stdin.write("go\n")
        sender.stdin.flush()
        res = measure_window(agent.pid, time.monotonic(), args.warmup, args.seconds)
        sent = e2e.sender_result(procs, sender, timeout=args.seconds + 60)
        deadline = time.monotonic() + 30
        while standin.stats()["logs"] < sent["lines"]:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise e2e.Failure(f"stand-in has {standin.stats()} of {sent['lines']} lines\n"
                                  f"{e2e.tail(workdir / 'agent.stderr')}")
            time.sleep(0.2)
        time.sleep(0.3)
        final = standin.stats()
        res["peak_rss_mb"] = e2e.proc_status_kb(agent.pid, "VmHWM") / 1024
        e2e.stop_agent(procs, agent, workdir)
    finally:
        standin.close(procs)
    if final["logs"] != sent["lines"] or final["rejections"]:
        raise e2e.Failure(f"sent {sent['lines']}, stand-in: {final}")
    shutil.rmtree(workdir / "spool", ignore_errors=True)
    res.update(rest_rss_mb=rest_rss_kb / 1024, requests=final["requests"], **rate_of(sent))
    return res


def run_syslogng(procs: e2e.Procs, workdir: Path, corpus: Path, args: argparse.Namespace) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sng = syslogng.SyslogNg(workdir, e2e.free_port(), core=e2e.AGENT_CORE)
    sng.start()
    procs.items.append(sng.process)
    try:
        sender = e2e.start_sender(procs, sng.port, corpus, *sender_args(args))
        time.sleep(1.0)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        res = measure_window(sng.pid, time.monotonic(), args.warmup, args.seconds)
        sent = e2e.sender_result(procs, sender, timeout=args.seconds + 60)
        deadline = time.monotonic() + 30
        while sng.stats().get("written", 0) < sent["lines"]:
            if sng.process.poll() is not None or time.monotonic() > deadline:
                raise e2e.Failure(f"syslog-ng: {sng.stats()} of {sent['lines']} lines\n{sng.stderr()}")
            time.sleep(0.2)
        res["peak_rss_mb"] = e2e.proc_status_kb(sng.pid, "VmHWM") / 1024
    finally:
        e2e.stop_syslogng(procs, sng)
    out_lines = e2e.written_lines(sng)
    if out_lines != sent["lines"]:
        raise e2e.Failure(f"syslog-ng wrote {out_lines} lines, {sent['lines']} were sent")
    res.update(rate_of(sent))
    return res


def rate_of(sent: dict) -> dict:
    span = sent["t_last"] - sent["t_first"]
    return {"lines": sent["lines"], "lines_per_s": sent["lines"] / span, "mb_per_s": sent["bytes"] / span / 1e6}


def describe(name: str, res: dict) -> str:
    return (f"{name:9} {res['cpu_pct']:6.2f} % of a core ({res['cpu_s']:.2f} s over {res['window_s']:.1f} s), "
            f"{res['wakeups_per_s']:6.0f} wake-ups/s, RSS {res['rss_mb']:.1f} MB (peak {res['peak_rss_mb']:.1f}); "
            f"sent {res['lines_per_s']:,.0f} lines/s {res['mb_per_s']:.1f} MB/s; core {e2e.AGENT_CORE} busy "
            f"{res['core_busy_pct']:.0f} %")


def summarize(results: dict) -> dict:
    agent, sng = results["slsfwd"], results["syslogng"]
    med = lambda runs, key: statistics.median(r[key] for r in runs)
    s = {"agent_cpu_pct": med(agent, "cpu_pct"), "agent_rss_mb": med(agent, "rss_mb"),
         "agent_peak_rss_mb": max(r["peak_rss_mb"] for r in agent), "agent_wakeups_per_s": med(agent, "wakeups_per_s"),
         "agent_rest_rss_mb": med(agent, "rest_rss_mb")}
    if results.get("against"):
        s["against_cpu_pct"] = med(results["against"], "cpu_pct")
        s["against_rss_mb"] = med(results["against"], "rss_mb")
        s["against_wakeups_per_s"] = med(results["against"], "wakeups_per_s")
        if sng:
            s["against_cpu_ratio"] = s["against_cpu_pct"] / med(sng, "cpu_pct")
    if sng:
        s.update(syslogng_cpu_pct=med(sng, "cpu_pct"), syslogng_rss_mb=med(sng, "rss_mb"),
                 syslogng_wakeups_per_s=med(sng, "wakeups_per_s"))
        s["cpu_ratio"] = s["agent_cpu_pct"] / s["syslogng_cpu_pct"]
        s["cpu_ratio_per_round"] = [a["cpu_pct"] / b["cpu_pct"] for a, b in zip(agent, sng)]
    return s


def report(results: dict) -> None:
    s = results["summary"]
    print(f"\n{results['rate']:,.0f} lines/s of {results['line_bytes']:.0f} B, {results['lines_per_write']} lines a write, "
          f"default config; medians of {len(results['slsfwd'])} rounds:")
    print(f"  slsfwd    CPU {s['agent_cpu_pct']:.2f} % of a core, RSS {s['agent_rss_mb']:.1f} MB "
          f"(peak {s['agent_peak_rss_mb']:.1f}), {s['agent_wakeups_per_s']:.0f} wake-ups/s")
    if "cpu_ratio" in s:
        print(f"  syslog-ng CPU {s['syslogng_cpu_pct']:.2f} % of a core, RSS {s['syslogng_rss_mb']:.1f} MB, "
              f"{s['syslogng_wakeups_per_s']:.0f} wake-ups/s (main thread)")
        each = ", ".join(f"{r:.2f}" for r in s["cpu_ratio_per_round"])
        print(f"  CPU slsfwd / syslog-ng: {s['cpu_ratio']:.2f} = 1/{1 / s['cpu_ratio']:.1f} (per round: {each}); "
              f"target <= {TARGET_CPU_RATIO:.2f}: {'met' if s['cpu_ratio'] <= TARGET_CPU_RATIO else 'MISSED'}")
    if "against_cpu_pct" in s:
        ratio = f", {s['against_cpu_ratio']:.2f} of syslog-ng's" if "against_cpu_ratio" in s else ""
        print(f"  {results['against_rev']}: CPU {s['against_cpu_pct']:.2f} % of a core{ratio}, RSS {s['against_rss_mb']:.1f} MB, "
              f"{s['against_wakeups_per_s']:.0f} wake-ups/s")
    idle = results.get("idle")
    if idle:
        print(f"  everyday rate: {idle['achieved_rate']:,.0f} lines/s, one line a write: {idle['cpu_pct_of_core']:.2f} % "
              f"of a core (target <= {TARGET_IDLE_CPU_PCT} %), RSS {idle['rss_mb']:.1f} MB (peak {idle['peak_rss_mb']:.1f}); "
              f"at rest {idle['rest_rss_mb']:.1f} MB, {idle['rest_cpu_pct_of_core']:.2f} % (target RSS <= {TARGET_RSS_MB:.0f} MB)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_midrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side; figures are medians (default 3)")
    parser.add_argument("--seconds", type=float, default=25.0, help="sending time per run (default 25)")
    parser.add_argument("--warmup", type=float, default=5.0, help="left out of the window at its start (default 5)")
    parser.add_argument("--rate", type=float, default=20480.0, help="lines a second (default 20480: 10 MB/s of 500 B)")
    parser.add_argument("--lines-per-write", type=int, default=64, help="lines in each write (default 64)")
    parser.add_argument("--line-bytes", type=int, default=500, help="about this long a line (default 500)")
    parser.add_argument("--skip-syslogng", action="store_true", help="no syslog-ng reference (no ratio)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="everyday rate, 1,000 lines/s; 0 skips it")
    parser.add_argument("--rest-seconds", type=float, default=10.0, help="before the everyday rate: connected, silent")
    parser.add_argument("--json", metavar="PATH", help="also write every run, the medians and the machine to PATH")
    parser.add_argument("--against", metavar="REV", help="also run REV's agent in every round (before/after)")
    args = parser.parse_args(argv)
    if args.seconds < args.warmup + 3:
        parser.error("--seconds must be at least --warmup + 3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.cpu_count() is None or os.cpu_count() < 2 or not shutil.which("taskset"):
        print("needs 2 cores and taskset (util-linux)", file=sys.stderr)
        return 2
    if not args.skip_syslogng and not (syslogng.ROOT / "usr" / "sbin" / "syslog-ng").exists():
        subprocess.run(["sh", str(syslogng.SETUP)], check=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    os.sched_setaffinity(0, {e2e.OTHER_CORE})
    run_dir = WORK / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    blob = build_corpus(CORPUS_LINES, line_bytes=args.line_bytes, lines_per_second=int(args.rate))
    corpus = run_dir / "corpus.bin"
    corpus.write_bytes(blob)
    results: dict = {"rate": args.rate, "lines_per_write": args.lines_per_write, "line_bytes": len(blob) / blob.count(b"\n"),
                     "machine": e2e.machine(), "command": "python -m bench.bench_midrate " + " ".join(sys.argv[1:] if argv is None else argv),
                     "slsfwd": [], "syslogng": [], "against": [], "against_rev": args.against}
    against_tree = exported_tree(args.against) if args.against else None
    del blob
    procs = e2e.Procs()
    status = 0
    try:
        for r in range(args.rounds):
            sides = ["slsfwd", "syslogng"] if r % 2 == 0 else ["syslogng", "slsfwd"]
            if against_tree is not None:
                sides.insert(1, "against")
            for side in sides:
                if side == "slsfwd":
                    res = run_agent(procs, run_dir / f"slsfwd-{r}", corpus, args)
                elif side == "against":
                    res = run_agent(procs, run_dir / f"against-{r}", corpus, args, tree=against_tree)
                elif args.skip_syslogng:
                    continue
                else:
                    res = run_syslogng(procs, run_dir / f"syslogng-{r}", corpus, args)
                results[side].append(res)
                name = {"slsfwd": "slsfwd", "against": args.against, "syslogng": "syslog-ng"}[side]
                print(f"round {r + 1}: {describe(name, res)}", flush=True)
        results["summary"] = summarize(results)
        if args.idle_seconds > 0:
            small = run_dir / "corpus-everyday.bin"
            small.write_bytes(build_corpus(int(1000 * (args.idle_seconds + 5))))
            results["idle"] = e2e.run_idle(procs, run_dir / "idle", small, 1000.0, args.idle_seconds, args.rest_seconds)
        report(results)
    except (e2e.Failure, KeyboardInterrupt) as exc:
        status = e2e.stopped(exc)
    finally:
        e2e.wind_up(procs, run_dir, results, args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
