"""Hostile input against the real agent: it stays up, bounded, and loses no good line."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

RSS_LIMIT = 250 * 1024 * 1024


def good(n: int, tag: str = "good") -> bytes:
    now = int(time.time())
    return f"0.1 sys_tag {now} 127.0.0.1 web-1 user.notice 0 {tag} 1 -  {tag} line {n}\n".encode()


async def test_hostile_bytes_never_crash_and_good_lines_arrive(tmp_path: Path) -> None:
    rng = random.Random(7)
    now = int(time.time())
    hostile = [
        bytes(rng.getrandbits(8) for _ in range(300)).replace(b"\n", b"") + b"\n",  # random bytes
        b"0.1 sys_tag %d 127.0.0.1 h user.notice 0 bad - -  invalid \xff\xfe\xc3 utf8\n" % now,
        b"0.1 sys_tag notanumber 127.0.0.1 h user.notice 0 bad - -  non-numeric time\n",
        b"0.1 sys_tag %d 127.0.0.1 h user.notice 0 old - -  thirty days old\n" % (now - 30 * 86400),
        b"0.1 sys_tag %d 127.0.0.1 h user.notice 0 future - -  next day\n" % (now + 86400),
        b"0.1 sys_tag %d 127.0.0.1 h user.notice 0 nul - -  raw \x00 NUL\n" % now,
        b"0.1 sys_tag %d 127.0.0.1 h user.notice 0 crlf - -  crlf ended\r\n" % now,
        b"9.9 other_tag 1 2 3\n",
        b"\n\n\r\n",
        b"0.1\n",
    ]
    good_lines = [good(i) for i in range(200)]
    stream = b"".join(x for pair in zip(good_lines, hostile * 20) for x in pair)
    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(stream)
            await standin.wait_for_logs(200 + 8 * 20, timeout=30)
            await asyncio.sleep(0.5)
            assert agent.process.returncode is None
    assert not standin.rejections, standin.rejections[:3]
    msgs = [log.contents["msg"] for log in standin.logs]
    assert sorted(m for m in msgs if m.startswith("good line")) == sorted(f"good line {i}" for i in range(200))
    old = [log for log in standin.logs if log.contents.get("msg") == "thirty days old"]
    assert old and old[0].contents["orig-time"] == str(now - 30 * 86400)
    assert any("invalid \\xff\\xfe\\xc3 utf8" == m for m in msgs)
    assert any(log.contents.get("parse-error") == "bad_timestamp" for log in standin.logs)
    assert "crlf ended" in msgs


async def test_huge_lines_idle_connections_and_slow_senders(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            idle = [await asyncio.open_connection("127.0.0.1", agent.port) for _ in range(300)]

            # 3 MB line with an ending newline, then a good line on the same connection.
            _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
            writer.write(good(0, "before-huge") + b"0.1 sys_tag 1 1 h p 0 a - - " + b"A" * 3_000_000 + b"\n" + good(1, "after-huge"))
            await writer.drain()
            writer.close()

            # 5 MB with no newline, then the peer vanishes (reset).
            _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
            writer.write(good(2, "before-vanish") + b"B" * 5_000_000)
            await writer.drain()
            writer.transport.abort()

            # One byte at a time.
            _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
            for byte in good(3, "slow"):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.close()

            await standin.wait_for_logs(6, timeout=30)
            rss = agent.rss_bytes()
            for _, w in idle:
                w.close()
            assert agent.process.returncode is None
    assert rss < RSS_LIMIT, f"RSS {rss / 2**20:.0f} MiB"
    assert not standin.rejections
    msgs = [log.contents["msg"] for log in standin.logs]
    for name, n in (("before-huge", 0), ("after-huge", 1), ("before-vanish", 2), ("slow", 3)):
        assert f"{name} line {n}" in msgs
    cut = [m for m in msgs if m.startswith("AAAA")]
    assert cut and len(cut[0]) < 1_048_576  # the 3 MB line was cut at max_line_bytes, not dropped
    assert any(m.startswith("BBBB") for m in msgs)  # the unterminated tail is kept (cut), not lost
