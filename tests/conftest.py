"""Shared test plumbing: no agent process outlives the test that started it."""

from __future__ import annotations

import pytest

from tests.support.agent_proc import AgentProcess


@pytest.fixture(autouse=True)
def _kill_leftover_agents():
    yield
    for process in AgentProcess.started:
        if process.returncode is None:
            try:
                process.kill()  # only after a failed test: a passing one stops its agents itself
            except ProcessLookupError:
                pass
    AgentProcess.started.clear()
