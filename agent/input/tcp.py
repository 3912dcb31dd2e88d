"""TCP input: rsyslog's connections -> framed chunks in the queue.

One :class:`asyncio.Protocol` per connection (callbacks are cheaper than
streams: no task and no await per read). Each read is framed at once and its
complete lines are appended to the queue as one chunk.

Backpressure: when the queue is not writable, every connection stops
reading (``pause_reading``), so the kernel's buffers fill and rsyslog queues
on its side; reading resumes when the queue has room again. Memory per
connection is bounded by the framer (``input.max_line_bytes``), and the
number of connections by ``input.max_connections``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from agent.ops import metrics
from agent.ops.selflog import RateLimitedLog
from agent.ops.wakeups import on_grid
from agent.spool.queue import ChunkQueue

from .framing import FramerStats, LineFramer
from .listener import Listener

log = logging.getLogger("slsfwd.receive")

# Reads smaller than this start a short coalescing pause (input.read_coalesce_ms).
COALESCE_BELOW_BYTES = 16384
# A held read goes out alone if no read follows the end of its pause this soon.
HELD_ALONE_AFTER_S = 0.02
# A busy connection is paced to reads of about this size: after a read, it is not read again
# until about this much has arrived at its rate (at most read_coalesce_ms). A read at least this
# large found the kernel's buffer full or nearly (uvloop reads up to 256,000 bytes at a time),
# so more is waiting and no pause follows: pacing never slows a connection the agent lags.
BUSY_READ_BYTES = 192 * 1024
# Shorter pauses are not worth their timer: at such rates reads come back nearly full anyway.
BUSY_MIN_PAUSE_S = 0.002
# Nor longer ones: a rate misjudged low (the sender stalled a moment) must not leave much more
# than BUSY_READ_BYTES in the kernel, where it fills the socket's buffer and stalls the sender.
BUSY_MAX_PAUSE_S = 0.1


class LineReceiver(Listener):
    def __init__(
        self,
        queue: ChunkQueue,
        *,
        max_line_bytes: int,
        max_connections: int,
        clock: Callable[[], float] = time.time,
        coalesce_ms: int = 0,
    ) -> None:
        super().__init__(
            queue, max_connections=max_connections, clock=clock,
            connections_gauge=metrics.INPUT_CONNECTIONS, log=log, what="connection",
        )
        self.coalesce_s = coalesce_ms / 1000.0
        self.max_line_bytes = max_line_bytes
        self._truncation_log = RateLimitedLog(log, interval_s=60.0)

    def set_max_line_bytes(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        for conn in self._connections:
            conn.framer.max_line_bytes = max_line_bytes

    def close_connections(self) -> None:
        """Flush every connection's partial line into the queue and close it."""
        for conn in list(self._connections):
            conn.flush_and_close()

    def _make_protocol(self) -> "_Connection":
        return _Connection(self)

    def deliver(self, peer: str, lines: bytes, stats: FramerStats) -> None:
        self.append(peer, lines)

    def report_framer(self, peer: str, stats: FramerStats, before: tuple[int, int, int]) -> None:
        truncated, discarded, framing = before
        if stats.truncated_lines > truncated:
            metrics.INPUT_TRUNCATED.inc(stats.truncated_lines - truncated)
            metrics.INPUT_DISCARDED_BYTES.inc(stats.discarded_bytes - discarded)
            self._truncation_log.warning(
                "line from %s longer than input.max_line_bytes (%d): cut there, the rest discarded",
                peer, self.max_line_bytes,
            )
        elif stats.discarded_bytes > discarded:
            metrics.INPUT_DISCARDED_BYTES.inc(stats.discarded_bytes - discarded)
        if stats.framing_errors > framing:
            metrics.INPUT_FRAMING_ERRORS.inc(stats.framing_errors - framing)
            self._truncation_log.warning("octet-counting error from %s: reading LF-framed lines instead", peer)


