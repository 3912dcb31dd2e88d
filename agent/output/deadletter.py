"""Logs the service rejected for good, kept as JSON lines with the reason.

Files are ``<dir>/dead-letter-<unix time>-<pid>.jsonl``, one JSON object a log::

    {"reason": "InvalidKey", "message": "...", "project": "...", "logstore": "...",
     "topic": "", "source": "10.0.0.5", "time": 1795591573,
     "contents": [["hostname", "web-1"], ["msg", "..."]], "dead_lettered_at": 1795591600}

The directory is capped at ``max_bytes``; past the cap a log is not written
but still counted (``slsfwd_dead_letter_logs_total{reason="cap_exceeded"}``)
and reported in the agent's log, so nothing disappears unnoticed.

A write returns only once the logs are fsynced, because the caller then
acknowledges their spool records. The file work (the directory's size, the
append and the fsync) runs in a worker thread, one write at a time, so a burst
of rejected logs never stalls receiving and shipping. The directory's size is
listed once and then kept as a running total; it is listed again only when the
total says the cap is reached, because ``slsfwd dead-letter replay`` may have
emptied files since.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from agent.ops.files import fsync_dir, write_all
from agent.pipeline.batch import Destination

from .decode import decode_logs

log = logging.getLogger("slsfwd.deadletter")

FILE_GLOB = "dead-letter-*.jsonl"


def directory_bytes(directory: Path) -> int:
    """What the dead-letter files in ``directory`` take; 0 if it does not exist."""
    total = 0
    for path in directory.glob(FILE_GLOB):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # removed by a replay meanwhile
            pass
    return total


def to_records(dest: Destination, source: str, encoded_logs: list[bytes], reason: str, message: str) -> bytes:
    """The JSON lines for ``encoded_logs``, as stored."""
    now = int(time.time())
    records = [
        json.dumps(
            {
                "reason": reason,
                "message": message,
                "project": dest.project,
                "logstore": dest.logstore,
                "topic": dest.topic,
                "source": source,
                "time": unix_time,
                "contents": contents,
                "dead_lettered_at": now,
            },
            ensure_ascii=False,
        )
        for unix_time, contents in decode_logs(encoded_logs)
    ]
    return ("\n".join(records) + "\n").encode("utf-8")


class DeadLetters:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.written_logs = 0
        self.over_cap_logs = 0
        self._file_path = directory / f"dead-letter-{int(time.time())}-{os.getpid()}.jsonl"
        self._used_bytes: int | None = None  # running total; None until first listed
        self._one_at_a_time = asyncio.Lock()

    async def write(self, dest: Destination, source: str, encoded_logs: list[bytes], reason: str, message: str) -> int:
        """Store rejected logs durably; returns how many were written (the rest were over the cap).

        Raises OSError if they cannot be stored; nothing was acknowledged then.
        """
        data = to_records(dest, source, encoded_logs, reason, message)
        async with self._one_at_a_time:
            stored = await asyncio.to_thread(self._store, data)
        if not stored:
            self.over_cap_logs += len(encoded_logs)
            log.error(
                "dead-letter directory %s is full (%d bytes cap): %d rejected logs (%s) are counted but not kept",
                self.directory, self.max_bytes, len(encoded_logs), reason,
            )
            return 0
        self.written_logs += len(encoded_logs)
        return len(encoded_logs)

    def _store(self, data: bytes) -> bool:
        """In the worker thread: append and fsync ``data`` unless that would pass the cap."""
        if self._used_bytes is None or self._used_bytes + len(data) > self.max_bytes:
            self._used_bytes = directory_bytes(self.directory)
        if self._used_bytes + len(data) > self.max_bytes:
            return False
        new_file = not self._file_path.exists()
        if new_file:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            fsync_dir(self.directory)  # the new file's name must survive a power loss too
        self._used_bytes += len(data)
        return True

