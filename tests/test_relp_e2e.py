"""End to end over RELP: Debian's real rsyslogd (omrelp) -> slsfwd's relp_listen -> PutLogs stand-in.

1. logger messages arrive over RELP with exactly the fields of the plain-TCP path;
2. 20,000 lines, the agent ``kill -9``ed one second in and restarted three seconds later:
   every line arrives (duplicates are counted and printed, not failed: at-least-once);
3. the same kill over plain TCP with the tutorial's block, for comparison: how many were lost
   is printed, nothing is asserted.

Run with ``-s`` to see the numbers.

Both rsyslog actions get a queue of 100,000 messages (the brief's omrelp block plus
``queue.size="100000"``; the tutorial's block plus ``$ActionQueueSize 100000`` and a 1 s retry).
With the default action queue size of 1,000, rsyslog 8.2302 itself drops messages while the
agent is down: the action is suspended, its queue fills, the disk-assisted part does not take
over (impstats: ``queue[DA] enqueued=0``), and each enqueue that waits longer than
``queue.timeoutEnqueue`` (2 s) is discarded (impstats ``discarded.full``; one message per 2 s of
outage). Those messages never reach any transport (the RELP TXNRs have no gap), so they would
say nothing about RELP or TCP.
"""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_proc import AgentProcess, free_port, sls_section
from tests.rsyslog_harness import Rsyslog, logtail_conf_text
from tests.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

KILL_LINES = 20_000
INJECT_SECONDS = 4.0  # the lines reach rsyslog over 4 s, so the kill at 1 s is mid-stream
KILL_AFTER = 1.0
DOWN_FOR = 3.0


def ali_log_fmt_template() -> str:
    (template,) = [ln for ln in logtail_conf_text().splitlines() if ln.startswith("$template ALI_LOG_FMT,")]
    return template


def relp_block(port: int) -> str:
    return f"""\
{ali_log_fmt_template()}
module(load="omrelp")
action(type="omrelp" target="127.0.0.1" port="{port}" template="ALI_LOG_FMT" windowSize="256"
       timeout="30" conn.timeout="10"
       queue.type="LinkedList" queue.size="100000" queue.filename="fwd_relp" queue.dequeueBatchSize="128"
       queue.saveOnShutdown="on" queue.maxDiskSpace="2g"
       action.resumeRetryCount="-1" action.resumeInterval="1")
"""


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


def msgs(standin: PutLogsStandin, app: str) -> collections.Counter:
    return collections.Counter(log.contents["msg"] for log in standin.logs if log.contents.get("app-name") == app)


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
            b"<13>%s relphost %s: line %06d\n" % (stamp, app.encode(), i)
            for i in range(b * per_block, (b + 1) * per_block)
        ))
        await writer.drain()
        await asyncio.sleep(max(0.0, start + (b + 1) * seconds / blocks - loop.time()))
    writer.close()
    await writer.wait_closed()


