"""The package and its unit on a booted system, right after the README's recipe."""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from tests.system.conftest import System
from tests.system.container import (
    Container,
    assert_delivered_like_logtail,
    main_pid,
    unit_property,
)

pytestmark = pytest.mark.system


def test_the_first_logs_after_installing_arrive_within_5_s(system: System) -> None:
    """Installing restarts rsyslog while nothing listens; the agent's first start must undo that."""
    assert_delivered_like_logtail(system.standin, system.first_lines, within_s=5)


def test_the_unit_is_active_through_type_notify_with_status_and_watchdog(system: System) -> None:
    container = system.container
    assert unit_property(container, "slsfwd.service", "Type") == "notify"
    assert unit_property(container, "slsfwd.service", "ActiveState") == "active"
    assert unit_property(container, "slsfwd.service", "SubState") == "running"
    # STATUS= from the agent itself (sd_notify), and the watchdog systemd enforces.
    assert re.match(r"ok; \d+ connections, received \d+ lines, backlog \d+ lines$",
                    unit_property(container, "slsfwd.service", "StatusText"))
    assert unit_property(container, "slsfwd.service", "WatchdogUSec") == "30s"
    assert unit_property(container, "slsfwd.service", "User") == "slsfwd"


def test_the_unit_s_exposure_inside_the_booted_system_is_at_most_1_5(system: System) -> None:
    out = system.container.run("systemd-analyze", "security", "--no-pager", "slsfwd.service", check=False).stdout
    match = re.search(r"Overall exposure level for slsfwd\.service: ([0-9.]+)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 1.5


class Mount(NamedTuple):
    root: str  # the directory of the mounted file system that appears here
    options: set[str]
    fstype: str
    super_options: set[str]


def _mounts(container: Container, pid: int) -> dict[str, Mount]:
    """mount point -> the last mount there, from /proc/PID/mountinfo."""
    mounts = {}
    for line in container.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        head, _, tail = line.partition(" - ")
        fields, (fstype, _, super_options) = head.split(), tail.split(" ", 2)
        mounts[fields[4]] = Mount(fields[3], set(fields[5].split(",")), fstype, set(super_options.split(",")))
    return mounts


def test_the_hardening_takes_effect_in_the_running_agent(system: System) -> None:
    """What systemd-analyze scores is configuration; this is what the agent's process got.

    DevicePolicy=closed is the exception: a container's device cgroup is read-only (README).
    """
    container = system.container
    pid = main_pid(container)
    status = dict(line.split(":\t", 1) for line in container.run("cat", f"/proc/{pid}/status").stdout.splitlines())
    uid = container.run("id", "-u", "slsfwd").stdout.strip()
    assert status["Uid"].split() == [uid] * 4  # User=slsfwd
    assert status["NoNewPrivs"].strip() == "1"  # NoNewPrivileges=yes
    assert status["Seccomp"].strip() == "2"  # SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=
    for capabilities in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, capabilities  # CapabilityBoundingSet= (empty)
    for namespace in ("user", "uts", "mnt"):  # PrivateUsers=, ProtectHostname=, the file system options
        agent_ns = container.run("readlink", f"/proc/{pid}/ns/{namespace}").stdout
        assert agent_ns != container.run("readlink", f"/proc/1/ns/{namespace}").stdout, namespace
    mounts = _mounts(container, pid)
    assert "ro" in mounts["/"].options  # ProtectSystem=strict
    assert "rw" in mounts["/var/lib/slsfwd"].options  # StateDirectory=: the one place it writes
    assert mounts["/dev"].fstype == "tmpfs"  # PrivateDevices=: a minimal /dev of its own
    assert "systemd-private-" in mounts["/tmp"].root  # PrivateTmp=
    for hidden in ("/home", "/root", "/run/user"):  # ProtectHome=
        assert mounts[hidden].root.endswith("/inaccessible/dir"), hidden
    assert {"hidepid=invisible", "subset=pid"} <= mounts["/proc"].super_options  # ProtectProc=, ProcSubset=
    assert "ro" in mounts["/sys/fs/cgroup"].options  # ProtectControlGroups=
