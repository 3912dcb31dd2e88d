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

RELEASED = "dc8a71d"  # slsfwd 0.1.0


def test_upgrading_from_0_1_0_keeps_its_spool_restarts_and_delivers_everything(
    fresh_container: Container, artefacts: Artefacts
) -> None:
    container = fresh_container
    old = release_deb(RELEASED)
    assert deb_version(old) == "0.1.0"
    new_version = deb_version(artefacts.deb)
    assert new_version != "0.1.0"
    standin = Standin(container)
    standin.install()
    add_todo_list_app(container)
    install_package(container, old)
    configure_agent(container, agent_config(standin))
    assert container.run("slsfwd", "version").stdout.strip() == "slsfwd 0.1.0"

    # SLS is unreachable (the stand-in is not started), so 0.1.0 keeps what it receives in its spool.
    lines = [f"spooled-by-0.1.0-{i:04d}" for i in range(1000)]
    send_to_agent(container, lines)
    wait_until(lambda: metric(container, "slsfwd_spool_backlog_lines") >= len(lines), 15, "0.1.0 to spool the lines")
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
