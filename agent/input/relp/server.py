"""The RELP input's asyncio part: the listener and one protocol object per session.

Thin: the pure :mod:`.protocol` and :mod:`.session` decide; this reads, appends
to the queue, and writes answers when the spool says a chunk is durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Callable

from agent.ops import metrics
from agent.ops.selflog import RateLimitedLog
from agent.spool.queue import ChunkQueue

from ..listener import Listener
from .protocol import CLIENT_COMMANDS, MAX_DATALEN, SERVERCLOSE
from .session import DuplicateTracker, Pending, Received, RelpSession

log = logging.getLogger("slsfwd.relp")

RELP_FRAMES = metrics.RELP_FRAMES
RELP_FRAMING_ERRORS = metrics.RELP_FRAMING_ERRORS
RELP_DUPLICATES = metrics.RELP_DUPLICATES
RELP_SESSIONS = metrics.RELP_SESSIONS
RELP_ACK_TIMEOUTS = metrics.RELP_ACK_TIMEOUTS
for _command in sorted(CLIENT_COMMANDS):
    RELP_FRAMES.labels(command=_command)

_READING, _DRAINING, _CLOSING, _CLOSED = range(4)
ABORT_AFTER_CLOSE_S = 5.0  # a closing session whose client reads nothing is aborted after this


class RelpReceiver(Listener):
    """Listens for omrelp; one :class:`_RelpConnection` per session. See the module docstring."""

    def __init__(
        self,
        queue: ChunkQueue,
        *,
        max_connections: int,
        clock: Callable[[], float] = time.time,
        ack_timeout_s: float = 10.0,
        max_unacked_frames: int = 1024,
        max_unacked_bytes: int = 8 * 1024 * 1024,
        max_datalen: int = MAX_DATALEN,
        close_grace_s: float = 1.0,
        duplicate_window_s: float = 300.0,
    ) -> None:
        super().__init__(
            queue, max_connections=max_connections, clock=clock,
            connections_gauge=RELP_SESSIONS, log=log, what="RELP session",
        )
        self.ack_timeout_s = ack_timeout_s
        self.max_unacked_frames = max_unacked_frames
        self.max_unacked_bytes = max_unacked_bytes
        self.max_datalen = max_datalen
        self.close_grace_s = close_grace_s
        self.duplicates = DuplicateTracker(window_s=duplicate_window_s)
        self._error_log = RateLimitedLog(log, interval_s=60.0)
        self._timeout_log = RateLimitedLog(log, interval_s=60.0)
        self._duplicate_log = RateLimitedLog(log, interval_s=60.0)
        self.framing_errors = 0
        self.ack_timeouts = 0
        self.duplicate_frames = 0

    async def close(self) -> None:
        """Stop reading; give pending acknowledgements ``close_grace_s`` to go out; then send each
        session the ``serverclose`` hint and close it. What stays unacknowledged is resent by rsyslog."""
        self.stop_accepting()
        self._cancel_resume()
        loop = asyncio.get_running_loop()
        connections = list(self._connections)
        for conn in connections:
            conn.drain()
        deadline = loop.time() + self.close_grace_s
        while loop.time() < deadline and any(c.waiting_for_durability for c in connections):
            await asyncio.sleep(0.01)
        for conn in connections:
            conn.server_close()
        deadline = loop.time() + 2.0
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            conn.abort()

    # -- connection bookkeeping ------------------------------------------

    def _make_protocol(self) -> "_RelpConnection":
        return _RelpConnection(self)

    def session_closed(self, conn: "_RelpConnection", unacked_hashes: list[int]) -> None:
        self.forget(conn)
        self.duplicates.remember(conn.peer, unacked_hashes, time.monotonic())

    def received(self, conn: "_RelpConnection", nbytes: int, counts: dict[str, int]) -> None:
        self.count_bytes(nbytes)
        for command, count in counts.items():
            if command in CLIENT_COMMANDS:
                RELP_FRAMES.labels(command=command).inc(count)

    def deliver(self, conn: "_RelpConnection", received: Received) -> int:
        """Append one read's syslog lines as one chunk; returns its seq."""
        group = received.group
        assert group is not None
        duplicates = self.duplicates.check(conn.peer, group.hashes, time.monotonic())
        if duplicates:
            self.duplicate_frames += duplicates
            RELP_DUPLICATES.inc(duplicates)
            self._duplicate_log.info(
                "%d frames from %s resent after an earlier session broke: shipped again (at-least-once)",
                duplicates, conn.peer,
            )
        return self.append(conn.peer, received.payload)

    def framing_error(self, conn: "_RelpConnection", reason: str) -> None:
        self.framing_errors += 1
        RELP_FRAMING_ERRORS.inc()
        self._error_log.warning("RELP session from %s aborted: %s", conn.peer, reason)

    def ack_timeout(self, conn: "_RelpConnection", frames: int) -> None:
        self.ack_timeouts += 1
        RELP_ACK_TIMEOUTS.inc()
        self._timeout_log.warning(
            "RELP session from %s closed: %d frames not durable within %.0f s (spool blocked?); "
            "rsyslog resends them", conn.peer, frames, self.ack_timeout_s,
        )


