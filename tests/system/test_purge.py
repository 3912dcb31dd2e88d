"""Removing and purging the package on a booted system, as Debian's conventions say."""

from __future__ import annotations

import pytest

from tests.system.conftest import Artefacts
from tests.system.container import (
    CONF,
    Container,
    Standin,
    agent_config,
    configure_agent,
    install_package,
    send_to_agent,
    unit_property,
)

pytestmark = pytest.mark.system

STATE = "/var/lib/slsfwd"
SNIPPET = "/etc/rsyslog.d/80-slsfwd.conf"
ENABLED = "/etc/systemd/system/multi-user.target.wants/slsfwd.service"


def package_status(container: Container) -> str:
    return container.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "slsfwd", check=False).stdout.strip()


def account_exists(container: Container, database: str) -> bool:
    return container.run("getent", database, "slsfwd", check=False).returncode == 0


def test_remove_keeps_config_and_spool_and_purge_removes_unit_user_and_state(
    fresh_container: Container, artefacts: Artefacts
) -> None:
    container = fresh_container
    standin = Standin(container)
    standin.install()  # not started: what the agent receives stays in its spool
    install_package(container, artefacts.deb)
    config = agent_config(standin)
    configure_agent(container, config)
    send_to_agent(container, ["kept in the spool"])

    container.run("apt-get", "remove", "-y", "-q", "slsfwd")
    assert package_status(container) == "rc"  # removed, config files kept
    assert container.file(CONF).read_text() == config
    assert container.file(SNIPPET).is_file()  # a conffile too (packaging/README.md: rsyslog keeps queueing)
    assert any(container.file(f"{STATE}/queue").iterdir()), "remove deleted the spool"
    assert account_exists(container, "passwd") and account_exists(container, "group")
    assert not container.file("/opt/slsfwd").exists() and not container.file("/usr/bin/slsfwd").exists()
    assert unit_property(container, "slsfwd.service", "LoadState") == "masked"  # as dh_installsystemd does
    assert unit_property(container, "slsfwd.service", "ActiveState") == "inactive"

    container.run("apt-get", "purge", "-y", "-q", "slsfwd")
    assert package_status(container) in ("", "un")
    for gone in ("/etc/slsfwd", STATE, SNIPPET, ENABLED, "/etc/systemd/system/slsfwd.service",
                 "/var/lib/systemd/deb-systemd-helper-enabled/slsfwd.service.dsh-also"):
        assert not container.file(gone).exists() and not container.file(gone).is_symlink(), f"{gone} survived the purge"
    assert not account_exists(container, "passwd") and not account_exists(container, "group")
    assert unit_property(container, "slsfwd.service", "LoadState") == "not-found"
    assert unit_property(container, "rsyslog.service", "ActiveState") == "active"
