"""Logs the service rejected for good, kept as JSON lines with the reason.

Files are ``<dir>/dead-letter-<unix time>.jsonl``, one JSON object a log::

    {"reason": "InvalidKey", "message": "...", "project": "...", "logstore": "...",
     "topic": "", "source": "10.0.0.5", "time": 1795591573,
     "contents": [["hostname", "web-1"], ["msg", "..."]], "dead_lettered_at": 1795591600}

The directory is capped at ``max_bytes``; past the cap a log is not written
but still counted (``slsfwd_dead_letter_logs_total{reason="cap_exceeded"}``)
and reported in the agent's log, so nothing disappears unnoticed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from .batch import Destination
from .sdk import log_group_raw_class

log = logging.getLogger("slsfwd.deadletter")


def decode_logs(encoded_logs: list[bytes]) -> list[tuple[int, list[tuple[str, str]]]]:
    """Encoded ``LogGroup.Logs`` entries -> (time, contents) using the SDK's schema."""
    group = log_group_raw_class()()
    group.ParseFromString(b"".join(encoded_logs))
    out = []
    for entry in group.Logs:
        pairs = [
            (c.Key.decode("utf-8", "backslashreplace") if isinstance(c.Key, bytes) else c.Key,
             c.Value.decode("utf-8", "backslashreplace") if isinstance(c.Value, bytes) else c.Value)
            for c in entry.Contents
        ]
        out.append((entry.Time, pairs))
    return out


class DeadLetters:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.written_logs = 0
        self.over_cap_logs = 0
        self._file_path: Path | None = None

    def used_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.glob("dead-letter-*.jsonl"))

    def write(self, dest: Destination, source: str, encoded_logs: list[bytes], reason: str, message: str) -> int:
        """Store rejected logs; returns how many were written (the rest were over the cap)."""
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
                    "dead_lettered_at": int(time.time()),
                },
                ensure_ascii=False,
            )
            for unix_time, contents in decode_logs(encoded_logs)
        ]
        data = ("\n".join(records) + "\n").encode("utf-8")
        if self.used_bytes() + len(data) > self.max_bytes:
            self.over_cap_logs += len(records)
            log.error(
                "dead-letter directory %s is full (%d bytes cap): %d rejected logs (%s) are counted but not kept",
                self.directory, self.max_bytes, len(records), reason,
            )
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._file_path is None:
            self._file_path = self.directory / f"dead-letter-{int(time.time())}-{os.getpid()}.jsonl"
        with open(self._file_path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.written_logs += len(records)
        return len(records)
