"""A rough day of the service, end to end (issue 4's scenario), against the real agent.

Quota errors on every 3rd request, resets on every 7th, 50 ms answers; then an
outage; then a restart with a wrong secret, and another with the right one.
Every line must arrive, with no rejection other than the wrong secret's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e

RSS_LIMIT = 250 * 1024 * 1024


def numbered(start: int, count: int) -> list[bytes]:
    now = int(time.time())
    return [b"0.1 sys_tag %d 127.0.0.1 web-1 user.notice 0 rough 1 -  line %06d\n" % (now, i) for i in range(start, start + count)]


async def send_at_rate(port: int, lines: list[bytes], per_second: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    step = per_second // 20
    started = time.monotonic()
    for n, i in enumerate(range(0, len(lines), step)):
        writer.write(b"".join(lines[i : i + step]))
        await writer.drain()
        await asyncio.sleep(max(0.0, started + (n + 1) / 20 - time.monotonic()))
    writer.close()
    await writer.wait_closed()


async def test_quota_resets_outage_and_wrong_secret(tmp_path: Path) -> None:
    rss: list[int] = []
    async with PutLogsStandin() as standin:
        outage = False
        standin.faults.when(lambda _i: outage, Fault.error(503, "ServerBusy"))
        standin.faults.when(lambda i: i % 3 == 2, Fault.error(403, "WriteQuotaExceed"))
        standin.faults.when(lambda i: i % 7 == 6, Fault.reset())
        standin.faults.when(lambda _i: True, Fault.delay(0.05))
        agent = AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=2000)
        await agent.start()

        await send_at_rate(agent.port, numbered(0, 30000), 10000)
        rss.append(agent.rss_bytes())
        outage = True
        await send_at_rate(agent.port, numbered(30000, 10000), 2000)
        await asyncio.sleep(10)  # the outage lasts 15 s in all
        rss.append(agent.rss_bytes())
        outage = False
        assert await agent.stop() == 0

        wrong = AgentProcess(tmp_path, sls=sls_section(standin).replace("test-secret", "not-the-secret"), port=agent.port)
        await wrong.start()
        await send_at_rate(wrong.port, numbered(40000, 1000), 1000)
        await asyncio.sleep(5)
        assert await wrong.stop() == 0

        right = AgentProcess(tmp_path, sls=sls_section(standin), port=agent.port)
        await right.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_unique(standin)) < 41000:
            rss.append(right.rss_bytes())
            await asyncio.sleep(0.5)
        assert await right.stop() == 0

    unique = _unique(standin)
    missing = {"line %06d" % i for i in range(41000)} - unique
    assert not missing, f"{len(missing)} lines missing, e.g. {sorted(missing)[:5]}; {standin.stats()}"
    assert {r.error_code for r in standin.rejections} <= {"SignatureNotMatch"}
    assert max(rss) < RSS_LIMIT, [r // 2**20 for r in rss]


def _unique(standin: PutLogsStandin) -> set[str]:
    return {log.contents["msg"] for log in standin.logs}
