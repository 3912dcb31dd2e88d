"""The ledger file: the acknowledged position, kept in two slots overwritten in place.

Why in place: an acknowledgement then costs one ``pwrite(2)`` on the event loop
(a ``kill -9`` keeps it, as it keeps a segment write), and its ``fdatasync``
rides on the spool's group commit. Replacing the file instead (write a temp
file, fsync, rename, fsync the directory) cost two fsyncs and six other system
calls per update, about a sixth of the agent's CPU at 1,000 lines/s.

Why two slots: an overwrite can tear on a power loss. Between two syncs of the
file only one slot (the *hot* one) is written; the slots switch only after a
sync that covered every write to the hot one. So a torn write can damage only
the hot slot, and the other holds a durable value: the reader takes the larger
valid slot, and a stale one only means duplicates, never loss.

The file is created (or upgraded from the one-record file of older versions)
with both slots at once, by writing a temp file and renaming it, while there
is room: overwriting allocated blocks needs no space, so a full disk cannot
stop the ledger from moving forward, and only a newer ledger lets acknowledged
segments be deleted to free space. The byte layout is in :mod:`agent.spool`.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.ops.files import write_atomically

from . import format as fmt


def read_slots(path: Path) -> fmt.LedgerSlots | None:
    """The ledger file's slots, or None when there is no file yet. A file that cannot be
    read is damage (no slot valid), as one that does not check out. Raises OtherVersionError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = f"{path}: cannot read the ledger: {os.strerror(exc.errno) if exc.errno else exc}"
        return fmt.LedgerSlots(None, 0, [problem], len(fmt.LEDGER_SLOT_OFFSETS))
    return fmt.decode_ledger_file(data, str(path))


class Ledger:
    """Owned by the event loop; the group commit only fdatasyncs a dup of its fd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = 1  # the newest acked_seq written to the file, durable or not
        self.durable = 1  # the newest one a completed sync covered
        self._fd = -1
        self._slot_count = 2  # 1: an old one-record file that there was no room to upgrade
        self._hot = 0  # the slot written since the last sync
        self._unsynced = False

    def load(self) -> fmt.LedgerSlots | None:
        """The file's slots as read (see :func:`read_slots`)."""
        slots = read_slots(self.path)
        if slots is not None and slots.acked_seq is not None:
            self._hot = 1 - slots.newest_slot  # keep the newest value untouched until a sync
        return slots

    def open(self, acked: int, *, rewrite: bool) -> None:
        """Open the file to write in place, holding ``acked``. It is (re)written whole, with
        both slots, when it is missing, damaged (``rewrite``) or has one slot. Raises OSError."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = -1
        if rewrite or size != fmt.LEDGER_FILE_SIZE:
            try:
                write_atomically(self.path, fmt.encode_ledger_file(acked))
            except OSError:
                if size < fmt.LEDGER_SIZE:
                    raise
                # No room for a new file, but the old one's blocks are allocated: overwrite
                # its first slot. That write can tear, which replays everything (duplicates).
                self._open_one_slot(acked)
                return
            self._hot = 0
        self._fd = os.open(self.path, os.O_RDWR)
        self.value = self.durable = acked

    def _open_one_slot(self, acked: int) -> None:
        self._slot_count = 1
        self._hot = 0
        self._fd = os.open(self.path, os.O_RDWR)
        self.value = 0
        self.write(acked)

    @property
    def unsynced(self) -> bool:
        return self._unsynced

    def write(self, acked: int) -> None:
        """Record ``acked`` in the hot slot (no sync). Raises OSError."""
        if self._fd < 0:  # it could not be created at start (a full disk): try again
            self.open(acked, rewrite=True)
            return
        if acked <= self.value:
            return
        os.pwrite(self._fd, fmt.encode_ledger(acked), fmt.LEDGER_SLOT_OFFSETS[self._hot])
        self.value = acked
        self._unsynced = True

    def take_sync(self) -> tuple[int, int]:
        """For the group commit: (a dup of the fd to fdatasync and close, or -1 if nothing
        needs it; the value the sync covers)."""
        if not self._unsynced or self._fd < 0:
            return -1, self.value
        self._unsynced = False
        return os.dup(self._fd), self.value

    def synced(self, value: int) -> None:
        """A sync of the file, started after ``value`` was written, completed."""
        self.durable = max(self.durable, value)
        if not self._unsynced and self._slot_count == 2:
            self._hot = 1 - self._hot  # both slots are durable: the older becomes the hot one

    def sync_failed(self) -> None:
        self._unsynced = True

    def sync_now(self) -> None:
        """fdatasync on the caller's thread (rare paths only). Raises OSError."""
        if self._fd >= 0 and self._unsynced:
            self._unsynced = False
            try:
                os.fdatasync(self._fd)
            except OSError:
                self._unsynced = True
                raise
            self.synced(self.value)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
