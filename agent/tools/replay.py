"""``slsfwd dead-letter replay``: ship dead-lettered logs again once the cause is fixed.

Each ``dead-letter-*.jsonl`` file is read, its logs are grouped by destination and
source and sent with PutLogs in batches (times outside SLS's window are repaired
as on the hot path). Logs the service accepts are removed from the file; the
rest stay, with the new reason, and the command exits 1 naming them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config
from agent.ops import hostinfo
from agent.ops.files import write_atomically
from agent.output.errors import ShipError
from agent.output.putlogs import PutLogsClient, client_for
from agent.output.ship import PutLogsSink
from agent.pipeline.batch import Destination
from agent.pipeline.encode import encode_log
from agent.pipeline.parse import contents_in_window

MAX_BATCH_LOGS = 1024


@dataclass
class ReplayReport:
    files: int = 0
    accepted: int = 0
    still_rejected: int = 0
    reasons: dict[str, int] | None = None
    unreadable_lines: int = 0
    in_use_files: int = 0  # still appended to by a running agent: replayed after it restarts


def dead_letter_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("dead-letter-*.jsonl"))


async def replay(config: Config) -> ReplayReport:
    sls = config.sls
    if sls is None:
        raise ValueError("no [sls] section: nowhere to replay to")
    client, ram_role = client_for(sls)
    if ram_role is not None:
        await ram_role.refresh()
    report = ReplayReport(reasons={})
    tags = [("__hostname__", hostinfo.hostname())]
    try:
        for path in dead_letter_files(Path(config.spool.dir) / "dead-letter"):
            if _written_by_a_running_agent(path):
                report.in_use_files += 1
                continue
            report.files += 1
            await _replay_file(client, path, tags, report)
    finally:
        await client.close()
        if ram_role is not None:
            await ram_role.close()
    return report


async def _replay_file(client: PutLogsClient, path: Path, tags, report: ReplayReport) -> None:
    records: list[dict] = []
    kept: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            record["_dest"] = Destination(record["project"], record["logstore"], record.get("topic", ""))
            records.append(record)
        except (ValueError, KeyError, TypeError):
            report.unreadable_lines += 1
            kept.append(line)  # never delete what we could not understand
    groups: dict[tuple[Destination, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["_dest"], record.get("source", "")), []).append(record)
    for (dest, source), items in groups.items():
        for start in range(0, len(items), MAX_BATCH_LOGS):
            batch = items[start : start + MAX_BATCH_LOGS]
            try:
                await _send(client, dest, source, tags, batch)
                report.accepted += len(batch)
            except ShipError as error:
                report.still_rejected += len(batch)
                report.reasons[error.code] = report.reasons.get(error.code, 0) + len(batch)
                kept.extend(_without_private(dict(r, reason=error.code, message=error.message)) for r in batch)
    _rewrite(path, kept)


async def _send(client: PutLogsClient, dest: Destination, source: str, tags, batch: list[dict]) -> None:
    now = int(time.time())
    logs = [
        encode_log(*contents_in_window(
            int(record.get("time", now)), [(str(k), str(v)) for k, v in record.get("contents", [])], now
        ))
        for record in batch
    ]
    await PutLogsSink(client).put(dest, source, tags, logs)


def _written_by_a_running_agent(path: Path) -> bool:
    """Files are named dead-letter-<time>-<pid>.jsonl; a live writer may still append."""
    pid = path.stem.rsplit("-", 1)[-1]
    return pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists()


def _without_private(record: dict) -> str:
    return json.dumps({k: v for k, v in record.items() if not k.startswith("_")}, ensure_ascii=False)


def _rewrite(path: Path, kept: list[str]) -> None:
    if not kept:
        path.unlink()
        return
    write_atomically(path, ("\n".join(kept) + "\n").encode("utf-8"))
