"""End-to-end benchmark: sender → ``slsfwd run`` → PutLogs stand-in, against syslog-ng in the same run.

    python -m bench.bench_e2e [--lines 600000] [--repeat 3] [--skip-syslogng] [--idle-seconds 30]
                              [--nice N] [--json PATH] [--py-spy PATH] [--extra-config TOML]
                              [--corpus realistic|java-traces]

Per repeat (the order of (a) and (b) alternates between repeats):

(a) ``slsfwd run`` pinned to core 0 (``taskset -c 0``) with a fresh disk spool and the defaults plus
    ``[batch] linger_ms = 200``; the stand-in (``tests/support/standin.py --count-only``: it still checks the
    signature and decodes every LogGroup) and the sender pinned to core 1. The sender pushes the
    pre-built corpus over one TCP connection as fast as the agent reads it. The figure is the time
    from the first byte sent until ``GET /_standin/stats`` shows all N logs (polled every 20 ms).
    Peak RSS is the agent's ``VmHWM``.
(b) Debian's syslog-ng (``bench/syslogng.py``: network() source, regexp-parser into the same fields,
    file() destination, flow control) pinned to core 0, the same sender and bytes; the done point is
    the file destination's ``processed`` counter from ``syslog-ng-ctl stats`` (polled every 50 ms).

``--extra-config`` appends a TOML file to the agent's config in every run, e.g.
``bench/processors-drop-mask.toml`` (a drop on ``app-name`` and the ``password`` mask preset).
``--corpus java-traces`` adds 5 % real Java stack-trace lines of one app to the corpus, for
``bench/multiline-java.toml``; both sides get the same bytes.

Then the everyday rate: the default config (linger_ms 2000, spool on), 1,000 lines/s for
``--idle-seconds``, one ``send()`` per line; the agent's CPU is utime+stime from ``/proc/PID/stat``
over the sending window.

Every process started here is stopped (SIGTERM, then SIGKILL) on the way out, failures included.
The exit status is 1 if a run fails (a count never reached, an agent that does not exit 0); it is
0 otherwise, even when a target is missed.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import syslogng
from bench.corpus import build_corpus, with_stack_traces

REPO = Path(__file__).resolve().parent.parent
WORK = Path(__file__).resolve().parent / ".work" / "e2e"
AGENT_CORE, OTHER_CORE = 0, 1
AKID, SECRET = "bench-akid", "bench-secret-0123456789"
PROJECT, LOGSTORE = "bench-project", "bench-logstore"
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXTRA_CONFIG: list[str] = []  # TOML appended to every agent config (--extra-config)
# "n": logs the stand-in must count, when processors drop or join some; "held": how many of them a
# multiline processor holds at the end of the stream (each source's open group, flush_ms by design)
EXPECTED_LOGS: dict[str, int] = {}


def logs_after_processors(corpus: bytes, extra_toml: str) -> tuple[int, int]:
    """How many logs the configured processors make of the corpus (the agent's own pipeline, in
    process), and how many of those are still held in open multiline groups when the stream ends."""
    from agent.config import loads
    from agent.pipeline.batch import Batcher, Ticket
    from agent.pipeline.join import Joiner
    from agent.pipeline.parse import build_format_table
    from agent.pipeline.processors import build_chain_set
    from agent.pipeline.transform import LineTransformer, Router
    from bench.bench_hotpath import DEST, HOST_IP, PEER

    kept = [0]
    batcher = Batcher(max_logs=4096, max_bytes=512 * 1024, linger=60.0,
                      on_close=lambda batch: kept.__setitem__(0, kept[0] + len(batch.logs)), clock=time.monotonic)
    joiner = Joiner(batcher, time.monotonic)  # multiline processors join lines: fewer logs
    transformer = LineTransformer(formats=build_format_table({}), router=Router(DEST, {}), host_ip=HOST_IP,
                                  batcher=batcher, clock=time.time,
                                  processors=build_chain_set(loads(extra_toml, env={}).processors), joiner=joiner)
    transformer.process(corpus, int(time.time()), PEER, Ticket(0, lambda seq: None))
    held = joiner.open_groups
    joiner.flush_all()
    batcher.close_all()
    return kept[0], held

# Targets of issue 6.
TARGET_RATIO = 1.6
TARGET_RSS_MB = 100.0
TARGET_IDLE_CPU_PCT = 1.0


class Failure(Exception):
    pass


def stopped(exc: BaseException) -> int:
    """The exit status of a benchmark run that ``exc`` (a Failure, or Ctrl-C) stopped, said on stderr."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"interrupted ({exc})", file=sys.stderr)
        return 130
    print(f"FAILED: {exc}", file=sys.stderr)
    return 1


