"""Socket activation on a booted system: systemd owns the ports, with the unit's backlog."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.system.conftest import System
from tests.system.container import Container, send_to_agent, unit_property, wait_until

pytestmark = pytest.mark.system

PORTS = (11111, 20514)


@pytest.fixture()
def socket_activation(system: System) -> Iterator[None]:
    """slsfwd.socket enabled and started (the agent must let go of the ports first), as packaging/README says."""
    container = system.container
    container.run("systemctl", "stop", "slsfwd.service")
    container.run("systemctl", "enable", "--now", "slsfwd.socket")
    container.run("systemctl", "start", "slsfwd.service")
    try:
        yield
    finally:
        container.run("systemctl", "disable", "--now", "slsfwd.socket")
        container.run("systemctl", "restart", "slsfwd.service")


def listen_backlogs(container: Container) -> dict[int, int]:
    """port -> Send-Q of its listening socket, which ss shows as the listen backlog."""
    backlogs = {}
    for line in container.run("ss", "-Hltn").stdout.splitlines():
        _state, _recv_q, send_q, local, *_ = line.split()
        backlogs[int(local.rsplit(":", 1)[1])] = int(send_q)
    return backlogs


def test_the_backlog_stays_the_unit_s_and_lines_sent_while_stopped_are_delivered(
    system: System, socket_activation: None
) -> None:
    container, standin = system.container, system.standin
    backlog = int(unit_property(container, "slsfwd.socket", "Backlog"))
    assert backlog == 1024
    assert unit_property(container, "slsfwd.socket", "UnitFileState") == "enabled"
    # The agent took the sockets over from systemd (and listened again: the backlog must not shrink).
    assert re.search(r"listening on 127\.0\.0\.1:11111", container.journal("slsfwd.service"))
    assert {port: listen_backlogs(container)[port] for port in PORTS} == {port: backlog for port in PORTS}

    # rsyslog off meanwhile: its reconnections would start the agent again at once.
    container.run("systemctl", "stop", "syslog.socket", "rsyslog.service")
    try:
        container.run("systemctl", "stop", "slsfwd.service")
        assert unit_property(container, "slsfwd.service", "ActiveState") == "inactive"
        assert {port: listen_backlogs(container)[port] for port in PORTS} == {port: backlog for port in PORTS}
        lines = [f"while-stopped-{i:03d}" for i in range(100)]
        send_to_agent(container, lines)  # accepted by the kernel: systemd's socket
        standin.wait_for_messages(set(lines), timeout=30)  # the connection started the agent, which read them
        assert unit_property(container, "slsfwd.service", "ActiveState") == "active"
        wait_until(lambda: all(listen_backlogs(container)[port] == backlog for port in PORTS), 5, "the agent's backlog")
    finally:
        container.run("systemctl", "start", "syslog.socket", "rsyslog.service")
