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
