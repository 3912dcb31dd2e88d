"""One ``kill -9`` of the real agent while Debian's real rsyslogd forwards to it: over the
tutorial's plain TCP block, or over RELP (rsyslog's ``omrelp``).

Shared by ``tests/e2e/test_relp_e2e.py``, which asserts what the README promises (RELP loses
nothing; over either transport, nothing the agent had read is lost), and by
``bench/bench_kill9.py``, which measures what plain TCP loses (figures in ``bench/README.md``).

A run: the agent starts; ``lines`` numbered RFC 3164 lines go into rsyslog's imtcp on one
connection, spread over ``inject_seconds``. ``kill_at`` seconds after the first line (and not
before the agent has read one: a time, not an event of the agent's, so the kill falls anywhere
in its reads and read_coalesce_ms pauses, as a real crash does) the agent's
``slsfwd_input_lines_total`` is read (a lower bound of what it has read) and it gets SIGKILL.
What the stand-in holds then is noted, the spool directory is copied as the agent left it, and
``down_for`` seconds later the agent starts again on that spool. The run ends when every line
arrived, or when nothing new arrived for ``quiet`` seconds and the agent's spool is empty.

Both rsyslog actions get a queue of 100,000 messages (the README's omrelp action; the tutorial's
block plus ``$ActionQueueSize 100000`` and a 1 s retry instead of 30 s). With the default action
queue size of 1,000, rsyslog 8.2302 itself drops messages while the agent is down: the action is
suspended, its queue fills, the disk-assisted part does not take over (impstats:
``queue[DA] enqueued=0``), and each enqueue that waits longer than ``queue.timeoutEnqueue``
(2 s) is discarded (impstats ``discarded.full``; one message per 2 s of outage). Those messages
never reach any transport (the RELP TXNRs have no gap), so they would say nothing about RELP or
TCP.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.spool import DiskSpool
from tests.support.agent_proc import AgentProcess, free_port, sls_section
from tests.support.rsyslog_harness import Rsyslog, logtail_conf_text
from tests.support.standin import Fault, PutLogsStandin

TRANSPORTS = ("tcp", "relp")
APP = "killtest"
_MSG = re.compile(rb" %s - -  (line \d{6})$" % APP.encode())


def ali_log_fmt_template() -> str:
    (template,) = [ln for ln in logtail_conf_text().splitlines() if ln.startswith("$template ALI_LOG_FMT,")]
    return template


def relp_block(port: int) -> str:
    """The README's recommended omrelp action (packaging/rsyslog/81-slsfwd-relp.conf.example)."""
    return f"""\
{ali_log_fmt_template()}
module(load="omrelp")
action(type="omrelp" target="127.0.0.1" port="{port}" template="ALI_LOG_FMT" windowSize="256"
       timeout="30" conn.timeout="10"
       queue.type="LinkedList" queue.size="100000" queue.filename="fwd_relp" queue.dequeueBatchSize="128"
       queue.saveOnShutdown="on" queue.maxDiskSpace="2g"
       action.resumeRetryCount="-1" action.resumeInterval="1")
"""


# The tutorial's block verbatim, with the RELP action's retry interval (1 s instead of 30 s, to
# keep a run short) and queue size (see the module docstring).
TCP_EXTRA_CONF = "$ActionResumeInterval 1\n$ActionQueueSize 100000\n"


def relp_agent(workdir: Path, standin: PutLogsStandin) -> tuple[AgentProcess, int]:
    relp_port = free_port()
    agent = AgentProcess(workdir, sls=sls_section(standin))
    assert agent.config_text.count("[input]\n") == 1
    agent.config_text = agent.config_text.replace("[input]\n", f'[input]\nrelp_listen = "127.0.0.1:{relp_port}"\n')
    return agent, relp_port


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def msgs(standin: PutLogsStandin, app: str = APP) -> collections.Counter:
    return collections.Counter(log.contents["msg"] for log in standin.logs if log.contents.get("app-name") == app)


def numbered(count: int) -> set[str]:
    return {"line %06d" % i for i in range(count)}


async def inject(rsyslog: Rsyslog, app: str, count: int, seconds: float) -> None:
    """``count`` numbered RFC 3164 lines into rsyslog's imtcp on one connection, spread over ``seconds``."""
    _, writer = await asyncio.open_connection("127.0.0.1", rsyslog.tcp_port)
    blocks = 40
    per_block = count // blocks
    loop = asyncio.get_running_loop()
    start = loop.time()
    for b in range(blocks):
        stamp = time.strftime("%b %e %H:%M:%S").encode()
        writer.write(b"".join(
            b"<13>%s killhost %s: line %06d\n" % (stamp, app.encode(), i)
            for i in range(b * per_block, (b + 1) * per_block)
        ))
        await writer.drain()
        await asyncio.sleep(max(0.0, start + (b + 1) * seconds / blocks - loop.time()))
    writer.close()
    await writer.wait_closed()


async def spooled_lines(spool_dir: Path) -> set[str]:
    """The numbered lines in a spool's unacknowledged backlog, read with the agent's own spool."""
    spool = DiskSpool(spool_dir, max_bytes=1 << 40)
    spool.open()
    found: set[str] = set()
    try:
        while (chunk := spool.get_nowait()) is not None:
            for line in chunk.payload.splitlines():
                match = _MSG.search(line)
                if match:
                    found.add(match.group(1).decode())
    finally:
        await spool.close()
    return found


