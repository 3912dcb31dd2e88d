"""The disk spool on a real, small filesystem (a 256 KiB tmpfs) that runs out of space for real."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent.spool import disk, tuning, verify
from tests.unit.spool.test_spool import (
    BIG,
    append_n,
    assert_chunks,
    get_n,
    metric,
    nothing_more,
    open_spool,
)

pytestmark = pytest.mark.slow  # mounts a tmpfs

FS_SIZE = 256 * 1024


@pytest.fixture
def small_fs():
    where = Path(tempfile.mkdtemp(prefix="slsfwd-tmpfs-"))
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(where)],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        where.rmdir()
        pytest.fail(f"cannot mount a tmpfs (these tests need root and mount(2)): {exc}")
    if result.returncode != 0:
        where.rmdir()
        pytest.fail(f"cannot mount a tmpfs (these tests need root and mount(2); mount exited {result.returncode}): "
                    f"{result.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        where.rmdir()


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch):
    monkeypatch.setattr(tuning, "WRITE_RETRY_S", 0.02)


CHUNK = dict(lines=10, width=100)  # about 1 kB per chunk


def fill_until_blocked(spool, sent: dict[int, bytes], first: int = 1) -> int:
    """Append until the spool stops being writable; return the last seq appended."""
    i = first - 1
    while spool.writable:
        i += 1
        assert i < first + 2 * FS_SIZE // 1000, "the filesystem never filled up"
        sent.update(append_n(spool, i, 1, **CHUNK))
    return i


async def test_real_enospc_blocks_then_resumes_when_space_is_freed(small_fs):
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (64 * 1024))
    root = small_fs / "spool"
    spool, _ = open_spool(root, segment_bytes=32 * 1024)
    try:
        sent: dict[int, bytes] = {}
        blocked_at = fill_until_blocked(spool, sent)
        assert blocked_at > 50
        assert spool.write_error == "disk_full"
        assert metric("slsfwd_spool_write_blocked") == 1
        # another connection's read arrives while input is pausing: kept, never raised
        last = blocked_at + 1
        sent.update(append_n(spool, last, 1, **CHUNK))
        assert spool.backlog_chunks == last
        assert spool.backlog_bytes == sum(len(p) for p in sent.values())
        # on disk: the chunks before the failed one, clean (the partial record was cut off)
        report = verify(root)
        assert report.replay_records == blocked_at - 1
        assert (report.corrupt_records, report.torn_bytes) == (0, 0)
        await asyncio.sleep(0.1)  # several retries, still full
        assert not spool.writable and metric("slsfwd_spool_write_blocked") == 1
        # the shipper keeps reading what is on disk meanwhile
        got = await get_n(spool, blocked_at - 1)

        filler.unlink()
        await asyncio.wait_for(spool.wait_writable(), 2)
        assert spool.writable and spool.write_error is None
        assert metric("slsfwd_spool_write_blocked") == 0
        got += await get_n(spool, last - blocked_at + 1)
        sent.update(append_n(spool, last + 1, 5, **CHUNK))
        got += await get_n(spool, 5)
        assert_chunks(got, range(1, last + 6), sent)
        assert await nothing_more(spool)
        for c in got:
            spool.ack(c.seq)
        await spool.flush()
    finally:
        await spool.close()
    report = verify(root)
    assert (report.corrupt_records, report.torn_bytes, report.replay_records) == (0, 0, 0)
    spool, recovery = open_spool(root, segment_bytes=32 * 1024)
    try:
        assert (recovery.replay_records, recovery.corrupt_records, recovery.torn_bytes) == (0, 0, 0)
    finally:
        await spool.close()


async def test_real_enospc_backlog_is_shipped_after_a_restart(small_fs):
    root = small_fs / "spool"
    spool, _ = open_spool(root, segment_bytes=32 * 1024)
    sent: dict[int, bytes] = {}
    try:
        blocked_at = fill_until_blocked(spool, sent)
    finally:
        await spool.close()  # the one pending chunk is reported lost at exit; everything written stays
    spool = disk.DiskSpool(root, max_bytes=BIG, fsync_ms=5, segment_bytes=32 * 1024)
    try:
        recovery = spool.open()
        assert (recovery.corrupt_records, recovery.torn_bytes) == (0, 0)
        assert recovery.replay_records == blocked_at - 1
        got = await get_n(spool, blocked_at - 1)
        assert_chunks(got, range(1, blocked_at), sent)
        for c in got:
            spool.ack(c.seq)
        await spool.flush()
        await asyncio.wait_for(spool.wait_writable(), 0.5)
    finally:
        if spool._lock_fd >= 0 and spool._fd < 0:  # a failed open() leaves the lock fd open
            os.close(spool._lock_fd)
            spool._lock_fd = -1
        await spool.close()


async def test_real_enospc_freed_by_acknowledging_the_backlog(small_fs):
    """The spool filled the disk by itself: acknowledging everything must free segments and unblock it."""
    root = small_fs / "spool"
    spool, _ = open_spool(root, segment_bytes=32 * 1024)
    try:
        sent: dict[int, bytes] = {}
        blocked_at = fill_until_blocked(spool, sent)
        got = await get_n(spool, blocked_at - 1)
        for c in got:
            spool.ack(c.seq)
        await spool.flush()
        try:
            await asyncio.wait_for(spool.wait_writable(), 0.5)
        except asyncio.TimeoutError:
            files = sorted(p.name for p in (root / "queue").iterdir())
            raise AssertionError(f"still blocked after acknowledging everything; files: {files}") from None
        assert spool.write_error is None and metric("slsfwd_spool_write_blocked") == 0
        got += await get_n(spool, 1)
        sent.update(append_n(spool, blocked_at + 1, 3, **CHUNK))
        got += await get_n(spool, 3)
        assert_chunks(got, range(1, blocked_at + 4), sent)
    finally:
        await spool.close()
