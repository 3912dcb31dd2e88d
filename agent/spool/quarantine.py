"""Moving a segment that cannot be used out of the spool: ``<spool.dir>/quarantine/``.

Moved, never deleted: what could not be read may still be recovered by hand
(or be someone else's file). slsfwd never reads, counts toward ``spool.max_bytes``
or deletes anything there; ``slsfwd spool verify`` reports what it holds. A name
already taken there gets a ``.1``, ``.2``, ... suffix: seqs start again at 1 after
a spool is cleared, so names can repeat.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.ops.files import fsync_dir

QUARANTINE_DIR = "quarantine"


def quarantine_dir(spool_dir: Path) -> Path:
    return Path(spool_dir) / QUARANTINE_DIR


def move_aside(path: Path, quarantine: Path) -> Path:
    """Move ``path`` into ``quarantine`` (a rename: same file system); durable when it
    returns. Raises OSError."""
    quarantine.mkdir(mode=0o700, exist_ok=True)
    target = quarantine / path.name
    suffix = 0
    while target.exists():
        suffix += 1
        target = quarantine / f"{path.name}.{suffix}"
    os.rename(path, target)
    fsync_dir(quarantine)
    fsync_dir(path.parent)
    return target


def quarantined_files(quarantine: Path) -> int:
    try:
        return sum(1 for _ in quarantine.iterdir())
    except FileNotFoundError:
        return 0
