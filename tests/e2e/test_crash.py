"""kill -9 of the real agent: nothing that reached it is lost (issue 3).

Delivery is at-least-once: what was in flight at the kill may arrive twice;
duplicates of lines acknowledged long before a kill are limited.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e


def numbered(start: int, count: int) -> bytes:
    now = int(time.time())
    return b"".join(
        b"0.1 sys_tag %d 127.0.0.1 web-1 user.notice 0 crash 1 -  line %06d\n" % (now, i)
        for i in range(start, start + count)
    )


def received(standin: PutLogsStandin) -> collections.Counter:
    return collections.Counter(log.contents["msg"] for log in standin.logs)


async def send_in_pieces(agent: AgentProcess, data: bytes, pieces: int = 20) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_kill_9_with_service_down_then_slow_service(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        # Phase 1: the service is down. 20,000 lines arrive; kill -9 two seconds later.
        standin.faults.when(lambda _i: phase == 1, Fault.error(503, "ServerBusy"))
        phase = 1
        agent = AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=200)
        await agent.start()
        await send_in_pieces(agent, numbered(0, 20000))
        await asyncio.sleep(2)
        await agent.kill()
        assert standin.log_count == 0

        # The service comes back; the restarted agent replays the spool.
        phase = 0
        await agent.start()
        await standin.wait_for_logs(20000, timeout=60)
        await asyncio.sleep(1)  # let the ledger record the acknowledgements

        # Phase 2: every answer takes 1.5 s; 20,000 more lines; kill -9 one second in.
        standin.faults.when(lambda _i: phase == 2, Fault.delay(1.5))
        phase = 2
        await send_in_pieces(agent, numbered(20000, 20000))
        await asyncio.sleep(1)
        await agent.kill()
        phase = 0
        await agent.start()
        await _wait_unique(standin, 40000, timeout=60)
        assert await agent.stop() == 0

    counts = received(standin)
    expected = {"line %06d" % i for i in range(40000)}
    assert set(counts) == expected, f"missing {len(expected - set(counts))}"
    first_dups = sum(1 for i in range(20000) if counts["line %06d" % i] > 1)
    assert first_dups <= 200, f"{first_dups} of the first 20,000 lines were replayed"
    assert not standin.rejections


async def test_kill_9_while_receiving(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=200)
        await agent.start()
        sent = 0
        _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        for block in range(50):
            writer.write(numbered(block * 1000, 1000))
            await writer.drain()
            sent += 1000
            if block == 25:
                break
        # Make sure the agent read what was sent (not merely the kernel), then kill it mid-stream.
        await _wait_for_spooled(agent, sent)
        await agent.kill()
        writer.close()
        await agent.start()
        await _wait_unique(standin, sent, timeout=60)
        assert await agent.stop() == 0
    assert set(received(standin)) == {"line %06d" % i for i in range(sent)}


async def _wait_unique(standin: PutLogsStandin, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(received(standin)) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(received(standin))} unique logs of {n}; stand-in: {standin.stats()}")


async def _wait_for_spooled(agent: AgentProcess, lines: int, timeout: float = 20) -> None:
    """Poll the agent's metrics until it has read ``lines`` lines."""
    import urllib.request

    url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read().decode())
        except OSError:
            await asyncio.sleep(0.1)
            continue
        for line in text.splitlines():
            if line.startswith("slsfwd_input_lines_total ") and float(line.split()[1]) >= lines:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent did not read {lines} lines in time")
