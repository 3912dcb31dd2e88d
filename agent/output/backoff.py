"""Backoff schedules. Pure: the random source is passed in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter.

    ``floor`` is the part of the ceiling that is always waited: 0 is "full
    jitter"; quota backoff keeps a floor so that it never becomes a tight loop.
    """

    base: float
    cap: float
    floor: float = 0.0

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** min(attempt, 32)))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = self.ceiling(attempt)
        return ceiling * (self.floor + (1.0 - self.floor) * rand())


# Transient errors: 100 ms doubling to 30 s, as the official producers do (they cap at 50 s).
TRANSIENT = Backoff(base=0.1, cap=30.0)
# Quota: Logtail backs off from 3 s doubling to 60 s; jitter keeps agents from marching together.
QUOTA = Backoff(base=3.0, cap=60.0, floor=0.5)
# Credentials or configuration problems: never more often than every 30 s.
HOLD_INTERVAL_S = 30.0
