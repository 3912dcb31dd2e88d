"""The tutorial's chain, real: journald → rsyslog → slsfwd → the PutLogs stand-in, on a booted system."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import shared_data
from tests.system.conftest import Artefacts, System
from tests.system.container import (
    Container,
    Standin,
    add_todo_list_app,
    agent_config,
    assert_delivered_like_logtail,
    configure_agent,
    install_package,
    rsyslog_forwarding,
    write_like_the_tutorial,
)

pytestmark = pytest.mark.system


def test_with_the_rsyslog_snippet_the_package_ships(system: System) -> None:
    assert system.container.file("/etc/rsyslog.d/80-slsfwd.conf").is_file()
    assert_delivered_like_logtail(system.standin, write_like_the_tutorial(system.container, "chain-snippet"), within_s=5)


@pytest.fixture()
def tutorial_block(system: System) -> Iterator[None]:
    """The tutorial's block verbatim as rsyslog's only forwarding, instead of the package's snippet."""
    with rsyslog_forwarding(system.container, "80-logtail.conf", shared_data.read_bytes(shared_data.TUTORIAL_BLOCK)):
        yield


def test_with_the_tutorial_s_block_verbatim(system: System, tutorial_block: None) -> None:
    assert_delivered_like_logtail(system.standin, write_like_the_tutorial(system.container, "chain-tutorial"), within_s=5)


def test_the_tutorial_s_block_verbatim_right_after_installing(fresh_container: Container, artefacts: Artefacts) -> None:
    """A host of the Logtail days: the tutorial's block has been in rsyslog all along and nothing
    listens, so rsyslog's retries are already far apart; the package's own snippet is left out."""
    container = fresh_container
    standin = Standin(container)
    standin.install()
    standin.start()
    add_todo_list_app(container)
    container.file("/etc/rsyslog.d/80-logtail.conf").write_bytes(shared_data.read_bytes(shared_data.TUTORIAL_BLOCK))
    container.run("systemctl", "restart", "rsyslog.service")
    container.run("logger", "-t", "todo-list", "nobody listens yet")  # rsyslog suspends its action
    install_package(container, artefacts.deb, "-o", "Dpkg::Options::=--path-exclude=/etc/rsyslog.d/80-slsfwd.conf")
    assert not container.file("/etc/rsyslog.d/80-slsfwd.conf").exists()
    configure_agent(container, agent_config(standin))
    assert_delivered_like_logtail(standin, write_like_the_tutorial(container, "tutorial-after-install"), within_s=5)
