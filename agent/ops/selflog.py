"""Self-logging that cannot flood its own pipeline.

The agent's stderr goes to journald, and rsyslog forwards journald back to
the agent. A log line per failed request or per bad input line would feed
itself, so repeated problems are aggregated: at most one line per interval
per kind, with how many were suppressed.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._next = 0.0
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: object) -> bool:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return False
        if self._suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, self._suppressed)
        self._suppressed = 0
        self._next = now + self._interval
        self._logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)

    def info(self, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, msg, *args)
