"""The console sink: each log as one JSON object on stdout.

Used when the config has no ``[sls]`` section, so a newcomer can see what
the agent would ship. It decodes the very LogGroup bytes that would go to
SLS, so what it prints is what the service would store.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from agent.pipeline.batch import Destination

from .decode import decode_logs


class ConsoleSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def put(self, dest: Destination, source: str, tags: list[tuple[str, str]], logs: list[bytes]) -> None:
        lines = []
        for unix_time, contents in decode_logs(logs):
            record: dict[str, object] = {"__time__": unix_time, "__source__": source}
            if dest.topic:
                record["__topic__"] = dest.topic
            for key, value in tags:
                record[f"__tag__:{key}"] = value
            record.update(contents)
            lines.append(json.dumps(record, ensure_ascii=False))
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()

    async def close(self) -> None:
        return None