class _RelpConnection(asyncio.Protocol):
    def __init__(self, receiver: RelpReceiver) -> None:
        self.receiver = receiver
        self.session = RelpSession(max_datalen=receiver.max_datalen)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = _CLOSED
        self._reading = True
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        if not self.receiver.admit(self, transport):
            return
        self._state = _READING
        self.update_reading()

    def data_received(self, data: bytes) -> None:
        if self._state != _READING:
            return
        receiver = self.receiver
        received = self.session.feed(data, self._loop.time())
        receiver.received(self, len(data), received.counts)
        if received.error is not None:
            receiver.framing_error(self, received.error)
            self.abort()
            return
        if received.group is not None:
            seq = receiver.deliver(self, received)
            receiver.queue.when_durable(seq, functools.partial(self._durable, received.group))
            # Group commit per read: the acks wait for this fsync, not for the next timer tick.
            receiver.queue.request_sync()
            self._arm_timer()
        self._flush()
        self.update_reading()

    def eof_received(self) -> bool:
        # The client will send nothing more; answers still owed cannot be read by a half-closed
        # rsyslog, so close (unanswered frames are resent by rsyslog).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self._state != _CLOSED
        self._state = _CLOSED
        for timer in (self._timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._abort_timer = None
        if was_open:
            self.receiver.session_closed(self, self.session.unacked_hashes())

    def pause_writing(self) -> None:
        self._write_paused = True  # the client does not read our answers: stop reading its frames
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.update_reading()

    # -- answers

    def _durable(self, group: Pending) -> None:
        self.session.durable(group)
        # Coalesce: one spool sync makes many chunks durable in one go; answer them in one write.
        if not self._flush_scheduled and self._state in (_READING, _DRAINING):
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self._state in (_READING, _DRAINING):
            self._flush()
            self.update_reading()

    def _flush(self) -> None:
        out = self.session.take_output()
        if out and not self.transport.is_closing():
            self.transport.write(out)
        if self.session.close_answered:
            self._close()
        elif self.session.oldest_unacked_since is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def waiting_for_durability(self) -> bool:
        return self._state in (_READING, _DRAINING) and self.session.oldest_unacked_since is not None

    # -- reading

    def backpressure_changed(self) -> None:
        self.update_reading()

    def update_reading(self) -> None:
        if self._state == _CLOSED or self.transport is None or self.transport.is_closing():
            return
        session = self.session
        receiver = self.receiver
        want = (
            self._state == _READING
            and not receiver.backpressured
            and not self._write_paused
            and session.unacked_frames < receiver.max_unacked_frames
            and session.unacked_bytes < receiver.max_unacked_bytes
        )
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- the acknowledgement timeout

    def _arm_timer(self) -> None:
        if self._timer is None:
            since = self.session.oldest_unacked_since
            if since is not None:
                self._timer = self._loop.call_at(since + self.receiver.ack_timeout_s, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self._state not in (_READING, _DRAINING):
            return
        since = self.session.oldest_unacked_since
        if since is None:
            return
        if self._loop.time() - since >= self.receiver.ack_timeout_s - 0.001:
            self.receiver.ack_timeout(self, self.session.unacked_frames)
            self.server_close()
        else:
            self._arm_timer()

    # -- closing

    def drain(self) -> None:
        """Agent shutdown, step 1: read nothing more, keep sending acknowledgements."""
        if self._state == _READING:
            self._state = _DRAINING
            self._reading = False
            if not self.transport.is_closing():
                self.transport.pause_reading()

    def server_close(self) -> None:
        """Send what may be answered, the serverclose hint, and close."""
        if self._state not in (_READING, _DRAINING):
            return
        out = self.session.take_output()
        if not self.transport.is_closing():
            self.transport.write(out + SERVERCLOSE)
        self._close()

    def _close(self) -> None:
        if self._state in (_CLOSING, _CLOSED):
            return
        self._state = _CLOSING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.close()  # flushes the answers already written
        self._abort_timer = self._loop.call_later(ABORT_AFTER_CLOSE_S, self.abort)

    def abort(self) -> None:
        if self.transport is not None and self._state != _CLOSED:
            if self._state in (_READING, _DRAINING):
                self._state = _CLOSING
            self.transport.abort()
