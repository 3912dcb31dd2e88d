"""The real ``slsfwd run`` process against the PutLogs stand-in."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agent.ops import hostinfo
from tests.support import shared_data
from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e



def sample_lines() -> list[bytes]:
    return shared_data.read_bytes(shared_data.CAPTURED_SAMPLES).split(b"\n")[:-1]


def with_time(line: bytes, unix_time: int) -> bytes:
    parts = line.split(b" ", 3)
    parts[2] = str(unix_time).encode()
    return b" ".join(parts)


def line(app: str, msg: str, *, tag: str = "sys_tag", ip: str = "127.0.0.1", ts: int | None = None, pv: str = "0") -> bytes:
    space = " " if pv == "0" else ""
    ts = int(time.time()) if ts is None else ts
    return f"0.1 {tag} {ts} {ip} web-1 user.notice {pv} {app} 42 - {space}{msg}\n".encode()


async def test_real_samples_arrive_with_logtail_fields(tmp_path: Path) -> None:
    now = int(time.time())
    lines = [with_time(raw, now) for raw in sample_lines()]
    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(b"\n".join(lines) + b"\n")
            await standin.wait_for_logs(len(lines), timeout=15)
    assert not standin.rejections
    logs = standin.logs
    assert len(logs) == len(lines)
    for log in logs:
        assert [k for k, _ in log.pairs][:6] == ["hostname", "pri-text", "protocol-version", "app-name", "procid", "msgid"]
        assert log.time == now
        assert log.tags == {"__hostname__": hostinfo.hostname()}
        assert log.project == "test-project" and log.logstore == "test-logstore"
    by_app = {log.contents["app-name"]: log for log in logs}
    msgs = {(log.contents["app-name"], log.contents["procid"], log.contents["msg"]) for log in logs}
    assert ("root", "-", "plain message one") in msgs
    assert ("myapp", "4242", "tag and explicit pid 4242") in msgs
    assert ("empty", "-", " ") in msgs  # only the one space rsyslog adds is dropped
    assert by_app["spaces"].contents["msg"] == "   three leading and three trailing spaces   "
    assert by_app["tcp5424"].contents["msgid"] == "TCPMSG"
    assert by_app["tcp5424"].contents["msg"] == "rfc5424 over TCP LF framing"
    assert by_app["chars"].contents["msg"].startswith("tab#011here, UTF-8: äöü ß 日本語, emoji: 😀🚀")
    assert by_app["app"].contents["hostname"] == "h5"
    assert "invalid utf8 \\xff\\xfe here" in [log.contents["msg"] for log in logs]
    # Logtail's source rule: a loopback $ip takes the peer's address, and a loopback peer the host's IP.
    assert by_app["root"].source == hostinfo.primary_ipv4()
    assert by_app["su"].source == "127.0.0.2"
    assert by_app["udp3164"].source == "127.0.0.3"


async def test_peer_address_is_the_source_of_loopback_lines(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(line("peer", "from another peer"), source_ip="127.0.0.9")
            await standin.wait_for_logs(1, timeout=10)
    assert standin.logs[0].source == "127.0.0.9"


async def test_signature_v4_and_topic(tmp_path: Path) -> None:
    extra = 'auth_version = "v4"\nregion = "cn-hangzhou"\ntopic = "web"'
    async with PutLogsStandin(region="cn-hangzhou") as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin, extra=extra)) as agent:
            await agent.send(line("v4app", "signed with v4"))
            await standin.wait_for_logs(1, timeout=10)
    assert standin.groups[0].auth_version == "v4"
    assert standin.groups[0].topic == "web"


async def test_routes_pick_the_logstore_by_tag(tmp_path: Path) -> None:
    routes = '[[routes]]\ntag = "nginx_tag"\nlogstore = "nginx-store"\n'
    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin), extra=routes) as agent:
            await agent.send(line("nginx", "GET /", tag="nginx_tag") + line("app", "default route"))
            await standin.wait_for_logs(2, timeout=10)
    stores = {log.contents["app-name"]: log.logstore for log in standin.logs}
    assert stores == {"nginx": "nginx-store", "app": "test-logstore"}


async def test_environment_credentials_win_over_the_file(tmp_path: Path) -> None:
    async with PutLogsStandin(access_key_id="env-id", access_key_secret="env-secret") as standin:
        sls = sls_section(standin).replace("env-id", "file-id").replace("env-secret", "file-secret")
        env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "env-id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret"}
        async with AgentProcess(tmp_path, sls=sls, env=env) as agent:
            await agent.send(line("envapp", "env credentials"))
            await standin.wait_for_logs(1, timeout=10)
    assert not standin.rejections
    assert "env-secret" not in agent.stderr() and "file-secret" not in agent.stderr()


async def test_transient_failures_are_retried_until_delivered(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        standin.faults.next(2, Fault.error(503, "ServerBusy"))
        standin.faults.at(2, Fault.reset())
        standin.faults.at(3, Fault.garbage(502))
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            await agent.send(b"".join(line("retry", f"line {i}") for i in range(100)))
            await standin.wait_for_logs(100, timeout=30)
    assert sorted(log.contents["msg"] for log in standin.logs) == sorted(f"line {i}" for i in range(100))
    assert standin.faulted == 4


async def test_quota_errors_back_off_and_deliver(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        standin.faults.at(0, Fault.error(403, "WriteQuotaExceed"))
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as agent:
            started = time.monotonic()
            await agent.send(b"".join(line("quota", f"q {i}") for i in range(10)))
            await standin.wait_for_logs(10, timeout=30)
            # Quota backoff waits at least half of 3 s: never a tight loop.
            assert time.monotonic() - started >= 1.4
    assert len(standin.logs) == 10


async def test_sigterm_ships_what_is_held_and_exits_zero(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=60000)
        await agent.start()
        await agent.send(b"".join(line("bye", f"held {i}") for i in range(50)))
        await agent.wait_for_metric("slsfwd_input_lines_total", 50)
        await _settle(0.5)
        assert standin.log_count == 0  # still lingering in the batch
        assert await agent.stop() == 0
    assert len(standin.logs) == 50


async def test_a_backlog_read_back_from_the_spool_ships_without_waiting_out_the_linger(tmp_path: Path) -> None:
    """linger_ms is how long a line may wait for company: lines replayed from the spool
    after a restart have waited already, so once the reader has caught up they ship."""
    async with PutLogsStandin() as standin:
        standin.faults.at(range(1000), Fault.error(500, "InternalServerError"))  # every attempt fails...
        agent = AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=1000)
        await agent.start()
        await agent.send(b"".join(line("backlog", f"kept {i}") for i in range(40)))
        await _wait_for(lambda: standin.requests >= 1, 10)
        assert await agent.stop() == 0  # ...so the lines stay in the spool for the next start
        assert standin.log_count == 0
        standin.faults.clear()
        agent = AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=60000)
        async with agent:
            started = time.monotonic()
            await standin.wait_for_logs(40, timeout=20)
            assert time.monotonic() - started < 15  # not the 60 s linger
    assert sorted(log.contents["msg"] for log in standin.logs) == sorted(f"kept {i}" for i in range(40))


async def test_console_sink_prints_one_json_object_per_log(tmp_path: Path) -> None:
    async with AgentProcess(tmp_path) as agent:
        await agent.send(line("todo-list", "hello console"))
        await _wait_for(lambda: "hello console" in agent.stdout(), 10)
    record = json.loads(agent.stdout().splitlines()[0])
    assert record["app-name"] == "todo-list"
    assert record["msg"] == "hello console"
    assert record["__tag__:__hostname__"] == hostinfo.hostname()


async def test_check_and_version_commands(tmp_path: Path) -> None:
    import asyncio

    from tests.support.agent_proc import slsfwd_command

    config = tmp_path / "bad.toml"
    config.write_text('[input]\nlisten = "127.0.0.1:99999"\nnope = 1\n[sls]\nlogstore = "x"\n')
    proc = await asyncio.create_subprocess_exec(
        *slsfwd_command(), "check", "--config", str(config),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env={**os.environ},
    )
    _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 2
    assert "input.nope: unknown key" in text
    assert "sls.project: missing" in text
    assert "input.listen: port 99999" in text
    assert "Traceback" not in text


async def _settle(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _wait_for(predicate, timeout: float) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")
