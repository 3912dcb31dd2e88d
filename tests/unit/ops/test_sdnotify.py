"""sd_notify: READY, WATCHDOG at half of WATCHDOG_USEC, STOPPING; against the real process."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from agent.ops.sdnotify import Notifier
from tests.support.agent_proc import AgentProcess


def test_notifier_is_a_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"WATCHDOG_USEC": "2000000"}, 1.0), ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "x"}, None),
     ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None), ({}, None)],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/tmp/x", **env}).watchdog_interval == expected


@pytest.mark.e2e
async def test_ready_watchdog_stopping_from_the_real_agent(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    messages: list[tuple[float, str]] = []

    async def collect(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.2)
            except asyncio.TimeoutError:
                continue
            messages.append((time.monotonic(), data.decode()))

    stop = asyncio.Event()
    collector = asyncio.create_task(collect(stop))
    agent = AgentProcess(tmp_path, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    await agent.start()
    started = time.monotonic()
    await asyncio.sleep(6)
    code = await agent.stop()
    await asyncio.sleep(0.3)
    stop.set()
    await collector
    sock.close()

    texts = [m for _, m in messages]
    assert code == 0
    assert "READY=1" in texts[0].splitlines()
    watchdogs = [t for t, m in messages if "WATCHDOG=1" in m.splitlines() and t - started <= 6.2]
    assert len(watchdogs) >= 2, texts
    assert any("STOPPING=1" in m.splitlines() for m in texts[1:])
    assert any(line.startswith("STATUS=") for m in texts for line in m.splitlines())