@dataclass
class KillRun:
    transport: str
    sent: int
    counts: collections.Counter = field(default_factory=collections.Counter)  # msg -> deliveries
    read_before_kill: int = 0  # slsfwd_input_lines_total just before the kill
    delivered_at_kill: set[str] = field(default_factory=set)  # in the stand-in right after it
    spooled_at_kill: set[str] = field(default_factory=set)  # unacknowledged in the spool it left
    read_after_restart: int = 0  # slsfwd_input_lines_total of the restarted agent at the end
    relp_duplicates_seen: int = 0  # resends the restarted agent recognised
    exit_code: int | None = None  # of the restarted agent on SIGTERM
    rejections: list = field(default_factory=list)
    seconds: float = 0.0  # from the first line to the end of the run
    diagnostics: str = ""  # rsyslogd's and the agent's logs, for a failure message

    @property
    def missing(self) -> list[str]:
        return sorted(numbered(self.sent) - set(self.counts))

    @property
    def lost(self) -> int:
        return len(self.missing)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.counts.values() if n > 1)

    @property
    def read_by_the_killed_agent(self) -> set[str]:
        """Every line the killed agent had read: delivered and acknowledged, or in its spool."""
        return self.delivered_at_kill | self.spooled_at_kill

    def summary(self) -> str:
        missing = self.missing
        return (f"{self.transport}: sent {self.sent}, arrived {len(self.counts)} distinct, lost {self.lost}, "
                f"duplicates {self.duplicates}; read before the kill >= {self.read_before_kill}, delivered then "
                f"{len(self.delivered_at_kill)}, in its spool {len(self.spooled_at_kill)}; read after the "
                f"restart {self.read_after_restart}, of them recognised as RELP resends {self.relp_duplicates_seen}; "
                f"{self.seconds:.1f} s; missing e.g. {missing[:10]}")


async def _read_lines(agent: AgentProcess) -> int:
    return int((await asyncio.to_thread(scrape, agent.metrics_port))["slsfwd_input_lines_total"])


async def _wait_read(agent: AgentProcess, lines: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        read = await _read_lines(agent)
        if read >= lines or time.monotonic() > deadline:
            return read
        await asyncio.sleep(0.02)


async def _settle(standin: PutLogsStandin, agent: AgentProcess, want: int, *, quiet: float, timeout: float) -> None:
    """Until ``want`` distinct lines arrived, or nothing new for ``quiet`` s with the spool empty."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(msgs(standin))
        if n >= want:
            return
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            metrics = await asyncio.to_thread(scrape, agent.metrics_port)
            if metrics["slsfwd_spool_backlog_lines"] == 0:
                return
        await asyncio.sleep(0.1)


async def kill_9_run(
    workdir: Path,
    transport: str,
    *,
    lines: int = 20_000,
    inject_seconds: float = 4.0,
    kill_at: float = 1.0,
    down_for: float = 3.0,
    read_coalesce_ms: int | None = None,
    service_delay: float = 0.0,
) -> KillRun:
    """One run (see the module docstring); every process it starts is stopped before it returns.

    ``read_coalesce_ms``: the agent's input.read_coalesce_ms, if not its default.
    ``service_delay``: the stand-in answers each PutLogs this much later. At ``kill_at`` or
    more, every line the agent had read is still in flight at the kill, so its spool must hold
    them all.
    """
    assert transport in TRANSPORTS, transport
    run = KillRun(transport, lines)
    async with PutLogsStandin() as standin:
        if service_delay:
            standin.faults.when(lambda _i: True, Fault.delay(service_delay))
        if transport == "relp":
            agent, relp_port = relp_agent(workdir / "agent", standin)
            rsyslog = Rsyslog(workdir / "rsyslog", relp_port, forward_block=relp_block(relp_port))
        else:
            agent = AgentProcess(workdir / "agent", sls=sls_section(standin))
            rsyslog = Rsyslog(workdir / "rsyslog", agent.port, extra_conf=TCP_EXTRA_CONF)
        if read_coalesce_ms is not None:
            agent.config_text = agent.config_text.replace("[input]\n", f"[input]\nread_coalesce_ms = {read_coalesce_ms}\n", 1)
        await agent.start()
        feeding: asyncio.Task | None = None
        try:
            async with rsyslog:
                started = time.monotonic()
                feeding = asyncio.create_task(inject(rsyslog, APP, lines, inject_seconds))
                await _wait_read(agent, 1)
                await asyncio.sleep(max(0.0, started + kill_at - time.monotonic()))
                run.read_before_kill = await _read_lines(agent)
                await agent.kill()
                run.delivered_at_kill = set(msgs(standin))  # an acknowledgement follows the stand-in's 200
                shutil.copytree(agent.spool_dir, workdir / "spool-at-kill")
                await asyncio.sleep(down_for)
                await agent.start()
                await feeding
                await _settle(standin, agent, lines, quiet=15 if transport == "relp" else 5, timeout=90)
                run.seconds = time.monotonic() - started
                metrics = await asyncio.to_thread(scrape, agent.metrics_port)
                run.read_after_restart = int(metrics["slsfwd_input_lines_total"])
                run.relp_duplicates_seen = int(metrics.get("slsfwd_relp_duplicates_total", 0))
                run.diagnostics = rsyslog.log_text(max_lines=40)
            run.exit_code = await agent.stop()
        finally:
            if feeding is not None and not feeding.done():
                feeding.cancel()
            if agent.process is not None and agent.process.returncode is None:
                await agent.kill()
            run.diagnostics += "\n" + agent.stderr()
    run.counts = msgs(standin)
    run.rejections = list(standin.rejections)
    run.spooled_at_kill = await spooled_lines(workdir / "spool-at-kill")
    return run
