"""`slsfwd spool verify` and `slsfwd dead-letter replay`, run as a user runs them."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, sls_section, slsfwd_command
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e


async def run_cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    proc = await asyncio.create_subprocess_exec(
        *slsfwd_command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def lines(prefix: str, count: int) -> bytes:
    now = int(time.time())
    return b"".join(f"0.1 sys_tag {now} 127.0.0.1 web-1 user.notice 0 app 1 -  {prefix} {i}\n".encode() for i in range(count))


async def test_spool_verify_reports_backlog_and_corruption(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        standin.faults.when(lambda _i: True, Fault.error(503, "ServerBusy"))
        agent = AgentProcess(tmp_path, sls=sls_section(standin))
        await agent.start()
        for _ in range(5):  # five reads, five spool records
            await agent.send(lines("kept", 60))
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)
        assert await agent.stop() == 0
    code, out, err = await run_cli("spool", "verify", "--config", str(agent.config_path))
    assert code == 0, err
    assert "backlog 300 lines" in out and "healthy" in out
    segment = max((agent.spool_dir / "queue").glob("*.seg"), key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    code, out, err = await run_cli("spool", "verify", "--config", str(agent.config_path))
    assert code == 1
    assert "corrupt 1 records" in out and "backlog 240 lines" in out


async def test_dead_letter_replay_ships_again_and_removes_accepted(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        poisoned = {"poison 3", "poison 7"}
        standin.log_rules.append(lambda log: (400, "InvalidKey", "bad") if log.contents.get("msg") in poisoned else None)
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(lines("poison", 10))
            await standin.wait_for_logs(8, timeout=30)
            await asyncio.sleep(0.5)
        dead_dir = agent.spool_dir / "dead-letter"
        assert sum(len(f.read_text().splitlines()) for f in dead_dir.glob("*.jsonl")) == 2

        # Still rejected: kept, exit 1, with the reason.
        code, out, _ = await run_cli("dead-letter", "replay", "--config", str(agent.config_path))
        assert code == 1 and "2 still rejected" in out and "InvalidKey: 2" in out
        assert sum(len(f.read_text().splitlines()) for f in dead_dir.glob("*.jsonl")) == 2

        # The cause is fixed: both are accepted and the files are gone.
        standin.log_rules.clear()
        code, out, err = await run_cli("dead-letter", "replay", "--config", str(agent.config_path))
        assert code == 0, out + err
        assert "2 logs accepted and removed" in out
        assert not list(dead_dir.glob("*.jsonl"))
    replayed = [log for log in standin.logs if log.contents["msg"] in poisoned]
    assert sorted(log.contents["msg"] for log in replayed) == sorted(poisoned)
    assert all(log.contents["app-name"] == "app" for log in replayed)
