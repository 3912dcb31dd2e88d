"""No background task dies silently or late: a failure on a quiet agent is seen at once.

The table drives :class:`agent.supervise.FailureWatch` with what asyncio reports.
The agent tests inject an unexpected exception into a shipping task or a timer
callback after the only line has arrived, so that no further input could make
the agent notice it, and check ``/healthz``, the exit code and its timing, and
that the restarted agent delivers the line from the spool.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.app import FAILURE_SHUTDOWN_S, Agent
from agent.config import loads
from agent.ops import metrics
from agent.ops.supervise import FailureWatch, spawn
from agent.output.ship import PutLogsSink
from tests.support import REPO
from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import PutLogsStandin

SUPPORT = REPO / "tests" / "support" / "failure_injection"


def internal_errors(where: str) -> float:
    return metrics.INTERNAL_ERRORS.labels(where=where)._value.get()


async def _fail() -> None:
    raise RuntimeError("boom")


async def _finish() -> None:
    return None


async def _wait_forever() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("make", "fatal", "where"),
    [
        (lambda loop: spawn(_fail(), name="ship-batch"), "task ship-batch failed (RuntimeError)", "task"),
        (lambda loop: spawn(_finish(), name="ok"), None, None),
        (lambda loop: spawn(_wait_forever(), name="cancelled").cancel(), None, None),
        (lambda loop: loop.call_soon(lambda: 1 / 0), "a callback failed (ZeroDivisionError)", "callback"),
        (lambda loop: loop.call_later(0.01, lambda: [][1]), "a callback failed (IndexError)", "callback"),
        (
            lambda loop: loop.call_exception_handler(
                {"message": "Fatal error: protocol.data_received() call failed.", "exception": ValueError("x"),
                 "transport": object(), "protocol": object()}
            ),
            None,
            "connection",
        ),
        (lambda loop: loop.call_exception_handler({"message": "no exception at all"}), None, None),
    ],
)
async def test_failure_watch_table(make, fatal: str | None, where: str | None) -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    watch = FailureWatch(lambda what, exc: seen.append(what))
    previous = loop.get_exception_handler()
    watch.install(loop)
    before = internal_errors(where) if where else 0.0
    try:
        make(loop)
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    assert watch.failure == fatal
    assert len(seen) == (1 if fatal else 0)
    if where:
        assert internal_errors(where) == before + 1


def test_only_the_first_failure_is_recorded() -> None:
    seen: list[str] = []
    watch = FailureWatch(lambda what, exc: seen.append(what))
    loop = asyncio.new_event_loop()
    try:
        for exc in (KeyError("a"), OSError("b")):
            watch.handle(loop, {"message": "m", "exception": exc, "handle": object()})
    finally:
        loop.close()
    assert watch.failure == "a callback failed (KeyError)" and seen == ["a callback"]


async def _get(port: int, path: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(fetch)


async def test_a_shipping_task_that_dies_on_a_quiet_agent_is_seen_at_once(tmp_path: Path, monkeypatch) -> None:
    async def put(self, *args, **kwargs) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(PutLogsSink, "put", put)
    async with PutLogsStandin() as standin:
        shape = AgentProcess(tmp_path, sls=sls_section(standin))
        agent = Agent(loads(shape.config_text, env={}))
        await agent.start()
        try:
            await shape.send(f"0.1 sys_tag {int(time.time())} 127.0.0.1 h user.info 0 app 1 -  only line\n".encode())
            await asyncio.wait_for(agent.wait_stopped(), 5)  # no more input: the failure alone stops it
            status, body = await _get(shape.metrics_port, "/healthz")
            assert status == 503 and "task ship-batch failed (RuntimeError); stopping" in body
            assert agent.health_problems_fatal()
        finally:
            started = time.monotonic()
            await agent.shutdown()
        assert time.monotonic() - started < 1.0
    assert FAILURE_SHUTDOWN_S < 1.0


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["ship", "linger-callback"])
async def test_the_real_agent_exits_non_zero_within_a_second_and_the_spool_replays(tmp_path: Path, target: str) -> None:
    failed_at = tmp_path / "failed_at"
    env = {"PYTHONPATH": str(SUPPORT), "SLSFWD_TEST_FAIL": target, "SLSFWD_TEST_FAILED_AT": str(failed_at)}
    line = f"0.1 sys_tag {int(time.time())} 127.0.0.1 h user.info 0 app 1 -  must survive {target}\n"
    async with PutLogsStandin() as standin:
        broken = AgentProcess(tmp_path, sls=sls_section(standin), env=env)
        await broken.start()
        await broken.send(line.encode())
        code = await asyncio.wait_for(broken.process.wait(), 10)
        exited_at = time.time()
        assert code == 1, broken.stderr()
        assert failed_at.exists(), broken.stderr()
        assert exited_at - float(failed_at.read_text()) < 1.0
        assert "failed (RuntimeError); stopping" in broken.stderr()
        if target == "ship":
            assert standin.log_count == 0  # every attempt failed: the line can only come from the spool
        async with AgentProcess(tmp_path, sls=sls_section(standin)):  # as systemd's Restart= would
            await standin.wait_for_logs(1, timeout=15)
    assert {log.contents["msg"] for log in standin.logs} == {f"must survive {target}"}
