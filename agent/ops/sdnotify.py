"""systemd's notify protocol, spoken directly over ``$NOTIFY_SOCKET``.

``READY=1`` once the agent listens and the spool is open, ``WATCHDOG=1`` at
half of ``$WATCHDOG_USEC`` from a timer on the event loop (so a stuck loop
stops the pings and systemd restarts the agent), ``STATUS=`` with a one-line
summary, and ``STOPPING=1`` on shutdown. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Callable

from .supervise import spawn

log = logging.getLogger("slsfwd.sdnotify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        return self._watchdog_s

    def send(self, *fields: str) -> bool:
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self, healthy: Callable[[], bool], status: Callable[[], str]) -> None:
        if self._watchdog_s is None or self._address is None:
            return
        self._task = spawn(self._watchdog(healthy, status), name="watchdog")

    async def _watchdog(self, healthy: Callable[[], bool], status: Callable[[], str]) -> None:
        assert self._watchdog_s is not None
        while True:
            if healthy():
                self.send("WATCHDOG=1", f"STATUS={status()}")
            await asyncio.sleep(self._watchdog_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    return value


def _watchdog_interval(env) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process
    return int(usec) / 1e6 / 2
