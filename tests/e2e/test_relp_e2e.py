"""End to end over RELP: Debian's real rsyslogd (omrelp) -> slsfwd's relp_listen -> PutLogs stand-in.

1. logger messages arrive over RELP with exactly the fields of the plain-TCP path;
2. 20,000 lines at 5,000 lines/s, the agent ``kill -9``ed one second in and restarted three
   seconds later (``tests/support/kill9.py``): over RELP every line arrives; over the tutorial's plain TCP block every
   line the agent had read arrives. How much plain TCP loses, and how many duplicates either
   transport brings (at-least-once), are measured by ``bench/bench_kill9.py``, not asserted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.kill9 import (
    KillRun,
    kill_9_run,
    numbered,
    relp_agent,
    relp_block,
    scrape,
)
from tests.support.rsyslog_harness import Rsyslog
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

# PutLogs answers take a second, longer than the agent runs before the kill: whatever it has read
# is still in flight then, so the restarted agent must deliver it from the spool it was left.
SERVICE_DELAY = 1.0


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
        # A deadline far beyond the bound below: a stop that waits for the open session would
        # run into it, a clean one is over long before, however loaded the host.
        agent.config_text = "shutdown_timeout_s = 60.0\n" + agent.config_text
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
                assert time.monotonic() - started < 20
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


def assert_nothing_read_was_lost(run: KillRun) -> None:
    """The spool's promise, over either transport: a kill -9 loses nothing the agent had read."""
    assert run.exit_code == 0, run.diagnostics
    assert not run.rejections, run.rejections[:3]
    assert set(run.counts) <= numbered(run.sent), "lines that were never sent"
    assert run.read_before_kill > 0 and run.spooled_at_kill, f"nothing in flight at the kill: {run.summary()}"
    # Everything it had read was delivered and acknowledged, or is in the spool it left ...
    assert len(run.read_by_the_killed_agent) >= run.read_before_kill, run.summary()
    # ... and what was in the spool was delivered by the restarted agent.
    undelivered = sorted(run.spooled_at_kill - set(run.counts))
    assert not undelivered, f"{len(undelivered)} spooled lines never delivered, e.g. {undelivered[:10]}; {run.summary()}"


async def test_kill_9_over_relp_loses_nothing(tmp_path: Path) -> None:
    run = await kill_9_run(tmp_path, "relp", service_delay=SERVICE_DELAY)
    assert_nothing_read_was_lost(run)
    assert run.lost == 0, f"{run.summary()}\n{run.diagnostics}"


async def test_kill_9_over_plain_tcp_loses_nothing_the_agent_had_read(tmp_path: Path) -> None:
    # Plain TCP has no acknowledgement: what sits in the kernel's buffers when the agent dies
    # (and a read held for input.read_coalesce_ms) is lost, and how much varies from run to run
    # (bench/README.md). The README promises nothing more for it; the spool's promise holds.
    run = await kill_9_run(tmp_path, "tcp", service_delay=SERVICE_DELAY)
    assert_nothing_read_was_lost(run)
