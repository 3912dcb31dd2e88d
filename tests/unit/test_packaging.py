"""What ships: the wheel's contents, and the systemd unit."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

ROOT = REPO
UNIT = ROOT / "systemd" / "slsfwd.service"


@pytest.mark.slow  # builds the wheel
def test_wheel_contains_every_agent_module(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    [wheel] = tmp_path.glob("slsfwd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "agent").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "slsfwd = agent.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_unit_is_notify_with_watchdog_state_dir_restart_and_check() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["StateDirectory"] == "slsfwd"
    assert service["Restart"] == "on-failure"
    assert "slsfwd check" in service["ExecStartPre"]
    assert "cloud-init" in _unit()["Unit"]["After"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_exposure_is_at_most_1_5() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 1.5