def stop_syslogng(procs: "Procs", sng) -> None:
    sng.stop()
    if sng.process in procs.items:
        procs.items.remove(sng.process)


def written_lines(sng) -> int:
    """The lines syslog-ng wrote to its output file, which is then removed."""
    with open(sng.output, "rb") as f:
        out_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    sng.output.unlink()
    return out_lines


def wind_up(procs: "Procs", run_dir: Path, results: dict, json_path: str | None) -> None:
    """After a benchmark, whatever happened: every process stopped, the work dir gone, the results saved."""
    procs.stop_all()
    shutil.rmtree(run_dir, ignore_errors=True)
    save_json(results, json_path)


def save_json(results: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


# ---------------------------------------------------------------- processes


class Procs:
    """Every process this benchmark starts; :meth:`stop_all` ends them by pid (TERM, then KILL)."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen] = []

    def start(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=REPO, **kwargs)
        self.items.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.items:
            self.items.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.items)):
            self.stop(proc, timeout=5.0)



def stop_agent(procs, agent, workdir: Path) -> None:
    """SIGTERM the agent; anything but a clean exit 0 fails the run."""
    code = procs.stop(agent, timeout=30.0)
    if code != 0:
        raise Failure(f"slsfwd exited {code} on SIGTERM\n{tail(workdir / 'agent.stderr')}")

def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core)] + cmd  # taskset execs: the pid is the command's


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure(f"{what} exited {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise Failure(f"{what} did not listen on {port} within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def sched_seconds(pid: int, main_only: bool = False) -> tuple[float, float]:
    """(on CPU, runnable but waiting for a CPU) in seconds, from /proc/PID/task/*/schedstat: the
    main thread's, or summed over the threads alive now. The main thread's wait is what other
    load on the core cost it (a sum over threads also counts the threads waiting for each other)."""
    run = wait = 0
    tasks = [Path(f"/proc/{pid}/task/{pid}")] if main_only else list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        try:
            values = (task / "schedstat").read_text().split()
        except OSError:
            continue
        run += int(values[0])
        wait += int(values[1])
    return run / 1e9, wait / 1e9


def core_busy_seconds() -> dict[int, float]:
    """Per core: non-idle time (all processes, this benchmark's and others'), from /proc/stat."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                v = [int(x) for x in values]
                busy[int(name[3:])] = (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait
    return busy


class Timeline:
    """Samples CPU use every ``every`` seconds: the given processes, and each core as a whole
    (the machine is shared: core busy minus ours is someone else's load)."""

    def __init__(self, pids: dict[str, int], every: float = 0.25, main_thread_wait: bool = True) -> None:
        self.pids = pids
        self.main_thread_wait = main_thread_wait
        self.every = every
        self.t0 = self.last = time.monotonic()
        self.start = self._sample()
        self.points: list[dict] = []

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        for name, pid in self.pids.items():
            try:
                sample[f"{name}_runqueue_wait"] = sched_seconds(pid, self.main_thread_wait)[1]
            except OSError:
                pass
        sample.update({f"core{c}": s for c, s in core_busy_seconds().items()})
        return sample

    def tick(self, extra: dict | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        point = {"t": round(now - self.t0, 3), **{k: round(v, 2) for k, v in self._sample().items()}}
        point.update(extra or {})
        self.points.append(point)

    def busy_pct(self) -> dict[str, float]:
        """Average share of one core over the whole window: per process on CPU, per process
        waiting for a CPU (``*_runqueue_wait``), and per core busy with anything."""
        if not self.points:
            return {}
        end = self.points[-1]
        span = end["t"]
        return {k: round(100.0 * (end[k] - v) / span, 1) for k, v in self.start.items() if span > 0 and k in end}


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def slsfwd_command() -> list[str]:
    script = Path(sys.executable).parent / "slsfwd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


# ---------------------------------------------------------------- stand-in, sender, agent


class Standin:
    def __init__(self, procs: Procs, workdir: Path, port: int = 0) -> None:
        self.stdout_path = workdir / "standin.stdout"
        self.proc = procs.start(
            pinned(OTHER_CORE, [sys.executable, "-m", "tests.support.standin", "--port", str(port), "--akid", AKID,
                                "--secret", SECRET, "--count-only"]),
            stdout=subprocess.PIPE, stderr=open(workdir / "standin.stderr", "ab"), text=True,
        )
        line = self.proc.stdout.readline()
        match = re.match(r"listening 127\.0\.0\.1:(\d+)", line)
        if not match:
            raise Failure(f"stand-in did not start: {line!r}")
        self.port = int(match.group(1))
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def stats(self) -> dict:
        try:
            self.conn.request("GET", "/_standin/stats")
            return json.loads(self.conn.getresponse().read())
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("GET", "/_standin/stats")
            return json.loads(self.conn.getresponse().read())

    def close(self, procs: Procs) -> None:
        self.conn.close()
        procs.stop(self.proc)


def agent_config(workdir: Path, port: int, standin_port: int, *, linger_ms: int | None) -> Path:
    text = (
        f'[input]\nlisten = "127.0.0.1:{port}"\n'
        + (f"[batch]\nlinger_ms = {linger_ms}\n" if linger_ms is not None else "")
        + f'[spool]\ndir = "{workdir / "spool"}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[sls]\nendpoint = "http://127.0.0.1:{standin_port}"\nproject = "{PROJECT}"\nlogstore = "{LOGSTORE}"\n'
        f'access_key_id = "{AKID}"\naccess_key_secret = "{SECRET}"\n'
    ) + "".join(EXTRA_CONFIG)
    path = workdir / "slsfwd.toml"
    path.write_text(text)
    return path


def start_agent(procs: Procs, workdir: Path, standin: Standin, *, linger_ms: int | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = agent_config(workdir, port, standin.port, linger_ms=linger_ms)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    proc = procs.start(
        pinned(AGENT_CORE, slsfwd_command() + ["run", "--config", str(config)]),
        stdout=open(workdir / "agent.stdout", "ab"), stderr=open(workdir / "agent.stderr", "ab"), env=env,
    )
    wait_port(port, proc, "slsfwd")
    return proc, port


def start_sender(procs: Procs, port: int, corpus: Path, *extra: str) -> subprocess.Popen:
    proc = procs.start(
        pinned(OTHER_CORE, [sys.executable, "-m", "bench.e2e_sender", "--port", str(port), "--corpus", str(corpus), *extra]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    if proc.stdout.readline().strip() != "ready":
        raise Failure("sender did not connect")
    return proc


def sender_result(procs: Procs, sender: subprocess.Popen, timeout: float = 60.0) -> dict:
    try:
        out, _ = sender.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure("sender did not finish") from None
    procs.stop(sender)
    if sender.returncode != 0:
        raise Failure(f"sender exited {sender.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------- runs


def run_slsfwd(procs: Procs, workdir: Path, corpus: Path, n_lines: int, n_bytes: int, timeout: float,
               py_spy: str | None = None) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    standin = Standin(procs, workdir)
    agent, port = start_agent(procs, workdir, standin, linger_ms=200)
    spy = None
    try:
        if py_spy:
            spy = procs.start(
                pinned(OTHER_CORE, [py_spy, "record", "-p", str(agent.pid), "-r", "200", "--threads",
                                    "-f", "raw", "-o", str(workdir / "py-spy.raw")]),
                stdout=open(workdir / "py-spy.log", "ab"), stderr=subprocess.STDOUT,
            )
            time.sleep(1.0)  # let py-spy attach
        sender = start_sender(procs, port, corpus, "--mode", "blast")
        cpu_agent0, cpu_standin0 = cpu_seconds(agent.pid), cpu_seconds(standin.proc.pid)
        timeline = Timeline({"agent": agent.pid, "standin": standin.proc.pid, "sender": sender.pid})
        sender.stdin.write("go\n")
        sender.stdin.flush()
        t_go = time.monotonic()
        stats = standin.stats()
        n_logs = EXPECTED_LOGS.get("n", n_lines)  # fewer when --extra-config processors drop lines
        # The stream's throughput: up to the last log that does not wait for a multiline flush_ms.
        # (Those few are then waited for, and checked, outside the measured time.)
        n_streamed = n_logs - EXPECTED_LOGS.get("held", 0)
        t_done = None
        while stats["logs"] < n_logs:
            if t_done is None and stats["logs"] >= n_streamed:
                t_done = time.monotonic()
            if agent.poll() is not None:
                raise Failure(f"slsfwd exited {agent.returncode} during the run\n{tail(workdir / 'agent.stderr')}")
            if time.monotonic() - t_go > timeout:
                raise Failure(f"stand-in counted {stats['logs']} of {n_logs} logs after {timeout}s")
            time.sleep(0.02)
            stats = standin.stats()
            if sender.poll() is None:
                timeline.tick({"logs": stats["logs"]})
            else:
                timeline.pids.pop("sender", None)
                for key in ("sender", "sender_runqueue_wait"):
                    timeline.start.pop(key, None)
                timeline.tick({"logs": stats["logs"]})
        t_done = t_done or time.monotonic()
        timeline.tick({"logs": stats["logs"]}, force=True)
        cpu_agent, cpu_standin = cpu_seconds(agent.pid) - cpu_agent0, cpu_seconds(standin.proc.pid) - cpu_standin0
        hwm_kb = proc_status_kb(agent.pid, "VmHWM")
        sent = sender_result(procs, sender)
        if spy is not None:
            procs.stop(spy, signal.SIGINT, timeout=30.0)
        time.sleep(0.3)  # anything more (duplicates) would show here
        final = standin.stats()
        stop_agent(procs, agent, workdir)
    finally:
        standin.close(procs)
    elapsed = t_done - sent["t_first"]
    result = {
        "seconds": elapsed,
        "lines_per_s": n_lines / elapsed,
        "mb_per_s": n_bytes / elapsed / 1e6,
        "send_seconds": sent["t_last"] - sent["t_first"],
        "peak_rss_mb": hwm_kb / 1024,
        "agent_cpu_s": cpu_agent,
        "standin_cpu_s": cpu_standin,
        "logs_counted": final["logs"],
        "requests": final["requests"],
        "groups": final["groups"],
        "rejections": final["rejections"],
        "busy_pct": timeline.busy_pct(),
        "timeline": timeline.points,
    }
    if final["logs"] != n_logs or final["rejections"]:
        raise Failure(f"stand-in: {final}")
    if spy is not None:
        result["py_spy_raw"] = str(workdir / "py-spy.raw")
    shutil.rmtree(workdir / "spool", ignore_errors=True)
    return result


def run_syslogng(procs: Procs, workdir: Path, corpus: Path, n_lines: int, n_bytes: int, timeout: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sng = syslogng.SyslogNg(workdir, free_port(), core=AGENT_CORE)
    sng.start()
    procs.items.append(sng.process)
    try:
        sender = start_sender(procs, sng.port, corpus, "--mode", "blast")
        cpu0 = cpu_seconds(sng.pid)
        timeline = Timeline({"syslog-ng": sng.pid}, main_thread_wait=False)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        t_go = time.monotonic()
        t_processed = t_written = None
        while True:
            stats = sng.stats()
            now = time.monotonic()
            if t_processed is None and stats.get("processed", 0) >= n_lines:
                t_processed = now
            if t_written is None and stats.get("written", 0) >= n_lines:
                t_written = now
            timeline.tick({"processed": stats.get("processed", 0)}, force=t_processed is not None)
            if t_processed is not None and t_written is not None:
                break
            if sng.process.poll() is not None:
                raise Failure(f"syslog-ng exited {sng.process.returncode} during the run\n{sng.stderr()}")
            if now - t_go > timeout:
                raise Failure(f"syslog-ng: {stats} of {n_lines} lines after {timeout}s")
            time.sleep(0.05)
        hwm_kb = proc_status_kb(sng.pid, "VmHWM")
        cpu = cpu_seconds(sng.pid) - cpu0
        sent = sender_result(procs, sender)
        stats = sng.stats()
    finally:
        stop_syslogng(procs, sng)
    out_lines = written_lines(sng)
    if out_lines != n_lines:
        raise Failure(f"syslog-ng wrote {out_lines} lines, expected {n_lines}")
    elapsed = t_processed - sent["t_first"]
    return {
        "seconds": elapsed,
        "lines_per_s": n_lines / elapsed,
        "mb_per_s": n_bytes / elapsed / 1e6,
        "seconds_to_written": t_written - sent["t_first"],
        "send_seconds": sent["t_last"] - sent["t_first"],
        "peak_rss_mb": hwm_kb / 1024,
        "written": stats.get("written"),
        "dropped": stats.get("dropped"),
        "regexp_unmatched": stats.get("parser_discarded", 0),
        "syslogng_cpu_s": cpu,
        "busy_pct": timeline.busy_pct(),
        "timeline": timeline.points,
    }


def run_idle(procs: Procs, workdir: Path, corpus: Path, rate: float, seconds: float, rest_seconds: float,
             py_spy: str | None = None, nagle: bool = False) -> dict:
    """The default config at an everyday rate. First ``rest_seconds`` with the sender connected and
    silent (the agent's cost at rest: timers, group commit, metrics), then ``rate`` lines/s."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    standin = Standin(procs, workdir)
    agent, port = start_agent(procs, workdir, standin, linger_ms=None)  # the default config: linger 2000
    spy = None
    try:
        sender = start_sender(procs, port, corpus, "--mode", "paced", "--rate", str(rate), "--seconds", str(seconds),
                              *(["--nagle"] if nagle else []))
        time.sleep(1.0)  # start-up work is not the everyday rate
        t_rest, cpu_rest = time.monotonic(), cpu_seconds(agent.pid)
        time.sleep(rest_seconds)
        rest_rss_kb = proc_status_kb(agent.pid, "VmRSS")
        if py_spy:
            spy = procs.start(
                pinned(OTHER_CORE, [py_spy, "record", "-p", str(agent.pid), "-r", "1000", "--threads", "-f", "raw",
                                    "-o", str(workdir / "py-spy.raw")]),
                stdout=open(workdir / "py-spy.log", "ab"), stderr=subprocess.STDOUT,
            )
            time.sleep(1.0)
        t0, cpu0 = time.monotonic(), cpu_seconds(agent.pid)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        sent = sender_result(procs, sender, timeout=seconds + 60)
        t1, cpu1 = time.monotonic(), cpu_seconds(agent.pid)
        if spy is not None:
            procs.stop(spy, signal.SIGINT, timeout=30.0)
        rss_kb, hwm_kb = proc_status_kb(agent.pid, "VmRSS"), proc_status_kb(agent.pid, "VmHWM")
        deadline = time.monotonic() + 30
        while standin.stats()["logs"] < sent["lines"]:
            if time.monotonic() > deadline:
                raise Failure(f"everyday rate: stand-in has {standin.stats()} of {sent['lines']}")
            time.sleep(0.1)
        time.sleep(0.3)
        final = standin.stats()
        stop_agent(procs, agent, workdir)
    finally:
        standin.close(procs)
    if final["logs"] != sent["lines"] or final["rejections"]:
        raise Failure(f"everyday rate: sent {sent['lines']}, stand-in: {final}")
    shutil.rmtree(workdir / "spool", ignore_errors=True)
    window = t1 - t0
    result = {
        "rate": rate,
        "seconds": window,
        "achieved_rate": sent["lines"] / (sent["t_last"] - sent["t_first"]),
        "lines": sent["lines"],
        "cpu_s": cpu1 - cpu0,
        "cpu_pct_of_core": 100.0 * (cpu1 - cpu0) / window,
        "rest_seconds": t0 - t_rest,
        "rest_cpu_pct_of_core": 100.0 * (cpu0 - cpu_rest) / (t0 - t_rest),
        "rss_mb": rss_kb / 1024,
        "peak_rss_mb": hwm_kb / 1024,
        "rest_rss_mb": rest_rss_kb / 1024,
        "requests": final["requests"],
        "nagle": nagle,
    }
    if spy is not None:
        result["py_spy_raw"] = str(workdir / "py-spy.raw")
    return result


# ---------------------------------------------------------------- py-spy summary


AREAS = (  # (area, path prefixes of frames), first match from the leaf up wins
    ("parse+encode+batch (transform, encode, batch, parse)", ("agent/transform.py", "agent/batch.py", "agent/parse.py",
                                                           "agent/encode.py:encode", "agent/encode.py:group")),
    ("lz4 (encode.compress)", ("agent/encode.py:compress", "lz4/")),
    ("spool (append, get, fsync, ledger)", ("agent/spool/",)),
    ("receive + framing", ("agent/receive.py", "agent/framing.py")),
    ("ship + PutLogs + signing + aiohttp", ("agent/ship.py", "agent/putlogs.py", "aiohttp/", "aliyun/", "yarl/",
                                           "multidict/", "stdlib/hmac.py", "stdlib/base64.py", "stdlib/hashlib.py")),
    ("consumer loop, metrics", ("agent/app.py", "agent/metrics.py", "prometheus_client/")),
)


def summarize_py_spy(raw: Path, top: int = 15) -> dict:
    """Shares of the agent's main-thread samples (py-spy leaves out idle samples: these are
    shares of the time the thread was running or runnable): own time per frame, time under
    each frame, and time per area of the agent.

    py-spy's raw format is one collapsed stack per line, ``frame;frame;... count``, with the
    thread as the first frame (``--threads``) and ``function (file:line)`` frames.
    """
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    areas: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            threads[frames[0]] += int(count)
            stacks.append((frames, int(count)))
    main_thread = threads.most_common(1)[0][0] if threads else None  # the event loop's
    main_total = 0
    for frames, n in stacks:
        if frames[0] != main_thread:
            continue
        main_total += n
        names = [_frame_name(f) for f in frames[1:]] or ["?"]
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
        areas[_area(names)] += n
    pct = lambda n: round(100.0 * n / main_total, 1) if main_total else 0.0
    return {
        "samples_main_thread": main_total,
        "samples_other_threads": sum(threads.values()) - main_total,
        "areas": [(name, pct(n)) for name, n in areas.most_common()],
        "own": [(name, pct(n)) for name, n in own.most_common(top)],
        "inclusive": [(name, pct(n)) for name, n in inclusive.most_common(top * 2)],
    }


def _area(names: list[str]) -> str:
    for name in reversed(names):
        for area, prefixes in AREAS:
            if name.startswith(prefixes):
                return area
    return "event loop (uvloop, C) and other"


def _frame_name(frame: str) -> str:
    # "process (agent/transform.py:123)" -> "agent/transform.py:process"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    if "/agent/" in path:
        path = "agent/" + path.rsplit("/agent/", 1)[1]
    elif "site-packages/" in path:
        path = path.rsplit("site-packages/", 1)[1]
    elif "/lib/python" in path:
        path = "stdlib/" + path.rsplit("/", 1)[1]
    return f"{path}:{func}"


# ---------------------------------------------------------------- report


def machine() -> dict:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = f"{fields.get('Model name', '').strip()} (family {fields.get('CPU family', '').strip()} model {fields.get('Model', '').strip()})"
    except OSError:
        pass
    versions = {"python": platform.python_version(), "syslog-ng": syslogng.package_version()}
    for module in ("uvloop", "aiohttp", "lz4"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            pass
    try:
        from agent import __version__ as agent_version
        versions["slsfwd"] = agent_version
    except Exception:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "versions": versions}


def busy_line(res: dict) -> str:
    """'of a core: agent 35%, ..., agent waiting 20%, core0 90%': shares of one core over the run."""
    busy = res.get("busy_pct", {})
    return "of a core: " + ", ".join(f"{k.replace('_runqueue_wait', ' waiting')} {v:.0f}%" for k, v in busy.items())


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs]
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def report(results: dict) -> None:
    n, mb = results["lines"], results["bytes"] / 1e6
    print(f"\ncorpus: {n:,} lines, {mb:.1f} MB ({results['bytes'] / n:.0f} B/line); "
          f"agent on core {AGENT_CORE}, stand-in and sender on core {OTHER_CORE}")
    rows = [("slsfwd", results["slsfwd"])]
    if results.get("syslogng"):
        rows.append(("syslog-ng", results["syslogng"]))
    print(f"{'':10} {'runs lines/s':>36} {'median lines/s':>15} {'MB/s':>7} {'spread':>7} {'peak RSS MB':>12}")
    for name, runs in rows:
        each = ", ".join(f"{r['lines_per_s']:,.0f}" for r in runs)
        print(f"{name:10} {each:>36} {median_of(runs, 'lines_per_s'):>15,.0f} {median_of(runs, 'mb_per_s'):>7.1f} "
              f"{spread(runs, 'lines_per_s'):>6.0%} {max(r['peak_rss_mb'] for r in runs):>12.1f}")
    s = results["summary"]
    if "ratio" in s:
        ratios = ", ".join(f"{r:.2f}" for r in s["ratio_per_repeat"])
        print(f"ratio slsfwd/syslog-ng: median {s['ratio']:.2f}x (per repeat: {ratios}); target >= {TARGET_RATIO}x: "
              f"{'met' if s['ratio'] >= TARGET_RATIO else 'MISSED'}")
    print(f"slsfwd peak RSS: {s['peak_rss_mb']:.1f} MB; target <= {TARGET_RSS_MB:.0f} MB: "
          f"{'met' if s['peak_rss_mb'] <= TARGET_RSS_MB else 'MISSED'}")
    cpu = f"CPU per line (medians): slsfwd {s['agent_cpu_us_per_line']:.2f} µs, stand-in {s['standin_cpu_us_per_line']:.2f} µs"
    if "syslogng_cpu_us_per_line" in s:
        cpu += (f", syslog-ng {s['syslogng_cpu_us_per_line']:.2f} µs (CPU-time ratio "
                f"{s['syslogng_cpu_us_per_line'] / s['agent_cpu_us_per_line']:.2f}x; not the figure, a noise-robust aside)")
    print(cpu)
    idle = results.get("idle")
    if idle:
        print(f"everyday rate: {idle['achieved_rate']:,.0f} lines/s for {idle['seconds']:.1f} s, one write per line: "
              f"{idle['cpu_pct_of_core']:.2f} % of one core ({idle['cpu_s']:.2f} s CPU), RSS {idle['rss_mb']:.1f} MB "
              f"(peak {idle['peak_rss_mb']:.1f}); target <= {TARGET_IDLE_CPU_PCT} %: "
              f"{'met' if idle['cpu_pct_of_core'] <= TARGET_IDLE_CPU_PCT else 'MISSED'}")
        print(f"at rest (connected, nothing sent, {idle['rest_seconds']:.0f} s): {idle['rest_cpu_pct_of_core']:.2f} % of one core, "
              f"RSS {idle['rest_rss_mb']:.1f} MB")
    for key, title in (("profile", "e2e run"), ("profile_idle", "everyday rate")):
        if results.get(key):
            print_profile(results[key], title)


def print_profile(prof: dict, title: str) -> None:
    if prof:
        under = (f"{prof['lines_per_s_under_py_spy']:,.0f} lines/s" if "lines_per_s_under_py_spy" in prof
                 else f"{prof.get('cpu_pct_under_py_spy', 0):.2f} % of a core")
        print(f"\npy-spy, {title} (agent main thread, {prof['samples_main_thread']} samples, idle left out; "
              f"{prof['samples_other_threads']} samples in other threads; {under} under sampling):")
        print("  by area:")
        for name, pct in prof["areas"]:
            print(f"    {pct:5.1f} %  {name}")
        print("  own time:")
        for name, pct in prof["own"]:
            print(f"    {pct:5.1f} %  {name}")
        print("  inclusive:")
        for name, pct in prof["inclusive"]:
            print(f"    {pct:5.1f} %  {name}")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=600_000, help="lines in the corpus (default 600000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; figures are medians (default 3)")
    parser.add_argument("--skip-syslogng", action="store_true", help="no syslog-ng reference (no ratio)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="everyday-rate run length; 0 skips it")
    parser.add_argument("--idle-rate", type=float, default=1000.0, help="everyday rate in lines/s (default 1000)")
    parser.add_argument("--idle-nagle", action="store_true", help="everyday rate: leave Nagle on in the sender "
                        "(default: TCP_NODELAY, one segment per line)")
    parser.add_argument("--rest-seconds", type=float, default=10.0, help="before the everyday rate: connected, "
                        "nothing sent, to measure the agent at rest (default 10)")
    parser.add_argument("--timeout", type=float, default=0.0, help="per run; default 60 s + 1 ms per 10 lines")
    parser.add_argument("--json", metavar="PATH", help="also write every run, the medians and the machine to PATH")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary: one extra, untimed slsfwd run under "
                        "`py-spy record`, summarized (the sampling slows the agent, so it is not a figure)")
    parser.add_argument("--nice", type=int, default=0, help="niceness of every process of the benchmark (agent, "
                        "syslog-ng, stand-in, sender), e.g. -10 on a shared machine; both sides get the same")
    parser.add_argument("--corpus", choices=("realistic", "java-traces"), default="realistic",
                        help="realistic (bench/corpus.py, the default), or java-traces: the same plus 5 %% real Java "
                        "stack-trace lines of one app (corpus.with_stack_traces; see bench/multiline-java.toml)")
    parser.add_argument("--extra-config", metavar="TOML", type=Path,
                        help="append this TOML to the agent's config (processors, say) in every run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.extra_config:
        EXTRA_CONFIG.append("\n" + args.extra_config.read_text())
    if os.cpu_count() is None or os.cpu_count() < 2 or not shutil.which("taskset"):
        print("needs 2 cores and taskset (util-linux)", file=sys.stderr)
        return 2
    if not args.skip_syslogng and not (syslogng.ROOT / "usr" / "sbin" / "syslog-ng").exists():
        print(f"syslog-ng is not unpacked yet: running {syslogng.SETUP}", flush=True)
        subprocess.run(["sh", str(syslogng.SETUP)], check=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    os.sched_setaffinity(0, {OTHER_CORE})  # the poller shares the stand-in's core, never the agent's
    if args.nice:
        os.nice(args.nice)  # inherited by every process started below

    procs = Procs()
    run_dir = WORK / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    blob = build_corpus(args.lines)
    if args.corpus == "java-traces":
        blob = with_stack_traces(blob)
    corpus = run_dir / "corpus.bin"
    corpus.write_bytes(blob)
    n_lines, n_bytes = blob.count(b"\n"), len(blob)
    if EXTRA_CONFIG:
        EXPECTED_LOGS["n"], EXPECTED_LOGS["held"] = logs_after_processors(blob, "".join(EXTRA_CONFIG))
        print(f"with --extra-config the stand-in must count {EXPECTED_LOGS['n']:,} logs", flush=True)
    del blob
    timeout = args.timeout or 60.0 + n_lines / 10_000
    results: dict = {"lines": n_lines, "bytes": n_bytes, "machine": machine(), "command": "python -m bench.bench_e2e " + " ".join(argv if argv is not None else sys.argv[1:]), "nice": args.nice,
                     "slsfwd": [], "syslogng": [], "summary": {}}
    print(f"corpus: {n_lines:,} lines, {n_bytes / 1e6:.1f} MB; work dir {run_dir}", flush=True)
    status = 0
    try:
        for r in range(args.repeat):
            order = ["slsfwd", "syslogng"] if r % 2 == 0 else ["syslogng", "slsfwd"]
            for side in order:
                if side == "slsfwd":
                    res = run_slsfwd(procs, run_dir / f"slsfwd-{r}", corpus, n_lines, n_bytes, timeout)
                    results["slsfwd"].append(res)
                    print(f"repeat {r + 1}: slsfwd    {res['lines_per_s']:>10,.0f} lines/s {res['mb_per_s']:6.1f} MB/s "
                          f"({res['seconds']:.2f} s, sent in {res['send_seconds']:.2f} s, peak RSS {res['peak_rss_mb']:.1f} MB, "
                          f"agent CPU {res['agent_cpu_s']:.2f} s, stand-in CPU {res['standin_cpu_s']:.2f} s; {busy_line(res)})", flush=True)
                elif not args.skip_syslogng:
                    res = run_syslogng(procs, run_dir / f"syslogng-{r}", corpus, n_lines, n_bytes, timeout)
                    results["syslogng"].append(res)
                    print(f"repeat {r + 1}: syslog-ng {res['lines_per_s']:>10,.0f} lines/s {res['mb_per_s']:6.1f} MB/s "
                          f"({res['seconds']:.2f} s to processed, {res['seconds_to_written']:.2f} s to written, "
                          f"peak RSS {res['peak_rss_mb']:.1f} MB, CPU {res['syslogng_cpu_s']:.2f} s, regexp unmatched {res['regexp_unmatched']}; "
                          f"{busy_line(res)})", flush=True)
        s = results["summary"]
        s["slsfwd_lines_per_s"] = median_of(results["slsfwd"], "lines_per_s")
        s["slsfwd_mb_per_s"] = median_of(results["slsfwd"], "mb_per_s")
        s["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results["slsfwd"])
        s["rss_met"] = s["peak_rss_mb"] <= TARGET_RSS_MB
        s["agent_cpu_us_per_line"] = median_of(results["slsfwd"], "agent_cpu_s") / n_lines * 1e6
        s["standin_cpu_us_per_line"] = median_of(results["slsfwd"], "standin_cpu_s") / n_lines * 1e6
        if results["syslogng"]:
            s["syslogng_cpu_us_per_line"] = median_of(results["syslogng"], "syslogng_cpu_s") / n_lines * 1e6
            s["syslogng_lines_per_s"] = median_of(results["syslogng"], "lines_per_s")
            s["syslogng_mb_per_s"] = median_of(results["syslogng"], "mb_per_s")
            s["ratio_per_repeat"] = [a["lines_per_s"] / b["lines_per_s"] for a, b in zip(results["slsfwd"], results["syslogng"])]
            s["ratio"] = s["slsfwd_lines_per_s"] / s["syslogng_lines_per_s"]
            s["ratio_met"] = s["ratio"] >= TARGET_RATIO
        if args.idle_seconds > 0:
            print(f"everyday rate: {args.idle_rate:,.0f} lines/s for {args.idle_seconds:.0f} s ...", flush=True)
            results["idle"] = run_idle(procs, run_dir / "idle", corpus, args.idle_rate, args.idle_seconds,
                                       args.rest_seconds, nagle=args.idle_nagle)
            s["idle_cpu_pct"] = results["idle"]["cpu_pct_of_core"]
            s["idle_cpu_met"] = s["idle_cpu_pct"] <= TARGET_IDLE_CPU_PCT
        if args.py_spy:
            print("profile: one more slsfwd run under py-spy (not a figure) ...", flush=True)
            res = run_slsfwd(procs, run_dir / "profile", corpus, n_lines, n_bytes, timeout * 3, py_spy=args.py_spy)
            results["profile"] = summarize_py_spy(Path(res["py_spy_raw"]))
            results["profile"]["raw"] = res["py_spy_raw"]
            results["profile"]["lines_per_s_under_py_spy"] = res["lines_per_s"]
            if args.idle_seconds > 0:
                print("profile: one more everyday-rate run under py-spy at 1 kHz (not a figure) ...", flush=True)
                res = run_idle(procs, run_dir / "profile-idle", corpus, args.idle_rate, args.idle_seconds, 0.0,
                               py_spy=args.py_spy)
                results["profile_idle"] = summarize_py_spy(Path(res["py_spy_raw"]))
                results["profile_idle"]["raw"] = res["py_spy_raw"]
                results["profile_idle"]["cpu_pct_under_py_spy"] = res["cpu_pct_of_core"]
        report(results)
    except (Failure, KeyboardInterrupt) as exc:
        status = stopped(exc)
    finally:
        procs.stop_all()
        corpus.unlink(missing_ok=True)
        save_json(results, args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
