"""Appending: a chunk becomes a record in the active segment at once (``write(2)``), with rotation,
truncation of a partial record, and a write error (ENOSPC) held and retried every second.

A part of :class:`agent.spool.disk.DiskSpool`, whose ``__init__`` holds the state."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from typing import Callable

from agent.ops import metrics

from . import format as fmt
from . import tuning
from .queue import Chunk
from .records import _Pending, _write_both

log = logging.getLogger("slsfwd.spool")


class Appending:

    def append(self, received_at: int, peer: str, payload: bytes, lines: int | None = None) -> int:
        seq = self._next_seq
        self._next_seq += 1
        item = _Pending(seq, received_at, peer, payload, payload.count(b"\n") if lines is None else lines)
        self._totals.add(len(payload), item.lines)
        if self._pending or not self._write(item):
            self._pending.append(item)
            self._schedule_retry()
        self._after_append()
        return seq

    def when_durable(self, seq: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the record ``seq`` is fsynced (RELP acknowledges then)."""
        if seq <= self._durable_seq:
            callback()
        else:
            self._durable_waiters.append((seq, callback))

    def _mark_durable(self, upto: int) -> None:
        if upto <= self._durable_seq:
            return
        self._durable_seq = upto
        waiters = self._durable_waiters
        while waiters and waiters[0][0] <= upto:
            _, callback = waiters.popleft()
            callback()

    def _write(self, item: _Pending) -> bool:
        """Append one record to the active segment; False (nothing written) on an error."""
        active = self._active
        if active is None or (active.size >= self.segment_bytes and active.last_seq >= 0):
            try:
                self._open_new_segment(item.seq)
            except OSError as exc:
                self._note_write_error(exc)
                return False
            active = self._active
            assert active is not None
        head, payload = fmt.encode_record_parts(item.seq, item.received_at, item.lines, item.peer.encode(), item.payload)
        try:
            _write_both(self._fd, head, payload)
        except OSError as exc:
            self._truncate_back(active.size)
            self._note_write_error(exc)
            return False
        if active.last_seq < 0:
            active.first_received_at = item.received_at
        active.size += len(head) + len(payload)
        active.last_seq = item.seq
        self._written_seq = item.seq
        self._dirty = True
        self._unsynced_bytes += len(head) + len(payload)
        chunk = Chunk(item.seq, item.received_at, item.peer, item.payload, item.lines, time.monotonic())
        if self._mem_mode and self._mem_bytes < self.read_ahead_bytes:
            self._mem.append(chunk)
            self._mem_bytes += len(item.payload)
            self._read_index = len(self._segments) - 1  # the active segment is always the last
            self._read_offset = active.size
        else:
            self._mem_mode = False  # the reader goes to disk from its position
        if self._write_error is not None and not self._pending:
            self._clear_write_error()
        return True

    def _after_append(self) -> None:
        if self.fsync_ms == 0 and self._dirty:
            self._sync_now()
        else:
            self._schedule_sync()
        if self._totals.bytes >= self.max_bytes:
            if self.full_policy == "drop_oldest":
                self._drop_oldest()
            if self._totals.bytes >= self.max_bytes:
                self._has_room.clear()
        # Wake the reader after arming the sync, so that a sync handed to the thread starts
        # before the reader's turn: it then ends while the loop is busy, not after it slept.
        self._has_data.set()

    def _truncate_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)  # a partial record must not stay behind
        except OSError as exc:
            self._error_log.error("cannot truncate a partial spool record: %s", exc)

    def _note_write_error(self, exc: OSError) -> None:
        reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
        if self._write_error is None:
            metrics.SPOOL_WRITE_ERRORS.labels(reason=reason).inc()
        self._write_error = reason
        metrics.SPOOL_WRITE_BLOCKED.set(1)
        self._has_room.clear()
        self._error_log.error(
            "cannot write to the spool in %s (%s): input paused, retrying every %.0f s; nothing is dropped",
            self.directory, os.strerror(exc.errno or 0) or exc, tuning.WRITE_RETRY_S,
        )

    def _clear_write_error(self) -> None:
        log.info("spool writes work again")
        self._write_error = None
        metrics.SPOOL_WRITE_BLOCKED.set(0)

    def _schedule_retry(self) -> None:
        if self._retry_handle is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._retry_handle = loop.call_later(tuning.WRITE_RETRY_S, self._retry_pending)

    def _retry_pending(self) -> None:
        self._retry_handle = None
        while self._pending:
            if not self._write(self._pending[0]):
                self._schedule_retry()
                return
            self._pending.popleft()
        if self._write_error is not None:
            self._clear_write_error()
        self._after_append()
        if self._totals.bytes < self.max_bytes:
            self._has_room.set()

    @property
    def writable(self) -> bool:
        return self._totals.bytes < self.max_bytes and not self._pending

    async def wait_writable(self) -> None:
        while not self.writable:
            self._has_room.clear()
            await self._has_room.wait()
