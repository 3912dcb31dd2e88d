"""Inherited listening sockets (LISTEN_FDS): the port outlives the agent."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from agent.input.activation import listen_backlog
from tests.support.agent_proc import (
    AgentProcess,
    free_port,
    sls_section,
    slsfwd_command,
)
from tests.support.standin import PutLogsStandin


def test_listen_backlog_reads_what_listen_set() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert listen_backlog(sock) is None  # bound, not listening
        sock.listen(1024)
        assert listen_backlog(sock) == 1024
        sock.listen(77)
        assert listen_backlog(sock) == 77
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert listen_backlog(udp) is None


def lines(prefix: str, count: int) -> bytes:
    now = int(time.time())
    return b"".join(f"0.1 sys_tag {now} 127.0.0.1 web-1 user.notice 0 app 1 -  {prefix} {i}\n".encode() for i in range(count))


async def send(port: int, data: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is not installed")
@pytest.mark.e2e
async def test_systemd_socket_activate_hands_the_socket_over(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin))
        agent.config_path.parent.mkdir(parents=True, exist_ok=True)
        agent.config_path.write_text(agent.config_text)
        proc = await asyncio.create_subprocess_exec(
            "systemd-socket-activate", "-l", f"127.0.0.1:{agent.port}", *slsfwd_command(), "run", "--config",
            str(agent.config_path), stderr=open(agent.stderr_path, "ab"), env=agent.env,
        )
        try:
            await asyncio.sleep(0.5)
            await send(agent.port, lines("activated", 50))  # this connection starts the agent
            await standin.wait_for_logs(50, timeout=30)
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert "listening on 127.0.0.1:" in agent.stderr()


@pytest.mark.e2e
async def test_lines_sent_while_the_agent_is_down_wait_in_the_inherited_socket(tmp_path: Path) -> None:
    """A supervisor (here the test, as systemd would) owns the socket; the agent is killed and restarted."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = free_port()
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin), port=port)
        agent.config_path.parent.mkdir(parents=True, exist_ok=True)
        agent.config_path.write_text(agent.config_text)

        async def start() -> asyncio.subprocess.Process:
            fd = listener.fileno()
            # sd_listen_fds(): the socket as fd 3, and LISTEN_PID naming this very process (exec keeps it).
            launcher = (
                "import os, sys\n"
                f"os.dup2({fd}, 3)\nos.close({fd})\n"
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
                "os.execvp(sys.argv[1], sys.argv[1:])\n"
            )
            return await asyncio.create_subprocess_exec(
                sys.executable, "-c", launcher, *slsfwd_command(), "run", "--config", str(agent.config_path),
                pass_fds=(fd,), stderr=open(agent.stderr_path, "ab"), env=agent.env,
            )

        first = await start()
        await send(port, lines("before", 100))
        await standin.wait_for_logs(100, timeout=30)
        # asyncio listens again on a socket it is handed; the supervisor's backlog must survive that.
        assert listen_backlog(listener) == 1024
        first.kill()
        await first.wait()

        # The agent is dead, yet the port accepts: the lines wait in the kernel.
        await send(port, lines("while-down", 100))
        second = await start()
        # Count the lines themselves: "before" lines whose acknowledgement the kill beat are
        # shipped again (at-least-once), so 200 logs can arrive before every "while-down" one.
        waiting = {f"while-down {i}" for i in range(100)}
        for _ in range(300):
            if waiting <= {log.contents["msg"] for log in standin.logs}:
                break
            await asyncio.sleep(0.1)
        second.terminate()
        assert await asyncio.wait_for(second.wait(), 20) == 0
    listener.close()
    msgs = {log.contents["msg"] for log in standin.logs}
    assert {f"while-down {i}" for i in range(100)} <= msgs
