"""Read coalescing (input.read_coalesce_ms): after a small read, a connection is not read
again for a while, so that a trickle of lines costs one wake-up per window, not per line.

Timers never fire early, so the lower bounds below (a pause lasts at least its window less
one step of the wake-up grid) hold on any host. Upper bounds would not: a loaded host delays
everything. So these tests wait for events with generous timeouts and count, and where they
compare times, they compare against a pause that the design makes long.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.input.tcp import BUSY_READ_BYTES, COALESCE_BELOW_BYTES, LineReceiver
from agent.ops.wakeups import GRID_S
from agent.spool.queue import MemoryQueue

SLACK_S = 0.005  # timestamps are taken a few instructions away from the timers they measure


def shortest_pause(coalesce_ms: int) -> float:
    """A pause ends on the wake-up grid, at most one grid step early, never at less than half."""
    window = coalesce_ms / 1000.0
    return max(window - GRID_S, window / 2) - SLACK_S


async def _receiver(coalesce_ms: int) -> tuple[LineReceiver, MemoryQueue, int]:
    queue = MemoryQueue(64 << 20)
    receiver = LineReceiver(queue, max_line_bytes=65536, max_connections=8, coalesce_ms=coalesce_ms)
    await receiver.start("127.0.0.1", 0)
    return receiver, queue, receiver.sockets[0].getsockname()[1]


async def _chunks_until(queue: MemoryQueue, lines: int, timeout: float) -> list[tuple[float, bytes]]:
    got: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    while sum(p.count(b"\n") for _, p in got) < lines:
        chunk = await asyncio.wait_for(queue.get(), max(0.01, deadline - time.monotonic()))
        got.append((chunk.appended, chunk.payload))  # when the receiver read it
    return got


def _wakeups(chunks: list[tuple[float, bytes]]) -> list[float]:
    """Chunks appended within 20 ms of each other came from one wake-up."""
    wakeups = [chunks[0][0]]
    for at, _ in chunks[1:]:
        if at - wakeups[-1] > 0.02:
            wakeups.append(at)
    return wakeups


async def test_a_trickle_of_lines_is_read_once_per_window() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=300)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.monotonic()
        for i in range(20):  # 20 lines over at least 0.6 s, one write each
            writer.write(b"line %d\n" % i)
            await writer.drain()
            await asyncio.sleep(0.03)
        chunks = await _chunks_until(queue, 20, timeout=10)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert b"".join(p for _, p in chunks) == b"".join(b"line %d\n" % i for i in range(20))
    # The first read begins a pause and is held: it is delivered when the window ends, together
    # with the lines read then. Each delivery begins the next pause, so wake-ups are at least a
    # pause apart, however the host stretches the sender's writes (one write every 30 ms would
    # otherwise be one wake-up every 30 ms).
    wakeups = _wakeups(chunks)
    assert wakeups[0] - started >= shortest_pause(300)
    gaps = [round(b - a, 3) for a, b in zip(wakeups, wakeups[1:])]
    assert all(gap >= shortest_pause(300) for gap in gaps), gaps


async def test_without_coalescing_every_write_is_its_own_read() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=0)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writes = 10
    try:
        for i in range(writes):
            writer.write(b"line %d\n" % i)
            await writer.drain()
            # Sender and receiver share this loop: the loop turn that runs this sleep reads the
            # line, so no pause means one chunk per write, whatever the host's load. (Shorter
            # than the 20 ms a held read waits for company, so holding one would merge two.)
            await asyncio.sleep(0.005)
        chunks = await _chunks_until(queue, writes, timeout=5)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert b"".join(p for _, p in chunks) == b"".join(b"line %d\n" % i for i in range(writes))
    # A pause or a held read merges writes (a 300 ms pause: all ten into one or two chunks).
    # Two are the margin for the kernel handing over two writes in one read.
    assert len(chunks) >= writes - 2, [p for _, p in chunks]


async def test_a_busy_connection_is_never_paused() -> None:
    coalesce_ms = 1000
    receiver, queue, port = await _receiver(coalesce_ms=coalesce_ms)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    line = b"x" * 199 + b"\n"
    total = 4 * COALESCE_BELOW_BYTES // len(line) * 8  # many reads' worth, sent at once
    try:
        writer.write(line * total)
        await writer.drain()
        chunks = await _chunks_until(queue, total, timeout=10)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert sum(p.count(b"\n") for _, p in chunks) == total
    # Reads of at least COALESCE_BELOW_BYTES start no coalescing pause, and a busy connection's
    # pause lasts until about BUSY_READ_BYTES arrived at its rate: here far less than a window.
    # A whole pause anywhere but after the last, short read would hold up everything behind it.
    gaps = [round(b[0] - a[0], 3) for a, b in zip(chunks, chunks[1:])]
    assert all(gap < shortest_pause(coalesce_ms) for gap in gaps[:-1]), gaps
    assert len(chunks) > 2, "the stream should have taken several reads"


async def test_a_busy_connection_is_read_in_few_large_reads() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=500)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    block = (b"y" * 511 + b"\n") * 64  # 32 KiB a write, as a busy rsyslog action sends
    writes = 48
    try:
        for _ in range(writes):  # about 3 MB/s: each write its own read if nothing paces them
            writer.write(block)
            await writer.drain()
            await asyncio.sleep(0.01)
        chunks = await _chunks_until(queue, writes * 64, timeout=10)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert b"".join(p for _, p in chunks) == block * writes
    # Paced to reads of about BUSY_READ_BYTES (6 writes), the 48 writes take a dozen reads, not 48.
    assert BUSY_READ_BYTES > 2 * len(block)
    assert len(chunks) <= writes // 2, [len(p) for _, p in chunks]


@pytest.mark.parametrize("coalesce_ms", [0, 500])
async def test_a_partial_line_is_delivered_when_the_peer_closes(coalesce_ms: int) -> None:
    receiver, queue, port = await _receiver(coalesce_ms=coalesce_ms)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"first\nno newline at the end")
    await writer.drain()
    writer.close()
    try:
        chunks = await _chunks_until(queue, 2, timeout=3)
    finally:
        receiver.stop_accepting()
        receiver.close_connections()
    assert b"".join(p for _, p in chunks) == b"first\nno newline at the end\n"


async def test_a_held_line_is_delivered_when_the_window_ends_even_if_nothing_follows() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=300)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.monotonic()
        writer.write(b"alone\n")
        await writer.drain()
        # Held for a pause, then delivered alone: waiting for a next read that never comes, or
        # for the close below, would time out here (5 s are over 16 windows).
        chunks = await _chunks_until(queue, 1, timeout=5)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert [p for _, p in chunks] == [b"alone\n"]
    assert chunks[0][0] - started >= shortest_pause(300)
