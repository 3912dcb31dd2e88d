"""Durability: the group commit fdatasyncs what was written (and the ledger) at most ``fsync_ms`` later, on
the loop when small and in a thread when large, then deletes segments the durable ledger acknowledges.

A part of :class:`agent.spool.disk.DiskSpool`, whose ``__init__`` holds the state."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from agent.ops.files import fsync_dir
from agent.ops.wakeups import on_grid

from . import format as fmt
from . import tuning

log = logging.getLogger("slsfwd.spool")


@dataclass(slots=True)
class _SyncWork:
    """One group commit: fds to fdatasync and close, then the directory to fsync."""

    fds: list[int]
    directory: Path | None
    ledger: bool  # the ledger's fd is among fds
    acked: int  # the value the ledger file holds
    written: int  # every record up to this seq is in the files synced


class GroupCommit:

    def request_sync(self) -> None:
        """Sync as soon as possible (a waiter needs durability, e.g. RELP acks); a sync
        already running is followed by another at once, so waiters group-commit per batch."""
        self._sync_urgent = True
        if self._sync_task is None and not self.closed:
            self._start_sync()

    def _schedule_sync(self) -> None:
        """Arm the group commit. A write is synced at once if no sync began in the last
        ``fsync_ms`` (so low rates need no timer wake-up for it), else by the sync
        ``fsync_ms`` after the last one began; an acknowledgement alone waits up to
        tuning.LEDGER_SYNC_MS. A running sync schedules the next one when it ends."""
        if self._sync_task is not None or self.closed:
            return
        data = self._dirty or bool(self._unsynced_fds)
        if not data and not self._ledger_behind():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if data:
            delay = max(self._last_sync_start + self.fsync_ms / 1000.0, self._retry_sync_at) - now
            if delay <= 0:
                self._start_sync()
                return
        else:
            delay = max(self.fsync_ms, tuning.LEDGER_SYNC_MS) / 1000.0
        when = on_grid(now, delay)
        if self._sync_handle is not None:
            if self._sync_handle.when() <= when:
                return
            self._sync_handle.cancel()
        self._sync_handle = loop.call_at(when, self._start_sync)

    def _ledger_behind(self) -> bool:
        return self._ledger.unsynced or self._acked_seq > self._ledger.value

    def _needs_sync(self) -> bool:
        return self._dirty or bool(self._unsynced_fds) or self._ledger_behind()

    def _start_sync(self) -> None:
        if self._sync_handle is not None:
            self._sync_handle.cancel()  # this sync does what it was armed for
            self._sync_handle = None
        if not self._needs_sync():
            return
        loop = asyncio.get_running_loop()
        self._last_sync_start = loop.time()
        if self._unsynced_bytes <= tuning.INLINE_SYNC_BYTES:
            # Little to write back: syncing here costs less CPU than handing it to the
            # thread (a thread wake-up, GIL hand-offs, and one more wake-up of the loop).
            self._sync_now()
        else:
            self._sync_task = loop.create_task(self._sync_in_thread())

    def _take_sync_work(self) -> _SyncWork:
        """What covers everything written so far: segment fds, the directory, the ledger."""
        fds, self._unsynced_fds = self._unsynced_fds, []
        if self._dirty and self._fd >= 0:
            fds.append(os.dup(self._fd))
        sync_dir, self._dir_dirty = self._dir_dirty, False
        self._dirty = self._sync_urgent = False
        self._unsynced_bytes = 0
        if self._acked_seq > self._ledger.value:
            self._write_ledger()  # a write that failed before, retried
        ledger_fd, acked = self._ledger.take_sync()
        if ledger_fd >= 0:
            fds.append(ledger_fd)
        return _SyncWork(fds, self.directory if sync_dir else None, ledger_fd >= 0, acked, self._written_seq)

    def _sync_done(self, work: _SyncWork) -> None:
        if work.ledger:
            self._ledger.synced(work.acked)
        self._after_persist(self._ledger.durable)
        self._mark_durable(work.written)

    def _sync_failed(self, work: _SyncWork, exc: OSError) -> None:
        self._retry_sync_at = asyncio.get_running_loop().time() + max(self.fsync_ms / 1000.0, tuning.SYNC_RETRY_S)
        self._dirty = self._dir_dirty = True
        if work.ledger:
            self._ledger.sync_failed()
        self._error_log.error("spool sync failed (%s); retrying", exc)

    async def _sync_in_thread(self) -> None:
        work = self._take_sync_work()
        try:
            await asyncio.to_thread(_sync_files, work.fds, work.directory)
            self._sync_done(work)
        except OSError as exc:
            self._sync_failed(work, exc)
        finally:
            self._sync_task = None
        if self._sync_urgent and not self.closed:
            self.request_sync()
        elif self._needs_sync():
            self._schedule_sync()

    def _sync_now(self) -> None:
        work = self._take_sync_work()
        try:
            _sync_files(work.fds, work.directory)
            self._sync_done(work)
        except OSError as exc:  # append() must never fail: retry in the group commit
            self._sync_failed(work, exc)
            self._schedule_sync()

    def _after_persist(self, acked: int) -> None:
        # Whole segments below the durable ledger can go; never the active one.
        while self._segments and self._segments[0] is not self._active and self._segments[0].last_seq < acked:
            segment = self._segments.pop(0)
            if self._read_index == 0:  # it was read to its end: continue at the next one's start
                self._read_offset = fmt.SEGMENT_HEADER_SIZE
            else:
                self._read_index -= 1
            try:
                segment.path.unlink()
            except FileNotFoundError:
                pass


def _sync_files(fds: list[int], directory: Path | None) -> None:
    """fdatasync and close every fd (all of them closed, even if one fails), then fsync
    ``directory`` so that new segment files are found after a power loss."""
    error: OSError | None = None
    for fd in fds:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            error = error or exc
        finally:
            os.close(fd)
    if error is not None:
        raise error
    if directory is not None:
        fsync_dir(directory)