class _Connection(asyncio.Protocol):
    __slots__ = ("receiver", "framer", "transport", "peer", "_open", "_coalescing", "_held", "_held_deadline",
                 "_loop", "_last_read_at")

    def __init__(self, receiver: LineReceiver) -> None:
        self.receiver = receiver
        self.framer = LineFramer(receiver.max_line_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._open = False
        self._coalescing: asyncio.TimerHandle | None = None
        self._held: list[bytes] = []  # the small read that began a coalescing pause
        self._held_deadline: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_read_at = 0.0  # loop time of the last read that was not held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()  # once: each get_running_loop() is a getpid() here
        self._last_read_at = self._loop.time()
        if not self.receiver.admit(self, transport):
            return
        self._open = True
        if self.receiver.backpressured:
            self.backpressure_changed()

    def data_received(self, data: bytes) -> None:
        if self._coalescing is not None:  # a read already under way when the pause began
            self._held.append(data)
            return
        held = self._take_held()  # after a pause: delivered with this read, as one chunk
        if held:
            data = b"".join([*held, data])
        coalesce_s = self.receiver.coalesce_s
        if not coalesce_s:
            self._receive(data)
            return
        now = self._loop.time()
        since_last_read, self._last_read_at = now - self._last_read_at, now
        if len(data) < COALESCE_BELOW_BYTES:
            # A small read means a low rate: wait a moment so the next wake-up reads many
            # lines at once. Waking per line is what makes a naive agent cost 7% of a core.
            self._pause_for(coalesce_s)
            if not held:
                # Held too, and delivered with the next read: alone, it would cost the spool
                # another sync and the consumer another wake-up. (Like the bytes waiting in
                # the kernel meanwhile, a kill -9 loses it: at most read_coalesce_ms.)
                self._held.append(data)
                return
            self._receive(data)
            return
        self._receive(data)
        if len(data) < BUSY_READ_BYTES and not held:
            # A busy connection the agent keeps up with: each read would take what one write of
            # the sender brought (about 32 KB, 300 wake-ups a second at 10 MB/s). Pause until
            # about BUSY_READ_BYTES have arrived at the rate this read shows, at most
            # read_coalesce_ms: the same bound on what waits in the kernel as after a small read.
            # (Not after a held read: that is a slow connection's pause ending, paced already.)
            pause = min(coalesce_s, BUSY_MAX_PAUSE_S, BUSY_READ_BYTES * since_last_read / len(data))
            if pause >= BUSY_MIN_PAUSE_S:
                self._pause_for(pause)

    def _pause_for(self, seconds: float) -> None:
        if self.transport.is_closing():
            return
        self.transport.pause_reading()
        loop = self._loop
        self._coalescing = loop.call_at(on_grid(loop.time(), seconds), self._coalesce_done)

    def _receive(self, data: bytes) -> None:
        stats = self.framer.stats
        before = (stats.truncated_lines, stats.discarded_bytes, stats.framing_errors)
        self.receiver.count_bytes(len(data))
        lines = self.framer.feed(data)
        if lines:
            self.receiver.deliver(self.peer, lines, stats)
        if (stats.truncated_lines, stats.discarded_bytes, stats.framing_errors) != before:
            self.receiver.report_framer(self.peer, stats, before)

    def eof_received(self) -> bool:
        self._flush_partial()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._coalescing is not None:
            self._coalescing.cancel()
            self._coalescing = None
        if self._open:
            self._flush_partial()  # a reset still ends the last line
            self._open = False
            self.receiver.forget(self)

    def _take_held(self) -> list[bytes] | tuple[()]:
        if not self._held:
            return ()  # the common case on a busy connection: no new list per read
        if self._held_deadline is not None:
            self._held_deadline.cancel()
            self._held_deadline = None
        held, self._held = self._held, []
        return held

    def _release_held(self) -> None:
        held = self._take_held()
        if held:
            self._receive(b"".join(held))

    def _flush_partial(self) -> None:
        self._release_held()
        tail = self.framer.finish()
        if tail:
            self.receiver.deliver(self.peer, tail, self.framer.stats)

    def backpressure_changed(self) -> None:
        """Paused while the queue is full; afterwards reading resumes unless a coalescing pause still runs."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.receiver.backpressured:
            self.transport.pause_reading()
        elif self._coalescing is None:
            self.transport.resume_reading()

    def _coalesce_done(self) -> None:
        self._coalescing = None
        if self._held:
            # Delivered with the read this resumption brings, or alone if none comes soon.
            self._held_deadline = self._loop.call_later(HELD_ALONE_AFTER_S, self._release_held)
        if not self.receiver.backpressured and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def flush_and_close(self) -> None:
        self._flush_partial()
        if self.transport is not None:
            self.transport.close()
