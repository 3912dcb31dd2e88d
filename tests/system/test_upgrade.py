"""Upgrading from the release users have (CHANGELOG.md) with logs still in its spool."""

from __future__ import annotations

import pytest

from tests.system.conftest import Artefacts
from tests.system.container import (
    Container,
    Standin,
    add_todo_list_app,
    agent_config,
    assert_delivered_like_logtail,
    configure_agent,
    deb_version,
    install_package,
    main_pid,
    metric,
    release_deb,
    send_to_agent,
    unit_property,
    wait_until,
    write_like_the_tutorial,
)

pytestmark = pytest.mark.system

RELEASES = {"0.1.0": "dc8a71d", "0.2.0": "dc0867e"}  # version -> its commit (CHANGELOG.md)


@pytest.mark.parametrize("released", list(RELEASES))
def test_upgrading_keeps_the_spool_restarts_and_delivers_everything(
    fresh_container: Container, artefacts: Artefacts, released: str
) -> None:
    container = fresh_container
    old = release_deb(RELEASES[released])
    assert deb_version(old) == released
    new_version = deb_version(artefacts.deb)
    assert new_version != released
    standin = Standin(container)
    standin.install()
    add_todo_list_app(container)
    install_package(container, old)
    configure_agent(container, agent_config(standin))
    assert container.run("slsfwd", "version").stdout.strip() == f"slsfwd {released}"

    # SLS is unreachable (the stand-in is not started), so the old release keeps what it receives in its spool.
    lines = [f"spooled-by-{released}-{i:04d}" for i in range(1000)]
    send_to_agent(container, lines)
    wait_until(lambda: metric(container, "slsfwd_spool_backlog_lines") >= len(lines), 15, f"{released} to spool the lines")
    before = main_pid(container)

    # As packaging/README.md says for a config the admin rewrote: keep it (--force-confold).
    install_package(container, artefacts.deb, "-o", "Dpkg::Options::=--force-confold")
    assert container.run("dpkg-query", "-W", "-f=${Version}", "slsfwd").stdout == new_version
    assert container.run("slsfwd", "version").stdout.strip() == f"slsfwd {new_version}"
    assert unit_property(container, "slsfwd.service", "ActiveState") == "active"
    assert main_pid(container) != before, "the agent was not restarted with the new version"

    standin.start()
    standin.wait_for_messages(set(lines), timeout=60)
    assert metric(container, "slsfwd_spool_corrupt_records_total") == 0
    # rsyslog suspended its action while the agent was down for the upgrade; the new agent's start undid that.
    assert_delivered_like_logtail(standin, write_like_the_tutorial(container, "after-upgrade"), within_s=5)
