"""Read coalescing (input.read_coalesce_ms): after a small read, a connection is not read
again for a while, so that a trickle of lines costs one wake-up per window, not per line."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.queue import MemoryQueue
from agent.receive import COALESCE_BELOW_BYTES, LineReceiver


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


async def test_a_trickle_of_lines_is_read_once_per_window() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=300)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.monotonic()
        for i in range(20):  # 20 lines over about 0.6 s, one write each
            writer.write(b"line %d\n" % i)
            await writer.drain()
            await asyncio.sleep(0.03)
        chunks = await _chunks_until(queue, 20, timeout=5)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert b"".join(p for _, p in chunks) == b"".join(b"line %d\n" % i for i in range(20))
    # The first read begins a pause and is held: it is delivered when the window ends (on the
    # wake-up grid, so between half the window and the window), together with the lines read
    # then. About one wake-up per 300 ms window: 20 lines in 2-5 wake-ups.
    wakeups = [chunks[0][0]]
    for at, _ in chunks[1:]:
        if at - wakeups[-1] > 0.02:
            wakeups.append(at)
    assert 2 <= len(wakeups) <= 5, [round(w - started, 3) for w in wakeups]
    assert 0.14 <= wakeups[0] - started < 0.4
    gaps = [b - a for a, b in zip(wakeups, wakeups[1:])]
    assert all(gap >= 0.14 for gap in gaps), gaps


async def test_without_coalescing_every_write_is_read_promptly() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=0)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(5):
            sent = time.monotonic()
            writer.write(b"line %d\n" % i)
            await writer.drain()
            [(at, payload)] = await _chunks_until(queue, 1, timeout=2)
            assert payload == b"line %d\n" % i
            assert at - sent < 0.1
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()


async def test_a_busy_connection_is_never_paused() -> None:
    receiver, queue, port = await _receiver(coalesce_ms=1000)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    line = b"x" * 199 + b"\n"
    total = 4 * COALESCE_BELOW_BYTES // len(line) * 8  # many reads' worth, sent at once
    try:
        started = time.monotonic()
        writer.write(line * total)
        await writer.drain()
        chunks = await _chunks_until(queue, total, timeout=5)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    # Reads of at least COALESCE_BELOW_BYTES start no pause; at most the last, short one does.
    assert chunks[-1][0] - started < 0.9
    assert sum(p.count(b"\n") for _, p in chunks) == total


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
        chunks = await _chunks_until(queue, 1, timeout=2)
    finally:
        writer.close()
        receiver.stop_accepting()
        receiver.close_connections()
    assert [p for _, p in chunks] == [b"alone\n"]
    assert 0.14 <= chunks[0][0] - started < 0.4
