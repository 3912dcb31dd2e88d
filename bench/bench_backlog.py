"""Catching up a backlog: the agent's peak memory and time after an outage of its sink.

    python -m bench.bench_backlog [--mb 200] [--rounds 3] [--line-bytes 0] [--json PATH]
                                  [--set batch.window_bytes=4194304 ...]

Per round: ``slsfwd run`` with the default config (disk spool), pinned to core 0, its ``[sls]`` endpoint a
port where nothing listens yet (the outage: every PutLogs fails to connect and is retried with backoff).
The sender (``bench/e2e_sender.py --mode blast``, core 1) pushes ``--mb`` MB of the corpus
(``bench/corpus.py``; ``--line-bytes`` widens its lines) into the agent, which spools it. Once
``slsfwd_input_lines_total`` shows every line, the agent's ``VmHWM`` is reset (``5`` to
``/proc/PID/clear_refs``) and the PutLogs stand-in (``tests/support/standin.py --count-only``, core 1)
starts on that port. The figures:

* peak RSS catching up: ``VmHWM`` once the stand-in has counted every line (since the reset), and the
  largest ``VmRSS`` sampled every 0.1 s meanwhile;
* peak RSS filling the spool: ``VmHWM`` just before the reset;
* catch-up time: from the stand-in's first log to its last (the wait for the agent's next retry,
  up to 30 s of backoff, is left out and reported apart).

``--set SECTION.KEY=VALUE`` changes one key of the agent's config (repeatable), e.g. to see what
``batch.window_bytes`` or ``spool.read_ahead_bytes`` costs.

Peak RSS at full speed is ``bench_e2e``'s ``peak RSS`` (the agent's ``VmHWM`` after each run).
The exit status is 1 if a run fails (lines missing, a rejection, an agent that does not exit 0).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import sys
import time
import types
import urllib.request
from pathlib import Path

from bench import bench_e2e as e2e
from bench.corpus import build_corpus

WORK = Path(__file__).resolve().parent / ".work" / "backlog"
TARGET_RSS_MB = 64.0  # issue 21


def input_lines(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^slsfwd_input_lines_total (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (proc(5))


def with_settings(settings: list[str]):
    """``bench_e2e.agent_config`` with each ``SECTION.KEY=VALUE`` put into its section."""
    plain = e2e.agent_config

    def agent_config(workdir, port, standin_port, *, linger_ms):
        path = plain(workdir, port, standin_port, linger_ms=linger_ms)
        text = path.read_text()
        for setting in settings:
            key, value = setting.split("=", 1)
            section, name = key.split(".", 1)
            if f"[{section}]\n" not in text:
                text += f"[{section}]\n"
            text = text.replace(f"[{section}]\n", f"[{section}]\n{name} = {value}\n", 1)
        path.write_text(text)
        return path

    return agent_config


def run(procs: e2e.Procs, workdir: Path, corpus: Path, n_lines: int, timeout: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sink_port = e2e.free_port()
    agent, port = e2e.start_agent(procs, workdir, types.SimpleNamespace(port=sink_port), linger_ms=None)
    metrics_port = int(re.search(r'\[metrics\]\nlisten = "127\.0\.0\.1:(\d+)"', (workdir / "slsfwd.toml").read_text()).group(1))
    standin = None
    try:
        sender = e2e.start_sender(procs, port, corpus, "--mode", "blast")
        sender.stdin.write("go\n")
        sender.stdin.flush()
        t0 = time.monotonic()
        while input_lines(metrics_port) < n_lines:
            if agent.poll() is not None or time.monotonic() - t0 > timeout:
                raise e2e.Failure(f"the agent read {input_lines(metrics_port)} of {n_lines} lines\n"
                                  f"{e2e.tail(workdir / 'agent.stderr')}")
            time.sleep(0.2)
        fill_s = time.monotonic() - t0
        e2e.sender_result(procs, sender)
        time.sleep(1.0)  # the last group commit
        fill_hwm_kb = e2e.proc_status_kb(agent.pid, "VmHWM")
        before_kb = e2e.proc_status_kb(agent.pid, "VmRSS")
        spool_mb = sum(p.stat().st_size for p in (workdir / "spool" / "queue").glob("*.seg")) / 1e6
        reset_peak_rss(agent.pid)
        standin = e2e.Standin(procs, workdir, port=sink_port)
        t_sink = time.monotonic()
        t_first = None
        rss_max = 0
        cpu0 = e2e.cpu_seconds(agent.pid)
        logs = 0
        while logs < n_lines:
            if agent.poll() is not None or time.monotonic() - t_sink > timeout:
                raise e2e.Failure(f"stand-in counted {logs} of {n_lines}\n{e2e.tail(workdir / 'agent.stderr')}")
            rss_max = max(rss_max, e2e.proc_status_kb(agent.pid, "VmRSS"))
            time.sleep(0.1)
            logs = standin.stats()["logs"]
            if logs and t_first is None:
                t_first = time.monotonic()
        t_done = time.monotonic()
        cpu = e2e.cpu_seconds(agent.pid) - cpu0
        hwm_kb = e2e.proc_status_kb(agent.pid, "VmHWM")
        time.sleep(0.3)
        final = standin.stats()
        e2e.stop_agent(procs, agent, workdir)
    finally:
        if standin is not None:
            standin.close(procs)
    if final["logs"] != n_lines or final["rejections"]:
        raise e2e.Failure(f"stand-in: {final}")
    shutil.rmtree(workdir / "spool", ignore_errors=True)
    return {
        "spool_mb": spool_mb,
        "fill_s": fill_s,
        "fill_peak_rss_mb": fill_hwm_kb / 1024,
        "rss_before_mb": before_kb / 1024,
        "catchup_peak_rss_mb": hwm_kb / 1024,
        "catchup_rss_sampled_max_mb": rss_max / 1024,
        "retry_wait_s": (t_first or t_done) - t_sink,
        "catchup_s": t_done - (t_first or t_sink),
        "catchup_lines_per_s": n_lines / max(1e-9, t_done - (t_first or t_sink)),
        "catchup_cpu_s": cpu,
        "requests": final["requests"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_backlog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="backlog size in MB (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians (peak: the largest) (default 3)")
    parser.add_argument("--line-bytes", type=int, default=0, help="widen the corpus's lines to about this (default: "
                        "the corpus's own, about 142 B)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase (default 300 s)")
    parser.add_argument("--json", metavar="PATH", help="also write every run and the machine to PATH")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="one key of the agent's config (TOML value), e.g. spool.read_ahead_bytes=2097152")
    args = parser.parse_args(argv)
    e2e.agent_config = with_settings(args.set)
    if os.geteuid() != 0:
        print("needs root: resetting VmHWM writes /proc/PID/clear_refs", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    os.sched_setaffinity(0, {e2e.OTHER_CORE})
    run_dir = WORK / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    line_size = args.line_bytes or 142
    blob = build_corpus(int(args.mb * 1e6 / line_size), line_bytes=args.line_bytes)
    corpus = run_dir / "corpus.bin"
    corpus.write_bytes(blob)
    n_lines, n_bytes = blob.count(b"\n"), len(blob)
    del blob
    print(f"backlog: {n_lines:,} lines, {n_bytes / 1e6:.0f} MB ({n_bytes / n_lines:.0f} B a line)", flush=True)
    results: dict = {"lines": n_lines, "bytes": n_bytes, "machine": e2e.machine(), "runs": [], "settings": args.set,
                     "command": "python -m bench.bench_backlog " + " ".join(sys.argv[1:] if argv is None else argv)}
    procs = e2e.Procs()
    status = 0
    try:
        for r in range(args.rounds):
            res = run(procs, run_dir / f"run-{r}", corpus, n_lines, args.timeout)
            results["runs"].append(res)
            print(f"round {r + 1}: catching up peak RSS {res['catchup_peak_rss_mb']:.1f} MB (sampled max "
                  f"{res['catchup_rss_sampled_max_mb']:.1f}, {res['rss_before_mb']:.1f} before), {res['catchup_s']:.1f} s "
                  f"({res['catchup_lines_per_s']:,.0f} lines/s, agent CPU {res['catchup_cpu_s']:.1f} s, {res['requests']} requests; "
                  f"the retry came {res['retry_wait_s']:.1f} s after the sink); filling {res['spool_mb']:.0f} MB of spool "
                  f"in {res['fill_s']:.1f} s, peak RSS {res['fill_peak_rss_mb']:.1f} MB", flush=True)
        runs = results["runs"]
        peak = max(r["catchup_peak_rss_mb"] for r in runs)
        med = lambda key: statistics.median(r[key] for r in runs)
        results["summary"] = {"catchup_peak_rss_mb": peak, "catchup_peak_rss_median_mb": med("catchup_peak_rss_mb"),
                              "catchup_s": med("catchup_s"), "fill_peak_rss_mb": max(r["fill_peak_rss_mb"] for r in runs)}
        print(f"\n{n_bytes / 1e6:.0f} MB backlog, {len(runs)} rounds: peak RSS catching up {peak:.1f} MB (median "
              f"{med('catchup_peak_rss_mb'):.1f}; target <= {TARGET_RSS_MB:.0f} MB: {'met' if peak <= TARGET_RSS_MB else 'MISSED'}), "
              f"catch-up {med('catchup_s'):.1f} s ({med('catchup_lines_per_s'):,.0f} lines/s); peak RSS filling the spool "
              f"{results['summary']['fill_peak_rss_mb']:.1f} MB")
    except (e2e.Failure, KeyboardInterrupt) as exc:
        status = e2e.stopped(exc)
    finally:
        e2e.wind_up(procs, run_dir, results, args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
