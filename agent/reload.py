"""``systemctl reload slsfwd``: a new config in force without closing a connection or losing a line.

A reload is asked for with SIGHUP, or with ``slsfwd reload`` (the unit's
``ExecReload=``), which sends the SIGHUP and waits for the outcome: systemd 252
(Debian 12) has no ``Type=notify-reload``, so ``systemctl reload`` learns
whether it worked only from the command's exit code.

The agent re-reads its config file. Invalid, it keeps running on the old one
and logs one line per problem, as ``slsfwd check`` prints them. Valid, it takes
effect at once (:meth:`agent.app.Agent.apply`): routes, formats, processors and
batch limits for every chunk taken from the spool from then on (lines already
parsed keep the destination they were given), ``[sls]`` for every request from
then on, input limits for every read, ``log_level``, and new listen addresses
(bound before the old ones close; open connections stay).

Keys in :data:`RESTART_ONLY` cannot change while running: the spool's files and
the metrics listener are opened once. A reload that changes one says so (a
restart is needed), keeps its running value, and applies the rest;
``slsfwd_config_restart_pending`` stays 1 until a restart.

The outcome is written to ``<spool.dir>/reload-status.json`` (the state
directory, private to the agent and its unit): the agent's pid, a generation
that counts reloads, whether the last one worked, and its problems. That is how
``slsfwd reload`` finds the agent and waits for its answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from agent.ops.files import write_atomically

from .config import Config, SpoolConfig

RESTART_ONLY = ("spool", "metrics")  # sections whose every key needs a restart
STATUS_FILE = "reload-status.json"
WAIT_FOR_ANSWER_S = 30.0


def restart_only_changes(running: Config, wanted: Config) -> list[str]:
    """The keys that differ between the two configs and cannot change while running."""
    changed = []
    for section in RESTART_ONLY:
        old, new = getattr(running, section), getattr(wanted, section)
        changed += [f"{section}.{f.name}" for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]
    return changed


def keeping_restart_only(running: Config, wanted: Config) -> Config:
    """``wanted``, with the running values of the keys that need a restart."""
    return dataclasses.replace(wanted, **{section: getattr(running, section) for section in RESTART_ONLY})


@dataclass
class ReloadStatus:
    pid: int
    generation: int = 0  # reloads finished since the agent started
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    at: float = 0.0

    @staticmethod
    def hold_directory(state_dir: Path) -> int:
        """Keep the state directory open for the agent's life, so ``slsfwd reload --pid`` finds it."""
        return os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def write(self, state_dir: Path) -> None:
        self.at = time.time()
        write_atomically(state_dir / STATUS_FILE, json.dumps(dataclasses.asdict(self)).encode())

    @classmethod
    def read(cls, state_dir: Path) -> ReloadStatus | None:
        try:
            return cls(**json.loads((state_dir / STATUS_FILE).read_bytes()))
        except (OSError, ValueError, TypeError):
            return None


_SPOOL_DIR_LINE = re.compile(r"""^\s*dir\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def state_dir_of(config_path: Path) -> Path:
    """``spool.dir`` of a config file, read leniently: a reload is asked for precisely when the
    file may have just become invalid, and spool.dir cannot change while running anyway. Where
    the file is not valid TOML, its ``[spool]`` table is still searched line by line."""
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return Path(SpoolConfig.dir)
    try:
        spool = tomllib.loads(text).get("spool", {})
        directory = spool.get("dir") if isinstance(spool, dict) else None
    except ValueError:
        directory = _spool_dir_by_lines(text)
    return Path(directory if isinstance(directory, str) and directory else SpoolConfig.dir)


def _spool_dir_by_lines(text: str) -> str | None:
    in_spool = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_spool = stripped.replace(" ", "") == "[spool]"
        elif in_spool and (match := _SPOOL_DIR_LINE.match(line)):
            return match.group(1) if match.group(1) is not None else match.group(2)
    return None


def state_dir_of_process(pid: int) -> Path | None:
    """The state directory a running agent keeps open (see :meth:`ReloadStatus.hold_directory`): the
    file's ``spool.dir`` may have been changed for the next restart, but the agent's has not."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        try:
            target = Path(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
        if (target / STATUS_FILE).is_file():
            return target
    return None


def request_reload(config_path: Path, pid: int | None, timeout_s: float = WAIT_FOR_ANSWER_S) -> tuple[bool, list[str]]:
    """Signal the running agent and wait for its answer: (worked, lines to print)."""
    state_dir = (state_dir_of_process(pid) if pid else None) or state_dir_of(config_path)
    before = ReloadStatus.read(state_dir)
    if before is None:
        return False, [f"no running slsfwd found: {state_dir / STATUS_FILE} is missing or unreadable "
                       "(give the agent's --pid if spool.dir was changed since it started)"]
    target = pid or before.pid
    if not pid and not _is_an_agent(target):
        # The file is the agent's, but root may run this command: signal nothing the file names blindly.
        return False, [f"pid {target} in {state_dir / STATUS_FILE} is not a running `slsfwd run`"]
    try:
        os.kill(target, signal.SIGHUP)
    except OSError as exc:
        return False, [f"cannot signal slsfwd (pid {target}): {exc.strerror or exc}"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        after = ReloadStatus.read(state_dir)
        if after is not None and after.pid == target and after.generation > before.generation:
            return after.ok, _describe(after, config_path)
        time.sleep(0.05)
    return False, [f"slsfwd (pid {target}) did not answer the reload within {timeout_s:.0f} s"]


def _is_an_agent(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith((b"slsfwd", b"agent")) for arg in argv[:3]) and b"run" in argv


def _describe(status: ReloadStatus, config_path: Path) -> list[str]:
    if not status.ok:
        return [*status.problems, f"{config_path}: not reloaded; the agent runs on its previous config"]
    lines = [f"{key}: changed, takes effect after a restart (systemctl restart slsfwd)" for key in status.restart_needed]
    return [*lines, f"{config_path}: reloaded"]
