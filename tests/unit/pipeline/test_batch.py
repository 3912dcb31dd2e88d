"""Batcher.add_run: where a run of logs is cut into batches (a table of cases)."""

from __future__ import annotations

import pytest

from agent.pipeline.batch import Batch, Batcher, Destination, Ticket

ROUTE = (Destination("p", "ls", ""), "10.0.0.1")


def logs_of(sizes: list[int]) -> list[bytes]:
    return [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]


def run(max_logs: int, max_bytes: int, runs: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Sizes of the closed batches, and of the batch left open, after adding each run."""
    closed: list[Batch] = []
    batcher = Batcher(max_logs=max_logs, max_bytes=max_bytes, linger=2.0, on_close=closed.append, clock=lambda: 0.0)
    sent: list[bytes] = []
    for seq, sizes in enumerate(runs):
        logs = logs_of(sizes)
        sent += logs
        batcher.add_run(ROUTE, logs, Ticket(seq, lambda _: None))
    still_open = list(batcher._open.values())
    batches = closed + still_open
    assert [log for b in batches for log in b.logs] == sent  # nothing lost, order kept
    for batch in batches:
        assert batch.raw_bytes == sum(map(len, batch.logs))
    return [[len(log) for log in b.logs] for b in closed], [len(log) for b in still_open for log in b.logs]


@pytest.mark.parametrize(
    "max_logs, max_bytes, runs, closed, left_open",
    [
        (10, 100, [[10, 20]], [], [10, 20]),
        (10, 100, [[50, 50]], [[50, 50]], []),  # exactly full: closed at once
        (10, 100, [[50, 49], [1]], [[50, 49, 1]], []),
        (10, 100, [[50, 40], [1]], [], [50, 40, 1]),
        (10, 100, [[50, 49], [2]], [[50, 49]], [2]),
        (10, 100, [[60, 50]], [[60]], [50]),
        (10, 100, [[60], [50]], [[60]], [50]),
        (10, 100, [[150]], [[150]], []),  # larger than max_bytes: alone
        (10, 100, [[10, 150, 10]], [[10], [150]], [10]),
        (10, 100, [[150], [10]], [[150]], [10]),
        (10, 100, [[10], [150]], [[10], [150]], []),
        (3, 1000, [[1, 1, 1]], [[1, 1, 1]], []),  # closed as soon as max_logs
        (3, 1000, [[1] * 7], [[1] * 3, [1] * 3], [1]),
        (3, 1000, [[1, 1], [1, 1]], [[1, 1, 1]], [1]),
        (3, 10, [[4, 4, 4, 4]], [[4, 4]], [4, 4]),
        (3, 10, [[4, 4, 4, 4, 1]], [[4, 4], [4, 4, 1]], []),
        (1, 100, [[5, 5]], [[5], [5]], []),
        (10, 100, [[]], [], []),
    ],
)
def test_add_run_cuts_batches(max_logs, max_bytes, runs, closed, left_open):
    assert run(max_logs, max_bytes, runs) == (closed, left_open)


def test_add_run_holds_each_ticket_once_per_batch():
    closed: list[Batch] = []
    done: list[int] = []
    batcher = Batcher(max_logs=2, max_bytes=1000, linger=2.0, on_close=closed.append, clock=lambda: 0.0)
    ticket = Ticket(5, done.append)
    batcher.add_run(ROUTE, logs_of([1, 1, 1]), ticket)
    ticket.seal()
    batcher.close_all()
    assert [b.tickets for b in closed] == [[ticket], [ticket]]
    closed[0].release()
    assert done == []
    closed[1].release()
    assert done == [5]
