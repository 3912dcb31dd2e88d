"""End to end: Debian's real rsyslogd (tutorial block verbatim) -> slsfwd -> PutLogs stand-in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.ops import hostinfo
from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.rsyslog_harness import Rsyslog
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

SIX_KB = "6kb-" + "x" * 6000

# (logger arguments, expected app-name, procid, msgid, msg, protocol-version)
LOGGER_CASES = [
    (["plain message"], None, "-", "-", "plain message", "0"),
    (["-t", "todo-list", "tagged message"], "todo-list", "-", "-", "tagged message", "0"),
    (["-t", "todo-list", "--id=4242", "with pid"], "todo-list", "4242", "-", "with pid", "0"),
    (["-t", "shop", "utf8 äöü 日本語 emoji 😀🚀"], "shop", "-", "-", "utf8 äöü 日本語 emoji 😀🚀", "0"),
    (["-t", "spaces", "   three leading and trailing   "], "spaces", "-", "-", "   three leading and trailing   ", "0"),
    (["-t", "tabs", "tab\there"], "tabs", "-", "-", "tab#011here", "0"),
    (["-t", "multi", "line1\nline2"], "multi", "-", "-", "line1#012line2", "0"),
    (["-t", "big", "--size", "8192", SIX_KB], "big", "-", "-", SIX_KB, "0"),
    (["-p", "local0.err", "-t", "dbapp", "error priority"], "dbapp", "-", "-", "error priority", "0"),
]


async def test_rsyslog_to_slsfwd_to_putlogs(tmp_path: Path) -> None:
    started = int(time.time())
    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path / "agent", sls=sls_section(standin)) as agent:
            async with Rsyslog(tmp_path / "rsyslog", agent.port) as rsyslog:
                for args, *_ in LOGGER_CASES:
                    await rsyslog.logger(*args)
                await rsyslog.send_tcp(
                    b"<165>1 2026-11-25T07:26:36.000Z otherhost orders 777 ORDER42 - rfc5424 with msgid",
                    source_ip="127.0.0.2",
                )
                await rsyslog.send_tcp(b"<13>Nov 25 07:26:36 webhost01 legacy: from another host", source_ip="127.0.0.3")
                await standin.wait_for_logs(len(LOGGER_CASES) + 2, timeout=30)
                await _no_more_logs(standin, len(LOGGER_CASES) + 2)
    finished = int(time.time())
    assert not standin.rejections
    by_msg = {log.contents["msg"]: log for log in standin.logs}
    assert len(by_msg) == len(standin.logs), "a message arrived twice"
    host_ip = hostinfo.primary_ipv4()
    for args, app, procid, msgid, msg, version in LOGGER_CASES:
        log = by_msg[msg]
        expected_app = app or log.contents["app-name"]  # logger's default tag is the login name
        assert log.contents == {
            "hostname": rsyslog.hostname,
            "pri-text": "local0.err" if "local0.err" in args else "user.notice",
            "protocol-version": version,
            "app-name": expected_app,
            "procid": procid,
            "msgid": msgid,
            "msg": msg,
        }, args
        assert started - 1 <= log.time <= finished + 1
        assert log.source == host_ip
        assert log.tags == {"__hostname__": hostinfo.hostname()}

    remote = by_msg["rfc5424 with msgid"]
    assert remote.source == "127.0.0.2"
    assert remote.contents["hostname"] == "otherhost"
    assert remote.contents["app-name"] == "orders"
    assert remote.contents["procid"] == "777"
    assert remote.contents["msgid"] == "ORDER42"
    assert remote.contents["protocol-version"] == "1"
    assert remote.contents["pri-text"].startswith("local4.notice")
    legacy = by_msg["from another host"]
    assert legacy.source == "127.0.0.3"
    assert legacy.contents["hostname"] == "webhost01"
    assert legacy.contents["app-name"] == "legacy"


async def _no_more_logs(standin: PutLogsStandin, expected: int) -> None:
    import asyncio

    await asyncio.sleep(0.5)
    assert standin.log_count == expected, f"expected exactly {expected} logs, got {standin.log_count}"
