"""Restarts under load, a killed agent, a frozen one: systemd brings it back and nothing is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.system.conftest import System
from tests.system.container import (
    REPO,
    Container,
    main_pid,
    metric,
    rsyslog_forwarding,
    unit_property,
    wait_until,
)

pytestmark = pytest.mark.system

LOAD_LINES = 20_000
RSYSLOG_SOCKET = "/run/systemd/journal/syslog"


@pytest.fixture()
def relp(system: System) -> Iterator[None]:
    """rsyslog forwards with the RELP action the project ships, instead of the tutorial's TCP block."""
    example = (REPO / "packaging" / "rsyslog" / "81-slsfwd-relp.conf.example").read_bytes()
    with rsyslog_forwarding(system.container, "81-slsfwd-relp.conf", example):
        yield


def send_load(container: Container, prefix: str) -> None:
    """LOAD_LINES lines to rsyslog's socket, 500 at a time, 0.1 s apart (about 4 s).

    Straight to rsyslog's socket rather than through journald, whose rate limit (10,000 lines per
    30 s per service) would drop lines before rsyslog, which is not what this test is about.
    """
    container.sh(
        f"for start in $(seq 1 500 {LOAD_LINES}); do"
        f"  seq -f '{prefix}-%05g' $start $((start + 499)) | logger -t loadgen -u {RSYSLOG_SOCKET}; sleep 0.1; "
        "done",
        timeout=120,
    )


@pytest.mark.parametrize("disruption", [
    ["systemctl", "restart", "slsfwd.service"],
    ["systemctl", "kill", "-s", "KILL", "slsfwd.service"],  # Restart=on-failure brings it back
], ids=["restart", "kill"])
def test_nothing_is_lost_through_relp_when_the_agent_goes_down_under_load(
    system: System, relp: None, disruption: list[str]
) -> None:
    container, standin = system.container, system.standin
    prefix = f"load-{disruption[1]}"
    lines = {f"{prefix}-{i:05d}" for i in range(1, LOAD_LINES + 1)}
    before = main_pid(container)
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(send_load, container, prefix)
        wait_until(lambda: len(lines & standin.messages()) >= LOAD_LINES // 10, 30, "the load to flow")
        container.run(*disruption)
        delivered_at_disruption = len(lines & standin.messages())
        sending.result()
    wait_until(lambda: unit_property(container, "slsfwd.service", "ActiveState") == "active"
               and main_pid(container) not in (0, before), 30, "systemd to bring the agent back")
    standin.wait_for_messages(lines, timeout=90)  # at-least-once: duplicates may come too, none is missing
    assert delivered_at_disruption < LOAD_LINES, "the load was over before the agent went down"


@pytest.fixture()
def short_watchdog(system: System) -> Iterator[None]:
    """WatchdogSec=4 instead of the unit's 30, for this test only: the same mechanism, 26 s sooner."""
    container = system.container
    container.write("/etc/systemd/system/slsfwd.service.d/50-test-watchdog.conf", "[Service]\nWatchdogSec=4\n")
    container.run("systemctl", "daemon-reload")
    container.run("systemctl", "restart", "slsfwd.service")
    try:
        yield
    finally:
        container.run("rm", "/etc/systemd/system/slsfwd.service.d/50-test-watchdog.conf")
        container.run("systemctl", "daemon-reload")
        container.run("systemctl", "restart", "slsfwd.service")  # also ends a process left frozen


def test_a_frozen_agent_is_killed_by_the_watchdog_restarted_and_delivers_its_backlog(
    system: System, short_watchdog: None
) -> None:
    container, standin = system.container, system.standin
    assert unit_property(container, "slsfwd.service", "WatchdogUSec") == "4s"
    lines = {f"frozen-{i:03d}" for i in range(100)}
    standin.stop()  # so the lines stay in the agent's spool
    try:
        received = metric(container, "slsfwd_input_lines_total")
        container.sh(f"seq -f 'frozen-%03g' 0 99 | logger -t todo-list -u {RSYSLOG_SOCKET}")
        wait_until(lambda: metric(container, "slsfwd_input_lines_total") >= received + 100, 10, "the agent to spool the lines")
        frozen = main_pid(container)
        restarts = int(unit_property(container, "slsfwd.service", "NRestarts"))
        container.run("kill", "-STOP", str(frozen))
        frozen_at = time.monotonic()
    finally:
        standin.start()
    wait_until(lambda: main_pid(container) not in (0, frozen), 30, "systemd to replace the frozen agent")
    # WatchdogSec=4 after the last ping (at most 2 s before the freeze), then RestartSec=2.
    assert time.monotonic() - frozen_at < 4 + 2 + 5
    assert int(unit_property(container, "slsfwd.service", "NRestarts")) == restarts + 1
    assert "Watchdog timeout" in container.journal("slsfwd.service", 200)
    standin.wait_for_messages(lines, timeout=30)
