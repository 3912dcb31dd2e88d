"""The queue between receiving and shipping.

The receiver appends :class:`Chunk` objects (the complete lines of one read,
with their receive time and peer). The shipping side takes them in order and
acknowledges each one once every log in it was accepted by the service (or
dead-lettered). A chunk that is taken but never acknowledged is handed out
again after a restart, so delivery is at-least-once.

:class:`ChunkQueue` is the interface; :class:`MemoryQueue` implements it in
memory, and the disk spool (``agent.spool``) implements it durably.

Appending never fails and never blocks, because the bytes are already read
from a socket; instead the queue reports ``writable`` and the receiver stops
reading its sockets while it is not (backpressure reaches rsyslog, which
queues on its side).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Callable, NamedTuple, Protocol


class Chunk(NamedTuple):
    seq: int  # position in the queue; acknowledgement names it
    received_at: int  # unix seconds when the bytes were read
    peer: str  # the TCP peer's address ("" if unknown)
    payload: bytes  # complete lines, each terminated by LF
    lines: int  # LFs in payload, counted once by whoever appended it
    # time.monotonic() of the append; 0.0 when read back from disk (a backlog, so: old)
    appended: float = 0.0

    @property
    def size(self) -> int:
        return len(self.payload)


class ChunkQueue(Protocol):
    def append(self, received_at: int, peer: str, payload: bytes, lines: int | None = None) -> int:
        """Append a chunk (``lines``: its LF count, if the caller has it); returns its seq."""
        ...

    def when_durable(self, seq: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once chunk ``seq`` survives a crash (spool: fsynced; memory: shipped)."""
        ...

    def request_sync(self) -> None:
        """Someone waits for durability (RELP acks): sync now instead of at the next tick."""
        ...

    @property
    def writable(self) -> bool: ...

    async def wait_writable(self) -> None: ...

    async def get(self) -> Chunk: ...

    def get_nowait(self) -> Chunk | None:
        """The next chunk if one can be had without waiting, else None."""
        ...

    def ack(self, seq: int) -> None: ...

    @property
    def backlog_bytes(self) -> int: ...

    @property
    def backlog_chunks(self) -> int: ...

    @property
    def unread(self) -> int:
        """Chunks appended but not yet taken by :meth:`get`."""
        ...

    def unacked_lines(self) -> int: ...

    def oldest_unacked_received_at(self) -> int | None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class MemoryQueue:
    """Bounded in-memory queue. Data is lost on a crash: use the disk spool."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._ready: collections.deque[Chunk] = collections.deque()
        self._unacked: dict[int, tuple[int, int, int]] = {}  # seq -> (bytes, lines, received_at)
        self._unacked_lines = 0
        self._durable_waiters: dict[int, Callable[[], None]] = {}
        self._bytes = 0
        self._next_seq = 0
        self._has_data = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()

    def append(self, received_at: int, peer: str, payload: bytes, lines: int | None = None) -> int:
        if lines is None:
            lines = payload.count(b"\n")
        chunk = Chunk(self._next_seq, received_at, peer, payload, lines, time.monotonic())
        self._next_seq += 1
        self._ready.append(chunk)
        self._unacked[chunk.seq] = (chunk.size, lines, received_at)
        self._bytes += chunk.size
        self._unacked_lines += lines
        self._has_data.set()
        if self._bytes >= self.max_bytes:
            self._has_room.clear()
        return chunk.seq

    def request_sync(self) -> None:
        return None  # nothing to sync: memory is "durable" once shipped

    def when_durable(self, seq: int, callback: Callable[[], None]) -> None:
        # Memory survives nothing: a chunk is safe only once it was shipped (acknowledged).
        if seq in self._unacked:
            self._durable_waiters[seq] = callback
        else:
            callback()

    @property
    def writable(self) -> bool:
        return self._bytes < self.max_bytes

    async def wait_writable(self) -> None:
        await self._has_room.wait()

    async def get(self) -> Chunk:
        while not self._ready:
            self._has_data.clear()
            await self._has_data.wait()
        return self._ready.popleft()

    def get_nowait(self) -> Chunk | None:
        return self._ready.popleft() if self._ready else None

    def ack(self, seq: int) -> None:
        entry = self._unacked.pop(seq, None)
        if entry is None:
            return
        waiter = self._durable_waiters.pop(seq, None)
        if waiter is not None:
            waiter()
        self._bytes -= entry[0]
        self._unacked_lines -= entry[1]
        if self._bytes < self.max_bytes:
            self._has_room.set()

    @property
    def backlog_bytes(self) -> int:
        return self._bytes

    @property
    def backlog_chunks(self) -> int:
        return len(self._unacked)

    @property
    def unread(self) -> int:
        return len(self._ready)

    def unacked_lines(self) -> int:
        return self._unacked_lines

    def oldest_unacked_received_at(self) -> int | None:
        # Dicts keep insertion order, and seqs are appended in order.
        return next(iter(self._unacked.values()))[2] if self._unacked else None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
