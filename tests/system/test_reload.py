"""`systemctl reload slsfwd` on a booted system: a new config in force, same process, no line lost."""

from __future__ import annotations

import pytest

from tests.system.conftest import System
from tests.system.container import main_pid, write_like_the_tutorial

pytestmark = pytest.mark.system


def test_systemctl_reload_puts_a_new_logstore_in_force_without_a_restart(system: System) -> None:
    container, standin = system.container, system.standin
    pid = main_pid(container)
    original = container.file("/etc/slsfwd/slsfwd.toml").read_text()
    container.file("/etc/slsfwd/slsfwd.toml").write_text(original.replace('logstore = "todo-list"', 'logstore = "reloaded"'))
    try:
        container.run("systemctl", "reload", "slsfwd.service")
        assert main_pid(container) == pid
        written = write_like_the_tutorial(container, "after-reload")
        standin.wait_for_messages(set(written), timeout=15)
        assert {log["logstore"] for text in written for log in standin.with_message(text)} == {"reloaded"}
    finally:
        container.file("/etc/slsfwd/slsfwd.toml").write_text(original)
        container.run("systemctl", "reload", "slsfwd.service")


def test_systemctl_reload_of_an_invalid_config_fails_and_keeps_the_running_one(system: System) -> None:
    container, standin = system.container, system.standin
    pid = main_pid(container)
    original = container.file("/etc/slsfwd/slsfwd.toml").read_text()
    container.file("/etc/slsfwd/slsfwd.toml").write_text(original + '\n[[processors]]\nname = "bad"\ntype = "nope"\n')
    try:
        failed = container.run("systemctl", "reload", "slsfwd.service", check=False)
        assert failed.returncode != 0
        assert container.run("systemctl", "is-active", "slsfwd.service").stdout.strip() == "active"
        assert main_pid(container) == pid
        journal = container.run("journalctl", "-u", "slsfwd.service", "--no-pager", "-n", "50").stdout
        assert "reload refused" in journal and "processors[0].type: unknown processor 'nope'" in journal
        written = write_like_the_tutorial(container, "after-a-failed-reload")
        standin.wait_for_messages(set(written), timeout=15)
    finally:
        container.file("/etc/slsfwd/slsfwd.toml").write_text(original)
        container.run("systemctl", "reload", "slsfwd.service")