async def wait_settled(standin: PutLogsStandin, app: str, want: int, *, quiet: float, timeout: float) -> None:
    """Until ``want`` distinct messages arrived, or nothing new came for ``quiet`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, last_change = -1, loop.time()
    while loop.time() < deadline:
        n = len(msgs(standin, app))
        if n >= want:
            return
        if n != last:
            last, last_change = n, loop.time()
        elif loop.time() - last_change > quiet:
            return
        await asyncio.sleep(0.1)


def report(what: str, counts: collections.Counter, sent: int, seconds: float) -> tuple[int, int]:
    expected = {"line %06d" % i for i in range(sent)}
    missing = sorted(expected - set(counts))
    lost = len(missing)
    if missing:
        print(f"{what}: missing {missing[:20]}{' ...' if lost > 20 else ''}")
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    print(f"\n{what}: sent {sent}, arrived {len(counts)} distinct, lost {lost}, duplicates {duplicated} "
          f"({seconds:.1f} s from the first line to the last)")
    return lost, duplicated


# (logger arguments, app-name, msg)
LOGGER_CASES = [
    (["-t", "relp-app", "over relp"], "relp-app", "over relp"),
    (["-t", "relp-app", "--id=4242", "with pid"], "relp-app", "with pid"),
    (["-t", "relp-app", "utf8 äöü 日本語 😀"], "relp-app", "utf8 äöü 日本語 😀"),
    (["-t", "relp-app", "   spaces kept   "], "relp-app", "   spaces kept   "),
    (["-t", "relp-app", "line1\nline2"], "relp-app", "line1#012line2"),
    (["-t", "relp-app", "--size", "8192", "6kb-" + "x" * 6000], "relp-app", "6kb-" + "x" * 6000),
    (["-p", "local0.err", "-t", "relp-db", "error priority"], "relp-db", "error priority"),
]


async def test_logger_messages_over_relp(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent, relp_port = relp_agent(tmp_path / "agent", standin)
        await agent.start()
        try:
            async with Rsyslog(tmp_path / "rsyslog", relp_port, forward_block=relp_block(relp_port)) as rsyslog:
                for args, *_ in LOGGER_CASES:
                    await rsyslog.logger(*args)
                await standin.wait_for_logs(len(LOGGER_CASES), timeout=30)
                await asyncio.sleep(0.5)
                metrics = await asyncio.to_thread(scrape, agent.metrics_port)
                assert metrics["slsfwd_relp_sessions"] == 1
                # SIGTERM with the session open: serverclose hint, clean and quick exit.
                started = time.monotonic()
                assert await agent.stop() == 0, agent.stderr()
                assert time.monotonic() - started < 5
        finally:
            if agent.process is not None and agent.process.returncode is None:
                await agent.kill()
    assert not standin.rejections
    assert standin.log_count == len(LOGGER_CASES), "a message arrived twice"
    by_msg = {log.contents["msg"]: log for log in standin.logs}
    for args, app, msg in LOGGER_CASES:
        assert by_msg[msg].contents == {
            "hostname": rsyslog.hostname,
            "pri-text": "local0.err" if "local0.err" in args else "user.notice",
            "protocol-version": "0",
            "app-name": app,
            "procid": "4242" if "--id=4242" in args else "-",
            "msgid": "-",
            "msg": msg,
        }, args
    assert metrics['slsfwd_relp_frames_total{command=syslog}'] == len(LOGGER_CASES)
    assert metrics['slsfwd_relp_frames_total{command=open}'] == 1
    assert metrics["slsfwd_relp_framing_errors_total"] == 0
    assert metrics["slsfwd_input_lines_total"] == len(LOGGER_CASES)


async def test_kill_9_over_relp_loses_nothing(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent, relp_port = relp_agent(tmp_path / "agent", standin)
        await agent.start()
        try:
            async with Rsyslog(tmp_path / "rsyslog", relp_port, forward_block=relp_block(relp_port)) as rsyslog:
                started = time.monotonic()
                feeding = asyncio.create_task(inject(rsyslog, "relpkill", KILL_LINES, INJECT_SECONDS))
                await asyncio.sleep(KILL_AFTER)
                await agent.kill()
                at_kill = len(msgs(standin, "relpkill"))
                await asyncio.sleep(DOWN_FOR)
                await agent.start()
                await feeding
                await wait_settled(standin, "relpkill", KILL_LINES, quiet=15, timeout=60)
                took = time.monotonic() - started
                metrics = await asyncio.to_thread(scrape, agent.metrics_port)
            assert await agent.stop() == 0
        finally:
            if agent.process is not None and agent.process.returncode is None:
                await agent.kill()
    counts = msgs(standin, "relpkill")
    lost, duplicated = report("RELP", counts, KILL_LINES, took)
    print(f"RELP: {at_kill} shipped before the kill; the restarted agent counted "
          f"{metrics['slsfwd_relp_duplicates_total']:.0f} recognisable resends "
          "(it cannot know the ones from before its start)")
    assert lost == 0, f"{lost} lines lost over RELP\n{rsyslog.log_text(max_lines=40)}\n{agent.stderr()}"
    assert not standin.rejections


async def test_kill_9_over_plain_tcp_for_comparison(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path / "agent", sls=sls_section(standin))
        await agent.start()
        try:
            # The tutorial's block verbatim, with the RELP block's retry interval (1 s instead of
            # 30 s, to keep the test short) and queue size (see the module docstring).
            extra = "$ActionResumeInterval 1\n$ActionQueueSize 100000\n"
            async with Rsyslog(tmp_path / "rsyslog", agent.port, extra_conf=extra) as rsyslog:
                started = time.monotonic()
                feeding = asyncio.create_task(inject(rsyslog, "tcpkill", KILL_LINES, INJECT_SECONDS))
                await asyncio.sleep(KILL_AFTER)
                await agent.kill()
                await asyncio.sleep(DOWN_FOR)
                await agent.start()
                await feeding
                await wait_settled(standin, "tcpkill", KILL_LINES, quiet=5, timeout=40)
                took = time.monotonic() - started
            assert await agent.stop() == 0
        finally:
            if agent.process is not None and agent.process.returncode is None:
                await agent.kill()
    report("plain TCP (tutorial block)", msgs(standin, "tcpkill"), KILL_LINES, took)
