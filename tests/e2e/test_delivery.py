"""Delivery semantics of the real agent: dead letters, held credentials, backpressure, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e


def lines(prefix: str, count: int, start: int = 0) -> bytes:
    now = int(time.time())
    return b"".join(
        f"0.1 sys_tag {now} 127.0.0.1 web-1 user.notice 0 app 1 -  {prefix} {i}\n".encode()
        for i in range(start, start + count)
    )


async def test_one_bad_log_is_dead_lettered_and_the_rest_delivered(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        standin.log_rules.append(
            lambda log: (400, "InvalidKey", "poisoned") if log.contents.get("msg") == "poison 17" else None
        )
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(lines("poison", 100))
            await standin.wait_for_logs(99, timeout=30)
            await asyncio.sleep(0.5)
    delivered = {log.contents["msg"] for log in standin.logs}
    assert delivered == {f"poison {i}" for i in range(100)} - {"poison 17"}
    dead = [json.loads(x) for f in (agent.spool_dir / "dead-letter").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(dead) == 1
    assert dead[0]["reason"] == "InvalidKey"
    assert dict(map(tuple, dead[0]["contents"]))["msg"] == "poison 17"


async def test_wrong_secret_keeps_data_until_restart_with_right_secret(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        wrong = sls_section(standin).replace(standin.verifier.access_key_secret, "wrong-secret")
        agent = AgentProcess(tmp_path, sls=wrong)
        agent.config_text = "shutdown_timeout_s = 60.0\n" + agent.config_text  # sitting it out would take a minute
        await agent.start()
        await agent.send(lines("held", 1000))
        await asyncio.sleep(3)
        assert standin.log_count == 0
        assert {r.error_code for r in standin.rejections} == {"SignatureNotMatch"}
        health = await _http_get(agent.metrics_port, "/healthz")
        assert health.startswith("503") and "SignatureNotMatch" in health
        assert "wrong-secret" not in agent.stderr()
        stopping = time.monotonic()
        assert await agent.stop() == 0
        # Nothing can be shipped: the agent does not sit out its shutdown deadline, the spool keeps it all.
        assert time.monotonic() - stopping < 20

        right = AgentProcess(tmp_path, sls=sls_section(standin), port=agent.port)
        async with right:
            await standin.wait_for_logs(1000, timeout=30)
    assert {log.contents["msg"] for log in standin.logs} == {f"held {i}" for i in range(1000)}


async def test_full_spool_blocks_the_sender_and_memory_stays_flat(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        standin.faults.when(lambda _i: outage, Fault.error(503, "ServerBusy"))
        outage = True
        agent = AgentProcess(tmp_path, sls=sls_section(standin))
        agent.config_text = agent.config_text.replace("[spool]\n", "[spool]\nmax_bytes = 2000000\n")
        await agent.start()
        _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        sent = 0
        blocked = False
        rss = []
        # The kernel may buffer a lot (tcp_rmem autotunes up to 32 MB on these machines), so keep
        # sending until the sender blocks: up to 600 x 140 kB = 84 MB.
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        for block in range(600):
            writer.write(lines("bp", 1000, block * 1000))
            try:
                await asyncio.wait_for(writer.drain(), 2)
            except asyncio.TimeoutError:
                blocked = True
                break
            sent += 1000
            if block % 20 == 0:
                rss.append(agent.rss_bytes())
        assert blocked, "the sender was never blocked by a full spool"
        rss.append(agent.rss_bytes())
        assert max(rss) - min(rss) < 40 * 1024 * 1024, rss
        metrics = await _http_get(agent.metrics_port, "/metrics")
        assert "slsfwd_input_backpressure_seconds_total" in metrics
        outage = False
        await writer.drain()  # the sender is released once the service is back
        writer.close()
        await standin.wait_for_logs(sent + 1000, timeout=60)
        assert await agent.stop() == 0
    assert len({log.contents["msg"] for log in standin.logs}) >= sent + 1000


async def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        standin.faults.when(lambda _i: True, Fault.hang())
        agent = AgentProcess(tmp_path, sls=sls_section(standin))
        agent.config_text = "shutdown_timeout_s = 30.0\n" + agent.config_text
        await agent.start()
        await agent.send(lines("stuck", 10))
        await asyncio.sleep(0.5)
        agent.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        code = await agent.stop(signal.SIGINT, timeout=5)
        assert time.monotonic() - started < 3
        assert code == 130


async def _http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.decode(errors="replace").partition("\r\n")
    body = rest.partition("\r\n\r\n")[2]
    return status_line.split(" ", 1)[1] + "\n" + body


@pytest.mark.parametrize(
    "fault",
    [
        Fault.error(400, "PostBodyTooLarge"),
        Fault.error(400, "InvalidTimestamp"),
        Fault.error(400, "InvalidEncoding"),
        Fault.error(400, "RequestTimeExpired"),
        Fault.error(500, "InternalServerError"),
        Fault.error(404, "LogStoreNotExist"),
    ],
    ids=lambda f: f.error_code,
)
async def test_error_table_rows_deliver_everything(tmp_path: Path, fault: Fault) -> None:
    """Each row of the error table ends with every log delivered once the service accepts it."""
    async with PutLogsStandin() as standin:
        standin.faults.at(0, fault)
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(lines("row", 64))
            timeout = 45 if fault.error_code == "LogStoreNotExist" else 20  # held errors retry every 30 s
            await standin.wait_for_logs(64, timeout=timeout)
    assert sorted(log.contents["msg"] for log in standin.logs) == sorted(f"row {i}" for i in range(64))
    assert not list((agent.spool_dir / "dead-letter").glob("*.jsonl"))
