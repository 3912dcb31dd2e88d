"""One grid for the agent's low-rate timers, so that they wake the process together.

A wake-up is expensive next to the work it does at an everyday rate: a bare
``asyncio.sleep`` cycle on uvloop costs about 0.28 ms of CPU on a 2-vCPU
cloud VM, mostly the kernel's and the hypervisor's. At 1,000 lines/s the
receiver's read coalescing, each batch's linger and the spool's group commit
each woke the agent on their own schedule, about 20 times a second: half of
its CPU.

Each of those deadlines is an upper bound (a line waits *at most* linger_ms
for company, a write is synced *at most* fsync_ms later, reading pauses *at
most* read_coalesce_ms), so each may move earlier: onto the latest point of a
shared grid, where the others land too and fire in the same loop iteration.
"""

from __future__ import annotations

import math

GRID_S = 0.1


def on_grid(now: float, delay: float, grid: float = GRID_S) -> float:
    """When to wake for a deadline ``delay`` after ``now`` (loop time): the last grid point
    not after it, unless that would cut the delay by half or more (then the deadline itself)."""
    when = now + delay
    snapped = math.floor(when / grid) * grid
    return snapped if snapped - now > delay / 2 else when
