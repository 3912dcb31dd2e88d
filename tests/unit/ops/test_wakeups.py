"""agent/wakeups.py: deadlines move earlier onto a shared grid, never later, never by half."""

import pytest

from agent.ops.wakeups import on_grid


@pytest.mark.parametrize("now, delay, when", [
    (100.0, 0.5, 100.5),     # already on the grid
    (100.003, 0.5, 100.5),   # a little earlier, onto the grid
    (100.09, 2.0, 102.0),
    (100.099, 0.2, 100.2),
    (100.0, 0.05, 100.05),   # shorter than the grid: kept
    (100.07, 0.1, 100.17),   # snapping would halve it: kept
    (100.05, 0.2, 100.2),
    (0.0, 0.0, 0.0),
])
def test_on_grid(now, delay, when):
    assert on_grid(now, delay) == pytest.approx(when)


@pytest.mark.parametrize("delay", [0.001, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 30.0])
def test_never_later_and_never_less_than_half(delay):
    for i in range(200):
        now = 1000.0 + i * 0.0137
        when = on_grid(now, delay)
        assert now + delay / 2 <= when <= now + delay + 1e-9


def test_timers_of_different_lengths_meet_on_the_grid():
    start = 500.0 + 0.004  # a read, just after a grid point
    assert on_grid(start, 0.5) == on_grid(start + 0.3, 0.2) == pytest.approx(500.5)
