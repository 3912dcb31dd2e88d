"""The durable disk spool: the byte format (agent/spool/format.py) and DiskSpool (agent/spool/disk.py).

The spec is the package docstring of agent/spool. Faults (a full disk, torn writes, bit flips,
damaged ledgers, a crash) are injected at the os layer or applied to the real files.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import random
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from agent.spool import DiskSpool, SpoolError, disk, tuning, verify
from agent.spool import format as fmt
from agent.spool.queue import Chunk
from tests.support import REPO

BIG = 1 << 40  # a max_bytes that is never reached
HDR = fmt.SEGMENT_HEADER_SIZE


# -- helpers -------------------------------------------------------------------


def payload(i: int, lines: int = 2, width: int = 40) -> bytes:
    """Distinct, LF-terminated lines for chunk i (never containing the record magic)."""
    return b"".join(f"chunk {i:06d} line {j} ".ljust(width, "x").encode() + b"\n" for j in range(lines))


def peer_of(i: int) -> str:
    return f"10.0.{i % 7}.{i % 250}:{40000 + i}"


def ts_of(i: int) -> int:
    return 1_700_000_000 + i


def open_spool(directory: Path, **kw) -> tuple[DiskSpool, disk.RecoveryReport]:
    kw.setdefault("max_bytes", BIG)
    kw.setdefault("fsync_ms", 5)
    spool = DiskSpool(directory, **kw)
    report = spool.open()
    return spool, report


def append_n(spool: DiskSpool, first: int, count: int, **pkw) -> dict[int, bytes]:
    """Append chunks first..first+count-1 (chunk number == expected seq); return seq -> payload."""
    out = {}
    for i in range(first, first + count):
        data = payload(i, **pkw)
        spool.append(ts_of(i), peer_of(i), data)
        out[i] = data
    return out


async def get_n(spool: DiskSpool, n: int, timeout: float = 2.0) -> list[Chunk]:
    return [await asyncio.wait_for(spool.get(), timeout) for _ in range(n)]


async def nothing_more(spool: DiskSpool, wait: float = 0.03) -> bool:
    try:
        chunk = await asyncio.wait_for(spool.get(), wait)
    except asyncio.TimeoutError:
        return True
    raise AssertionError(f"unexpected chunk {chunk.seq}")


def assert_chunks(chunks: list[Chunk], seqs, payloads: dict[int, bytes] | None = None) -> None:
    assert [c.seq for c in chunks] == list(seqs)
    for c in chunks:
        assert c.received_at == ts_of(c.seq)
        assert c.peer == peer_of(c.seq)
        if payloads is not None:
            assert c.payload == payloads[c.seq]
        else:
            assert c.payload.startswith(f"chunk {c.seq:06d} ".encode())


def qdir(root: Path) -> Path:
    return root / tuning.QUEUE_DIR


def seg_files(root: Path) -> list[Path]:
    return sorted(qdir(root).glob("*.seg"))


def seqs_on_disk(root: Path) -> dict[Path, list[int]]:
    return {p: [r.seq for r in fmt.scan(p.read_bytes()).records] for p in seg_files(root)}


def ledger_value(root: Path) -> int | None:
    path = qdir(root) / "ledger"
    return fmt.decode_ledger_file(path.read_bytes(), str(path)).acked_seq if path.exists() else None


async def crash(spool: DiskSpool) -> None:
    """What kill -9 leaves behind: written bytes stay, no further sync, ledger write or deletion.

    An fsync already running in a thread is let finish (a crash right after it)."""
    spool.closed = True
    for handle in (spool._sync_handle, spool._retry_handle):
        if handle is not None:
            handle.cancel()
    if spool._sync_task is not None:
        await asyncio.gather(spool._sync_task, return_exceptions=True)
    os.close(spool._fd)
    os.close(spool._lock_fd)
    spool._fd = spool._lock_fd = -1
    spool._ledger.close()


def metric(name: str, **labels) -> float:
    value = REGISTRY.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


class FaultyDisk:
    """Makes os.write / os.writev / os.fdatasync fail with an errno for files under one directory.

    ``mode``: None (works), "fail" (every matching write raises), "partial" (the next matching
    write writes half of its bytes and returns, the one after raises; then "fail").
    ``only``: a predicate on (path, data) narrowing which writes fail.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, err: int = errno.ENOSPC) -> None:
        self.root = str(Path(root).resolve())
        self.err = err
        self.mode: str | None = None
        self.only = lambda path, data: True
        self.failures = 0
        self.partial_writes = 0
        self.sync_fail = False
        self._real_write = os.write
        self._real_fdatasync = os.fdatasync
        # disk.os is the os module itself: patch the attribute the spool calls.
        monkeypatch.setattr(disk.os, "write", self._write)
        monkeypatch.setattr(disk.os, "writev", self._writev)
        monkeypatch.setattr(disk.os, "fdatasync", self._fdatasync)

    def _path(self, fd: int) -> str | None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return path if path.startswith(self.root) else None

    def _write(self, fd, data):
        path = self._path(fd)
        if path is None or self.mode is None or not self.only(path, bytes(data)):
            return self._real_write(fd, data)
        if self.mode == "partial":
            self.mode = "fail"
            self.partial_writes += 1
            half = max(1, len(data) // 2)
            return self._real_write(fd, bytes(data[:half]))
        self.failures += 1
        raise OSError(self.err, os.strerror(self.err))

    def _writev(self, fd, buffers):
        # One write of the joined buffers: the same faults, partial writes included.
        return self._write(fd, b"".join(buffers))

    def _fdatasync(self, fd):
        if self.sync_fail and self._path(fd) is not None:
            self.failures += 1
            raise OSError(self.err, os.strerror(self.err))
        return self._real_fdatasync(fd)


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "WRITE_RETRY_S", 0.01)


async def until(cond, timeout: float = 2.0, step: float = 0.005) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


# ==============================================================================
# format.py
# ==============================================================================


def rec(seq: int, data: bytes | None = None, peer: str = "192.0.2.7:514", received_at: int = 1_700_000_123) -> bytes:
    data = data if data is not None else f"message number {seq}\nsecond line of {seq}\n".encode()
    return fmt.encode_record(seq, received_at, data.count(b"\n"), peer.encode(), data)


def segment(*records: bytes) -> bytes:
    return fmt.segment_header() + b"".join(records)


def test_record_layout_matches_the_spec():
    body_payload = b"a\nbc\n"
    raw = fmt.encode_record(7, 1234, 2, b"peer", body_payload)
    magic, length, crc = struct.unpack_from("<III", raw)
    assert magic == 0x534C5352 and raw[:4] == b"RSLS"  # "SLSR" as a little-endian u32
    body = raw[12:]
    assert length == len(body) == 8 + 4 + 4 + 2 + 4 + len(body_payload)
    assert crc == zlib.crc32(body)
    assert struct.unpack_from("<QIIH", body) == (7, 1234, 2, 4)
    assert body[18:22] == b"peer" and body[22:] == body_payload
    head = b"SLSFWDSG" + struct.pack("<HH", 2, 0)
    assert fmt.segment_header() == head + struct.pack("<I", zlib.crc32(head))


def test_encode_scan_round_trip_single_record():
    raw = rec(42, b"hello\n", peer="[2001:db8::1]:514", received_at=99)
    result = fmt.scan(segment(raw))
    assert result.corrupt_records == result.corrupt_bytes == result.torn_bytes == 0
    (r,) = result.records
    assert (r.seq, r.received_at, r.lines, r.peer, r.payload) == (42, 99, 1, "[2001:db8::1]:514", b"hello\n")
    assert (r.offset, r.end) == (HDR, HDR + len(raw))
    assert result.valid_end == HDR + len(raw)


def test_received_at_is_stored_as_u32():
    (r,) = fmt.scan(segment(fmt.encode_record(1, (1 << 32) + 5, 0, b"", b""))).records
    assert r.received_at == 5


def test_scan_of_concatenated_records_keeps_order_and_offsets():
    raws = [rec(i) for i in range(1, 21)]
    data = segment(*raws)
    result = fmt.scan(data)
    assert [r.seq for r in result.records] == list(range(1, 21))
    pos = HDR
    for r, raw in zip(result.records, raws):
        assert (r.offset, r.end) == (pos, pos + len(raw))
        assert r.payload == f"message number {r.seq}\nsecond line of {r.seq}\n".encode()
        assert r.lines == 2
        pos += len(raw)
    assert result.valid_end == len(data)
    assert list(fmt.iter_records(data)) == result.records
    # scan from an offset (how the reader continues inside a segment)
    assert [r.seq for r in fmt.scan(data[result.records[5].offset:], 0).records] == list(range(6, 21))


def test_scan_of_empty_segment():
    result = fmt.scan(fmt.segment_header())
    assert result.records == [] and result.valid_end == HDR and result.torn_bytes == 0


def test_torn_tail_every_truncation_point():
    r1, r2, r3 = rec(1), rec(2), rec(3)
    good_end = HDR + len(r1) + len(r2)
    for cut in range(1, len(r3)):
        data = segment(r1, r2, r3[:cut])
        result = fmt.scan(data)
        assert [r.seq for r in result.records] == [1, 2], cut
        assert result.torn_bytes == cut, cut
        assert result.corrupt_records == 0 and result.corrupt_bytes == 0, cut
        assert result.valid_end == good_end, cut
    assert fmt.scan(segment(r1, r2, r3)).torn_bytes == 0


def test_torn_tail_containing_a_magic_in_the_payload_is_still_torn():
    r3 = rec(3, b"xx" + fmt.RECORD_MAGIC_BYTES + b"yy\n")
    for cut in range(1, len(r3)):
        result = fmt.scan(segment(rec(1), rec(2), r3[:cut]))
        assert [r.seq for r in result.records] == [1, 2], cut
        assert result.torn_bytes == cut and result.corrupt_records == 0, cut


def test_bit_flip_anywhere_in_the_middle_record_is_skipped_and_resynced():
    r1, r2, r3, r4 = rec(1), rec(2), rec(3), rec(4)
    data = bytearray(segment(r1, r2, r3, r4))
    start = HDR + len(r1)
    for pos in range(start, start + len(r2)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            result = fmt.scan(bytes(damaged))
            where = (pos - start, bit)
            assert [r.seq for r in result.records] == [1, 3, 4], where
            assert result.corrupt_records == 1, where
            assert result.corrupt_bytes == len(r2), where
            assert result.torn_bytes == 0, where
            assert result.valid_end == len(data), where


def test_bit_flip_in_the_body_of_the_middle_record():
    r1, r2, r3 = rec(1), rec(2, b"payload of the middle record\n"), rec(3)
    data = bytearray(segment(r1, r2, r3))
    data[HDR + len(r1) + 12 + 25] ^= 0x10  # inside the body (payload part)
    result = fmt.scan(bytes(data))
    assert [r.seq for r in result.records] == [1, 3]
    assert (result.corrupt_records, result.corrupt_bytes, result.torn_bytes) == (1, len(r2), 0)
    assert result.records[1].payload == "message number 3\nsecond line of 3\n".encode()


@pytest.mark.parametrize("length", [0, 5, fmt.BODY_HEADER_SIZE - 1, 60, 10_000, 0xFFFFFFF0, fmt.MAX_BODY + 1])
def test_corrupted_length_field_resyncs_on_the_next_magic(length):
    r1, r2, r3 = rec(1), rec(2), rec(3)
    data = bytearray(segment(r1, r2, r3))
    struct.pack_into("<I", data, HDR + len(r1) + 4, length)
    result = fmt.scan(bytes(data))
    assert [r.seq for r in result.records] == [1, 3]
    assert result.corrupt_records == 1 and result.corrupt_bytes == len(r2)
    assert result.torn_bytes == 0


def test_garbage_between_records_is_counted():
    r1, r3 = rec(1), rec(3)
    garbage = b"\x00" * 37 + b"SLSR" + b"\xff" * 9
    result = fmt.scan(segment(r1) + garbage + r3)
    assert [r.seq for r in result.records] == [1, 3]
    assert result.corrupt_records == 1 and result.corrupt_bytes == len(garbage)


def test_damaged_tail_with_nothing_intact_after_is_torn():
    r1, r2 = rec(1), bytearray(rec(2))
    r2[20] ^= 1
    result = fmt.scan(segment(r1, bytes(r2)))
    assert [r.seq for r in result.records] == [1]
    assert result.torn_bytes == len(r2) and result.corrupt_records == 0


@pytest.mark.parametrize("acked", [0, 1, 2, 4711, 2**63, 2**64 - 1])
def test_ledger_round_trip(acked):
    data = fmt.encode_ledger(acked)
    assert len(data) == fmt.LEDGER_SIZE == 22
    assert data[:8] == b"SLSFWDLG" and struct.unpack_from("<H", data, 8) == (1,)
    assert struct.unpack_from("<I", data, 18) == (zlib.crc32(data[:18]),)
    assert fmt.decode_ledger(data, "L") == acked


def test_ledger_damage_is_a_format_error():
    good = fmt.encode_ledger(12345)
    with pytest.raises(fmt.FormatError, match="checksum"):
        fmt.decode_ledger(good[:12] + bytes([good[12] ^ 1]) + good[13:], "L")
    with pytest.raises(fmt.FormatError, match="bytes"):
        fmt.decode_ledger(good[:-1], "L")
    with pytest.raises(fmt.FormatError, match="bytes"):
        fmt.decode_ledger(good + b"\0", "L")
    with pytest.raises(fmt.FormatError, match="checksum"):  # a damaged magic is damage first
        fmt.decode_ledger(b"X" + good[1:], "L")
    forged = b"X" + good[1:-4]
    with pytest.raises(fmt.FormatError, match="not an slsfwd"):
        fmt.decode_ledger(forged + struct.pack("<I", zlib.crc32(forged)), "L")


def test_ledger_of_another_version_is_refused_naming_the_version():
    head = struct.pack("<8sHQ", b"SLSFWDLG", 2, 99)
    data = head + struct.pack("<I", zlib.crc32(head))
    with pytest.raises(fmt.FormatError, match=r"/spool/queue/ledger.*version 2.*version 1"):
        fmt.decode_ledger(data, "/spool/queue/ledger")


_peers = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)
_payloads = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=5).map(
    lambda lines: b"".join(line + b"\n" for line in lines)
)
_records = st.lists(
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), _peers, _payloads), max_size=20
)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records)
def test_hypothesis_records_round_trip(items):
    data = fmt.segment_header() + b"".join(
        fmt.encode_record(seq, ts, p.count(b"\n"), peer.encode(), p) for seq, ts, peer, p in items
    )
    result = fmt.scan(data)
    assert [(r.seq, r.received_at, r.lines, r.peer, r.payload) for r in result.records] == [
        (seq, ts, p.count(b"\n"), peer, p) for seq, ts, peer, p in items
    ]
    assert (result.corrupt_records, result.corrupt_bytes, result.torn_bytes) == (0, 0, 0)
    assert result.valid_end == len(data)


@settings(max_examples=75, deadline=None)
@given(_records.filter(bool), st.data())
def test_hypothesis_any_truncation_keeps_the_complete_records(items, data):
    raws = [fmt.encode_record(seq, ts, p.count(b"\n"), peer.encode(), p) for seq, ts, peer, p in items]
    whole = fmt.segment_header() + b"".join(raws)
    cut = data.draw(st.integers(HDR, len(whole)))
    result = fmt.scan(whole[:cut])
    ends = []
    pos = HDR
    for raw in raws:
        pos += len(raw)
        ends.append(pos)
    complete = sum(1 for e in ends if e <= cut)
    assert [r.seq for r in result.records] == [seq for seq, *_ in items[:complete]]
    assert result.valid_end == (ends[complete - 1] if complete else HDR)
    assert result.torn_bytes == cut - result.valid_end
    assert result.corrupt_records == 0


# ==============================================================================
# DiskSpool
# ==============================================================================


async def test_append_get_ack_order_and_seq(tmp_path):
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 0 and report.segments == 0
    sent = append_n(spool, 1, 5)
    assert spool.backlog_chunks == 5
    chunks = await get_n(spool, 5)
    assert_chunks(chunks, range(1, 6), sent)
    assert await nothing_more(spool)
    for c in chunks:
        spool.ack(c.seq)
    assert spool.backlog_chunks == 0 and spool.backlog_bytes == 0 and spool.unacked_lines() == 0
    # a get() waiting for data wakes up on append
    waiter = asyncio.ensure_future(spool.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    sent.update(append_n(spool, 6, 1))
    chunk = await asyncio.wait_for(waiter, 1)
    assert_chunks([chunk], [6], sent)
    await spool.close()


async def test_ack_twice_and_unknown_acks_are_ignored(tmp_path):
    spool, _ = open_spool(tmp_path)
    append_n(spool, 1, 3)
    c1, c2 = await get_n(spool, 2)
    before = spool.backlog_bytes
    spool.ack(c1.seq)
    spool.ack(c1.seq)
    spool.ack(3)  # not handed out yet
    spool.ack(999)
    assert spool.backlog_bytes == before - len(c1.payload)
    assert spool.backlog_chunks == 2
    await spool.close()


async def test_order_across_segment_rotation_and_files_on_disk(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=4096)
    sent = append_n(spool, 1, 100, lines=3)
    got = await get_n(spool, 50)
    sent.update(append_n(spool, 101, 100, lines=3))
    got += await get_n(spool, 150)
    assert_chunks(got, range(1, 201), sent)
    assert await nothing_more(spool)
    await spool.flush()
    on_disk = seqs_on_disk(tmp_path)
    assert len(on_disk) > 5
    flat = [s for seqs in on_disk.values() for s in seqs]
    assert flat == list(range(1, 201))
    for path, seqs in on_disk.items():
        assert fmt.read_segment_header(path.read_bytes()) == (fmt.HEADER_INTACT, fmt.SEGMENT_VERSION)
        assert len(path.stem) == 20 and seqs
        # rotation happens once a segment reaches segment_bytes: at most one record beyond it
        assert path.stat().st_size < 4096 + len(fmt.encode_record(1, 0, 3, peer_of(1).encode(), sent[1])) + 64
    await spool.close()


def _append_until_newest_segment_has_one_record(spool: DiskSpool, root: Path, first: int = 1) -> dict[int, bytes]:
    sent: dict[int, bytes] = {}
    i = first
    while True:
        sent.update(append_n(spool, i, 1))
        files = seg_files(root)
        if len(files) >= 2 and len(seqs_on_disk(root)[files[-1]]) == 1:
            return sent
        i += 1
        assert i < first + 200


async def test_segments_are_named_by_their_first_records_seq(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    append_n(spool, 1, 40)
    await spool.close()
    on_disk = seqs_on_disk(tmp_path)
    assert len(on_disk) > 3
    assert [int(p.stem) for p in on_disk] == [seqs[0] for seqs in on_disk.values()]


async def get_available(spool: DiskSpool, wait: float = 0.05, limit: int = 10_000) -> list[Chunk]:
    out: list[Chunk] = []
    while len(out) < limit:
        try:
            out.append(await asyncio.wait_for(spool.get(), wait))
        except asyncio.TimeoutError:
            break
    return out


# Once, a restart with exactly one record in the newest segment reused that file (segments were
# named one past their first seq); the two tests below guard it.


async def test_restart_when_the_newest_segment_holds_one_record_loses_nothing(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    sent = _append_until_newest_segment_has_one_record(spool, tmp_path)
    last = max(sent)
    await spool.close()

    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert report.replay_records == last
    sent.update(append_n(spool, last + 1, 5))
    delivered = await get_available(spool)
    for c in delivered:
        spool.ack(c.seq)
    await spool.flush()
    sent.update(append_n(spool, last + 6, 3))  # acknowledged nothing of these
    await spool.close()
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    replayed = await get_available(spool)
    await spool.close()
    assert [c.seq for c in delivered] == list(range(1, last + 6)), "every chunk once, in order"
    assert [c.seq for c in replayed] == [last + 6, last + 7, last + 8], "unacknowledged chunks replay"


async def test_restart_never_appends_to_an_old_segment(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    _append_until_newest_segment_has_one_record(spool, tmp_path)
    await spool.close()
    before = {p.name: p.read_bytes() for p in seg_files(tmp_path)}
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    append_n(spool, 100, 2)
    try:
        for name, data in before.items():
            assert (qdir(tmp_path) / name).read_bytes() == data, f"{name} was written to after the restart"
        assert len(set(s.path for s in spool._segments)) == len(spool._segments)
    finally:
        await spool.close()


async def test_restart_replays_exactly_the_unacknowledged_chunks(tmp_path):
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 10, lines=3)
    for c in await get_n(spool, 4):
        spool.ack(c.seq)
    await get_n(spool, 2)  # handed out, not acknowledged
    await spool.flush()
    assert ledger_value(tmp_path) == 5
    await spool.close()

    spool, report = open_spool(tmp_path)
    assert report.replay_records == 6 and report.replay_lines == 18
    assert report.corrupt_records == report.torn_bytes == 0 and report.ledger_problem == ""
    assert spool.backlog_chunks == 6
    assert spool.backlog_bytes == sum(len(sent[i]) for i in range(5, 11))
    assert spool.unacked_lines() == 18
    chunks = await get_n(spool, 6)
    assert_chunks(chunks, range(5, 11), sent)
    assert await nothing_more(spool)
    sent.update(append_n(spool, 11, 1))
    assert_chunks(await get_n(spool, 1), [11], sent)
    await spool.close()


async def test_restart_after_everything_acknowledged_continues_the_seq(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=2048)
    append_n(spool, 1, 30)
    for c in await get_n(spool, 30):
        spool.ack(c.seq)
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=2048)
    assert report.replay_records == 0 and spool.backlog_chunks == 0
    assert await nothing_more(spool)
    sent = append_n(spool, 31, 2)
    assert_chunks(await get_n(spool, 2), [31, 32], sent)
    await spool.close()
    assert [int(p.stem) for p in seg_files(tmp_path)] == [31]


async def test_out_of_order_acks_persist_only_the_contiguous_prefix(tmp_path):
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 6)
    await get_n(spool, 6)
    for seq in (1, 3, 4, 6):
        spool.ack(seq)
    assert spool.backlog_chunks == 2  # 2 and 5
    assert spool.backlog_bytes == len(sent[2]) + len(sent[5])
    await spool.flush()
    assert ledger_value(tmp_path) == 2
    await spool.close()

    spool, report = open_spool(tmp_path)
    assert report.replay_records == 5  # 2..6: 3, 4 and 6 again (at-least-once)
    assert spool.backlog_chunks == 5
    chunks = await get_n(spool, 5)
    assert_chunks(chunks, range(2, 7), sent)
    spool.ack(2)
    await spool.flush()
    assert ledger_value(tmp_path) == 3
    await spool.close()


async def test_acked_segments_are_deleted_after_the_ledger_is_persisted(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=4096, fsync_ms=10_000)
    append_n(spool, 1, 120)
    files = seqs_on_disk(tmp_path)
    assert len(files) >= 4
    chunks = await get_n(spool, 120)
    acked = 60
    for c in chunks[:acked - 1]:
        spool.ack(c.seq)
    # acknowledged but the ledger is not persisted yet (fsync_ms is long): nothing deleted
    await asyncio.sleep(0.02)
    assert set(seg_files(tmp_path)) == set(files)
    await spool.flush()
    assert ledger_value(tmp_path) == acked
    remaining = seqs_on_disk(tmp_path)
    for path, seqs in files.items():
        if seqs[-1] < acked:
            assert path not in remaining, f"{path.name} is fully acknowledged"
        else:
            assert path in remaining, f"{path.name} still holds unacknowledged records"
    assert min(s for seqs in remaining.values() for s in seqs) <= acked
    for c in chunks[acked - 1:]:
        spool.ack(c.seq)
    await spool.flush()
    # everything acknowledged: only the active segment stays
    assert len(seg_files(tmp_path)) == 1
    assert ledger_value(tmp_path) == 121
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=4096)
    assert report.replay_records == 0 and report.deleted_segments == 1
    await spool.close()


async def test_unflushed_acks_replay_after_a_crash_but_nothing_is_lost(tmp_path):
    spool, _ = open_spool(tmp_path, fsync_ms=60_000)
    sent = append_n(spool, 1, 20)
    for c in await get_n(spool, 8):
        spool.ack(c.seq)
    await spool.flush()  # ledger: 9
    for c in await get_n(spool, 7):
        spool.ack(c.seq)  # 9..15 acknowledged, not persisted
    await crash(spool)
    assert ledger_value(tmp_path) == 9

    spool, report = open_spool(tmp_path)
    assert report.replay_records == 12
    assert_chunks(await get_n(spool, 12), range(9, 21), sent)
    assert await nothing_more(spool)
    await spool.close()


async def test_crash_without_any_flush_replays_everything_written(tmp_path):
    spool, _ = open_spool(tmp_path, fsync_ms=60_000, segment_bytes=2048)
    sent = append_n(spool, 1, 40)
    for c in await get_n(spool, 40):
        spool.ack(c.seq)
    await crash(spool)
    spool, report = open_spool(tmp_path, segment_bytes=2048)
    assert report.replay_records == 40
    assert_chunks(await get_n(spool, 40), range(1, 41), sent)
    await spool.close()


KILL_SCRIPT = r"""
import asyncio, sys
from agent.spool import DiskSpool

async def main():
    spool = DiskSpool(sys.argv[1], max_bytes=1 << 40, fsync_ms=600_000, segment_bytes=1024)
    spool.open()
    for i in range(1, 51):
        spool.append(1000 + i, "p%d" % i, b"kill line %d\n" % i)
    for _ in range(20):
        spool.ack((await spool.get()).seq)
    await spool.flush()
    for _ in range(10):
        spool.ack((await spool.get()).seq)   # acknowledged, never synced
    await asyncio.sleep(0)  # the loop turn in which acknowledgements reach the ledger file
    spool.append(2000, "late", b"written, never synced\n")
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_kill_9_loses_nothing_written(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline()
        assert line == b"ready\n", proc.stderr.read() if proc.poll() is not None else line
    finally:
        proc.kill()
        proc.wait()
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    # the acknowledgements written but never synced survive too: they are not shipped again
    assert report.replay_records == 21 and report.torn_bytes == 0
    chunks = await get_n(spool, 21)
    assert [c.seq for c in chunks] == list(range(31, 52))
    assert [c.payload for c in chunks[:-1]] == [b"kill line %d\n" % i for i in range(31, 51)]
    assert (chunks[-1].received_at, chunks[-1].peer, chunks[-1].payload) == (2000, "late", b"written, never synced\n")
    await spool.close()


async def test_second_spool_on_the_same_directory_is_refused(tmp_path):
    spool, _ = open_spool(tmp_path)
    append_n(spool, 1, 1)
    other = DiskSpool(tmp_path, max_bytes=BIG)
    with pytest.raises(SpoolError, match="in use"):
        other.open()
    # the refused one touched nothing: the first still works
    append_n(spool, 2, 1)
    assert [c.seq for c in await get_n(spool, 2)] == [1, 2]
    await spool.close()
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 2
    await spool.close()


def newer_header(version: int) -> bytes:
    """What a later slsfwd would write: every version from 2 on keeps magic, version and the
    checksum of both in its first 16 bytes."""
    head = struct.pack("<8sHH", b"SLSFWDSG", version, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def _set_segment_header(path: Path, header: bytes) -> None:
    data = path.read_bytes()
    path.write_bytes(header + data[len(header):])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(qdir(root).iterdir())}


async def test_segment_of_another_format_version_is_refused_and_nothing_deleted(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    append_n(spool, 1, 30)
    await spool.close()
    files = seg_files(tmp_path)
    assert len(files) >= 3
    files[0].write_bytes(fmt.segment_header() + b"damage")  # would be deleted (nothing intact), but not now
    _set_segment_header(files[-2], newer_header(3))
    before = _snapshot(tmp_path)
    with pytest.raises(SpoolError, match=rf"{files[-2].name}: spool format version 3, but this slsfwd reads "
                                         r"version 2; ship it with a matching slsfwd or move the spool directory away"):
        DiskSpool(tmp_path, max_bytes=BIG).open()
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "quarantine").exists()


async def test_ledger_of_another_format_version_is_refused(tmp_path):
    spool, _ = open_spool(tmp_path)
    append_n(spool, 1, 3)
    spool.ack((await spool.get()).seq)
    await spool.close()
    path = qdir(tmp_path) / "ledger"
    head = struct.pack("<8sHQ", b"SLSFWDLG", 2, 2)
    path.write_bytes(head + struct.pack("<I", zlib.crc32(head)))
    before = _snapshot(tmp_path)
    with pytest.raises(SpoolError, match="version 2"):
        DiskSpool(tmp_path, max_bytes=BIG).open()
    assert _snapshot(tmp_path) == before


async def test_refused_open_releases_the_lock(tmp_path):
    spool, _ = open_spool(tmp_path)
    append_n(spool, 1, 3)
    await spool.close()
    (path,) = seg_files(tmp_path)
    _set_segment_header(path, newer_header(7))
    refused = DiskSpool(tmp_path, max_bytes=BIG)
    with pytest.raises(SpoolError, match="version 7"):
        refused.open()
    _set_segment_header(path, fmt.segment_header())
    spool, report = open_spool(tmp_path)  # raises "in use" while the lock leaks
    assert report.replay_records == 3
    await spool.close()


def _flip(data: bytes, at: int, bit: int = 0x04) -> bytes:
    return data[:at] + bytes([data[at] ^ bit]) + data[at + 1:]


SLOT1 = fmt.LEDGER_SLOT_OFFSETS[1]


@pytest.mark.parametrize("damage", ["crc in both slots", "crc of a one-slot ledger", "truncated", "garbage", "empty"])
async def test_damaged_ledger_replays_everything(tmp_path, damage):
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 8)
    for c in await get_n(spool, 5):
        spool.ack(c.seq)
    await spool.close()
    path = qdir(tmp_path) / "ledger"
    good = path.read_bytes()
    assert fmt.decode_ledger_file(good, "").acked_seq == 6
    damaged = {
        "crc in both slots": _flip(_flip(good, 10), SLOT1 + 10),
        "crc of a one-slot ledger": _flip(fmt.encode_ledger(6), 10),
        "truncated": good[:15],
        "garbage": os.urandom(len(good)).replace(b"SLSFWDLG", b"xxxxxxxx"),
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    spool, report = open_spool(tmp_path)
    assert report.ledger_problem
    assert report.replay_records == 8
    assert_chunks(await get_n(spool, 8), range(1, 9), sent)
    assert await nothing_more(spool)
    await spool.close()


async def test_bit_flip_in_the_ledger_version_field_is_damage_not_another_version(tmp_path):
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 4)
    for c in await get_n(spool, 2):
        spool.ack(c.seq)
    await spool.close()
    path = qdir(tmp_path) / "ledger"
    data = _flip(_flip(path.read_bytes(), 8, 0x02), SLOT1 + 8, 0x02)  # version 1 -> 3, CRC now wrong
    path.write_bytes(data)
    spool, report = open_spool(tmp_path)
    assert report.ledger_problem and report.replay_records == 4
    assert_chunks(await get_n(spool, 4), range(1, 5), sent)
    await spool.close()


async def _spool_with_damaged_files(tmp_path: Path):
    """10 chunks in one segment + 10 in the next; record 4 bit-flipped, the last record torn."""
    spool, _ = open_spool(tmp_path, segment_bytes=900)
    sent = append_n(spool, 1, 20)
    await spool.close()
    files = seqs_on_disk(tmp_path)
    assert len(files) >= 3
    first, last = seg_files(tmp_path)[0], seg_files(tmp_path)[-1]
    records = fmt.scan(first.read_bytes()).records
    assert len(records) >= 4
    victim = records[3]  # a middle record of the first segment
    data = bytearray(first.read_bytes())
    data[victim.offset + 12 + 20] ^= 0x01
    first.write_bytes(bytes(data))
    last_records = fmt.scan(last.read_bytes()).records
    torn = last_records[-1]
    keep = torn.offset + (torn.end - torn.offset) // 2
    os.truncate(last, keep)
    lost = {victim.seq, torn.seq}
    return sent, lost, victim.end - victim.offset, keep - torn.offset


async def test_torn_write_and_bit_flip_in_real_segment_files(tmp_path):
    sent, lost, corrupt_size, torn_size = await _spool_with_damaged_files(tmp_path)
    spool, report = open_spool(tmp_path, segment_bytes=900)
    assert report.corrupt_records == 1 and report.corrupt_bytes == corrupt_size
    assert report.torn_bytes == torn_size
    assert report.replay_records == 20 - 2
    expected = [s for s in range(1, 21) if s not in lost]
    chunks = await get_n(spool, len(expected))
    assert_chunks(chunks, expected, sent)
    assert await nothing_more(spool)
    assert spool.backlog_chunks == len(expected)
    assert spool.backlog_bytes == sum(len(sent[s]) for s in expected)
    # seq 20 was torn: new data goes on from the last intact record, readable in order
    new = append_n(spool, 20, 2)
    assert_chunks(await get_n(spool, 2), [20, 21], new)
    for c in chunks:
        spool.ack(c.seq)
    await spool.close()


async def test_recovery_damage_is_counted_once(tmp_path):
    _, lost, corrupt_size, _ = await _spool_with_damaged_files(tmp_path)
    before = metric("slsfwd_spool_corrupt_records_total")
    before_bytes = metric("slsfwd_spool_corrupt_bytes_total", reason="crc")
    spool, report = open_spool(tmp_path, segment_bytes=900)
    await get_n(spool, 18)
    assert spool.recovery.corrupt_records == 1
    assert spool.recovery.corrupt_bytes == corrupt_size
    assert metric("slsfwd_spool_corrupt_records_total") - before == 1
    assert metric("slsfwd_spool_corrupt_bytes_total", reason="crc") - before_bytes == corrupt_size
    await spool.close()


@pytest.mark.parametrize("read_bytes", [40, 333, 1 << 20])
async def test_damage_found_while_reading_back_is_skipped_and_counted_once(tmp_path, monkeypatch, read_bytes):
    """A reader behind the writer reads records back a little at a time: a bit flip in
    a record it has not read yet costs that record only, whatever the read size."""
    monkeypatch.setattr(tuning, "READ_AHEAD_BYTES", 0)  # every record is read back from disk
    monkeypatch.setattr(tuning, "DISK_READ_BYTES", read_bytes)
    before = metric("slsfwd_spool_corrupt_records_total")
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20)
    sent = append_n(spool, 1, 30, width=60)
    segment = seg_files(tmp_path)[0]
    data = bytearray(segment.read_bytes())
    victim = fmt.scan(bytes(data)).records[11]  # seq 12
    data[victim.offset + fmt.RECORD_HEADER_SIZE + 20] ^= 0x40
    segment.write_bytes(bytes(data))
    expected = [s for s in range(1, 31) if s != 12]
    assert_chunks(await get_n(spool, 29), expected, sent)
    assert await nothing_more(spool)
    assert metric("slsfwd_spool_corrupt_records_total") - before == 1
    await spool.close()


async def test_segment_shorter_than_a_header_is_removed(tmp_path):
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 3)
    await spool.close()
    stray = qdir(tmp_path) / f"{4:020d}.seg"
    stray.write_bytes(b"SLSFW")
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 3
    assert_chunks(await get_n(spool, 3), [1, 2, 3], sent)
    await spool.close()


async def test_verify_reports_backlog_and_damage(tmp_path):
    sent, lost, corrupt_size, torn_size = await _spool_with_damaged_files(tmp_path)
    report = verify(tmp_path)
    assert report.replay_records == 18
    assert report.corrupt_records == 1 and report.corrupt_bytes == corrupt_size
    assert report.torn_bytes == torn_size
    assert report.replay_bytes == sum(len(sent[s]) for s in range(1, 21) if s not in lost)
    assert report.damaged


# -- bounded: backpressure and drop_oldest -------------------------------------


async def test_backpressure_stops_writable_until_acks_free_room(tmp_path):
    size = len(payload(1, lines=5))
    spool, _ = open_spool(tmp_path, max_bytes=3 * size + 1, full_policy="backpressure")
    append_n(spool, 1, 3, lines=5)
    assert spool.writable
    await asyncio.wait_for(spool.wait_writable(), 0.5)
    append_n(spool, 4, 1, lines=5)  # 4 * size >= max_bytes
    assert not spool.writable
    assert spool.backlog_bytes == 4 * size
    waiter = asyncio.ensure_future(spool.wait_writable())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    # appending still never fails nor drops while full
    append_n(spool, 5, 1, lines=5)
    chunks = await get_n(spool, 5)
    spool.ack(chunks[0].seq)  # 4 * size: still full
    await asyncio.sleep(0.01)
    assert not waiter.done() and not spool.writable
    spool.ack(chunks[2].seq)  # out of order frees room too: 3 * size
    await asyncio.wait_for(waiter, 0.5)
    assert spool.writable
    assert spool.dropped_lines == 0 and spool.backlog_chunks == 3
    await spool.close()


async def test_backpressure_after_restart_with_a_full_backlog(tmp_path):
    size = len(payload(1))
    spool, _ = open_spool(tmp_path, max_bytes=5 * size)
    append_n(spool, 1, 6)
    assert not spool.writable
    await spool.close()
    spool, _ = open_spool(tmp_path, max_bytes=5 * size)
    assert spool.backlog_bytes == 6 * size
    assert not spool.writable
    waiter = asyncio.ensure_future(spool.wait_writable())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    c1, c2 = await get_n(spool, 2)
    spool.ack(c1.seq)
    spool.ack(c2.seq)
    await asyncio.wait_for(waiter, 0.5)
    await spool.close()


async def test_drop_oldest_drops_whole_oldest_segments(tmp_path):
    size = len(payload(1, lines=2, width=100))
    spool, _ = open_spool(tmp_path, segment_bytes=1024, max_bytes=4000, full_policy="drop_oldest")
    before = metric("slsfwd_spool_dropped_lines_total", reason="spool_full")
    sent = append_n(spool, 1, 3, lines=2, width=100)
    early = await get_n(spool, 3)  # handed out before they are dropped
    sent.update(append_n(spool, 4, 57, lines=2, width=100))
    assert spool.writable, "drop_oldest never blocks"
    assert spool.backlog_bytes < 4000
    assert spool.dropped_lines > 0
    assert metric("slsfwd_spool_dropped_lines_total", reason="spool_full") - before == spool.dropped_lines
    # what is left: a contiguous tail ending at the last chunk, in order, intact
    remaining = spool.backlog_chunks
    assert spool.backlog_bytes == remaining * size
    assert spool.unacked_lines() == remaining * 2
    assert spool.dropped_lines == (60 - remaining) * 2
    backlog = spool.backlog_bytes
    for c in early:
        spool.ack(c.seq)  # dropped meanwhile: ignored
    assert spool.backlog_bytes == backlog and spool.backlog_chunks == remaining
    chunks = await get_n(spool, remaining)
    assert_chunks(chunks, range(61 - remaining, 61), sent)
    assert await nothing_more(spool)
    # the files agree: the dropped segments are gone and the ledger skips them
    on_disk = [s for seqs in seqs_on_disk(tmp_path).values() for s in seqs]
    assert on_disk == list(range(61 - remaining, 61))
    assert ledger_value(tmp_path) == 61 - remaining
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=1024, max_bytes=4000, full_policy="drop_oldest")
    assert report.replay_records == remaining
    assert_chunks(await get_n(spool, remaining), range(61 - remaining, 61), sent)
    await spool.close()


async def test_drop_oldest_while_reading_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "READ_AHEAD_BYTES", 500)
    # fsync_ms long: no group commit thread runs concurrently with the drops here (that race is its own test)
    spool, _ = open_spool(tmp_path, segment_bytes=1024, max_bytes=5000, full_policy="drop_oldest", fsync_ms=60_000)
    sent: dict[int, bytes] = {}
    seen: list[int] = []
    n = 0
    for _ in range(30):
        sent.update(append_n(spool, n + 1, 7, width=60))
        n += 7
        for c in await get_n(spool, 2):
            seen.append(c.seq)
            assert c.payload == sent[c.seq]
            spool.ack(c.seq)
        await asyncio.sleep(0)
    rest = spool.backlog_chunks  # everything handed out so far is acknowledged: this is what is unread
    for c in await get_n(spool, rest):
        seen.append(c.seq)
        assert c.payload == sent[c.seq]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == n
    assert await nothing_more(spool)
    assert spool.dropped_lines == 2 * (n - len(seen))
    await spool.close()


# -- durability knobs and bookkeeping -------------------------------------------


async def test_fsync_ms_zero_syncs_every_append(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(disk.os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    spool, _ = open_spool(tmp_path, fsync_ms=0, segment_bytes=2048)
    calls.clear()
    sent = append_n(spool, 1, 30)
    assert len(calls) >= 30
    chunks = await get_n(spool, 30)
    assert_chunks(chunks, range(1, 31), sent)
    for c in chunks[:10]:
        spool.ack(c.seq)
    await until(lambda: ledger_value(tmp_path) == 11)  # acks are persisted promptly without flush()
    await spool.close()
    spool, report = open_spool(tmp_path, fsync_ms=0)
    assert report.replay_records == 20
    await spool.close()


async def test_rotation_leaves_every_sync_to_the_group_commit_thread(tmp_path, monkeypatch):
    """Rotating segments must not block the event loop on fdatasync: the finished
    segments, the new ones and the directory are synced by the group commit's thread
    (when more than INLINE_SYNC_BYTES wait to be synced)."""
    monkeypatch.setattr(tuning, "INLINE_SYNC_BYTES", -1)  # -1: every sync in the thread
    loop_thread = threading.get_ident()
    on_loop = []
    synced = set()
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd):
        if threading.get_ident() == loop_thread:
            on_loop.append(fd)
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fdatasync(fd)

    def fsync(fd):
        if threading.get_ident() == loop_thread:
            on_loop.append(fd)
        return real_fsync(fd)

    spool, _ = open_spool(tmp_path, fsync_ms=1000, segment_bytes=2048)
    monkeypatch.setattr(disk.os, "fdatasync", fdatasync)
    monkeypatch.setattr(disk.os, "fsync", fsync)
    woken = []
    sent = append_n(spool, 1, 60)
    spool.when_durable(60, lambda: woken.append(60))
    segments = sorted(str(p) for p in (tmp_path / tuning.QUEUE_DIR).glob("*.seg"))
    assert len(segments) >= 3
    assert on_loop == [] and woken == []
    spool.request_sync()
    await until(lambda: woken == [60])
    assert set(segments) <= synced  # finished segments too, not only the active one
    assert on_loop == []
    assert_chunks(await get_n(spool, 60), range(1, 61), sent)
    await spool.close()


async def test_a_small_group_commit_syncs_on_the_loop_and_a_large_one_in_the_thread(tmp_path, monkeypatch):
    """Below INLINE_SYNC_BYTES a sync costs less on the loop than handed to the thread."""
    loop_thread = threading.get_ident()
    where = []
    real = os.fdatasync
    monkeypatch.setattr(disk.os, "fdatasync", lambda fd: (where.append(threading.get_ident() == loop_thread), real(fd))[1])
    spool, _ = open_spool(tmp_path, fsync_ms=20)
    append_n(spool, 1, 1)  # the first write after a quiet fsync_ms: synced at once
    assert where == [True] and spool._durable_seq == 1
    append_n(spool, 2, 1, width=tuning.INLINE_SYNC_BYTES)  # within fsync_ms: waits for the next commit
    assert where == [True] and spool._durable_seq == 1
    await until(lambda: spool._durable_seq == 2)
    assert where == [True, False]  # more than INLINE_SYNC_BYTES: in the thread
    await spool.close()


async def test_a_segment_header_lost_in_a_crash_does_not_lose_its_records(tmp_path):
    spool, _ = open_spool(tmp_path, segment_bytes=2048)
    sent = append_n(spool, 1, 40)
    await spool.close()
    newest = sorted((tmp_path / tuning.QUEUE_DIR).glob("*.seg"))[-1]
    data = bytearray(newest.read_bytes())
    first_seq = int(newest.stem)
    data[:HDR] = bytes(HDR)  # what a power loss between rotation and group commit can leave
    newest.write_bytes(bytes(data))
    assert verify(tmp_path).records == 40
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 40 and report.corrupt_records == 0
    assert_chunks(await get_n(spool, 40), range(1, 41), sent)
    assert first_seq > 1  # the zeroed segment held records that were replayed
    await spool.close()


async def test_a_segment_with_a_foreign_header_and_no_record_is_moved_aside(tmp_path):
    (tmp_path / tuning.QUEUE_DIR).mkdir()
    foreign = b"NOTASPOOL" + bytes(40)
    (tmp_path / tuning.QUEUE_DIR / f"{1:020d}.seg").write_bytes(foreign)
    spool, report = open_spool(tmp_path)
    assert report.quarantined_segments == 1 and report.replay_records == 0
    assert (tmp_path / "quarantine" / f"{1:020d}.seg").read_bytes() == foreign
    await spool.close()


async def test_fsync_ms_zero_fdatasync_error_does_not_escape_append(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path, err=errno.EIO)
    spool, _ = open_spool(tmp_path, fsync_ms=0)
    faults.sync_fail = True
    spool.append(ts_of(1), peer_of(1), payload(1))
    faults.sync_fail = False
    assert_chunks(await get_n(spool, 1), [1])
    await spool.close()


async def test_backlog_counters_through_append_ack_restart(tmp_path):
    spool, _ = open_spool(tmp_path)
    sizes = {}
    for i, n in enumerate([1, 3, 5, 2], start=1):
        data = payload(i, lines=n)
        spool.append(ts_of(i), peer_of(i), data)
        sizes[i] = (len(data), n)
    assert spool.backlog_chunks == 4
    assert spool.backlog_bytes == sum(s for s, _ in sizes.values())
    assert spool.unacked_lines() == 11
    assert metric("slsfwd_spool_bytes") == spool.backlog_bytes
    assert metric("slsfwd_spool_backlog_lines") == 11
    assert metric("slsfwd_spool_backlog_chunks") == 4
    assert spool.unread == 4
    c1, c2 = await get_n(spool, 2)
    assert spool.unread == 2 and spool.backlog_chunks == 4
    spool.ack(c2.seq)
    assert spool.backlog_chunks == 3 and spool.unacked_lines() == 8
    assert spool.backlog_bytes == sizes[1][0] + sizes[3][0] + sizes[4][0]
    assert metric("slsfwd_spool_backlog_lines") == 8
    await spool.close()
    spool, report = open_spool(tmp_path)
    # seq 2 was acknowledged out of order: it replays, so it is backlog again
    assert spool.backlog_chunks == 4 and spool.unacked_lines() == 11
    assert report.replay_lines == 11 and report.replay_records == 4
    for c in await get_n(spool, 4):
        spool.ack(c.seq)
    assert (spool.backlog_chunks, spool.backlog_bytes, spool.unacked_lines()) == (0, 0, 0)
    assert metric("slsfwd_spool_bytes") == 0
    await spool.close()


async def _read_while_appending(spool: DiskSpool, sent: dict[int, bytes], first: int, total: int, start_new: int,
                                n_new: int) -> list[int]:
    seen: list[int] = []

    async def producer():
        for i in range(start_new, start_new + n_new):
            sent.update(append_n(spool, i, 1, lines=2, width=50))
            if i % 7 == 0:
                await asyncio.sleep(0.001)
            else:
                await asyncio.sleep(0)

    async def consumer():
        while len(seen) < total:
            c = await asyncio.wait_for(spool.get(), 2)
            assert c.payload == sent[c.seq], c.seq
            assert (c.received_at, c.peer) == (ts_of(c.seq), peer_of(c.seq))
            seen.append(c.seq)
            spool.ack(c.seq)
            if len(seen) % 13 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(producer(), consumer())
    assert seen == list(range(first, first + total)), "in order, no duplicates, nothing missing"
    return seen


async def test_large_backlog_from_disk_while_appends_arrive(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "READ_AHEAD_BYTES", 10_000)
    spool, _ = open_spool(tmp_path, segment_bytes=4096, fsync_ms=1)
    sent = append_n(spool, 1, 500, lines=2, width=50)  # 50 kB: more than the read-ahead
    await _read_while_appending(spool, sent, 1, 1000, 501, 500)
    assert await nothing_more(spool)
    assert spool.backlog_chunks == 0
    await spool.flush()
    assert len(seg_files(tmp_path)) == 1
    await spool.close()


async def test_large_backlog_after_restart_while_appends_arrive(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "READ_AHEAD_BYTES", 10_000)
    spool, _ = open_spool(tmp_path, segment_bytes=4096, fsync_ms=1)
    sent = append_n(spool, 1, 600, lines=2, width=50)
    for c in await get_n(spool, 100):
        spool.ack(c.seq)
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=4096, fsync_ms=1)
    assert report.replay_records == 500
    await _read_while_appending(spool, sent, 101, 900, 601, 400)
    assert await nothing_more(spool)
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=4096)
    assert report.replay_records == 0
    await spool.close()


@pytest.mark.parametrize("seed", range(12))
async def test_random_operations_match_a_model(tmp_path, monkeypatch, seed):
    """Random appends, gets, acks (any order), flushes, clean restarts and crashes against a model."""
    rnd = random.Random(seed)
    monkeypatch.setattr(tuning, "READ_AHEAD_BYTES", rnd.choice([300, 3000, 8 << 20]))
    monkeypatch.setattr(tuning, "DISK_READ_BYTES", rnd.choice([50, 700, 1 << 20]))
    kw = dict(max_bytes=BIG, fsync_ms=rnd.choice([0, 1, 3, 50]), segment_bytes=rnd.choice([400, 2000, 1 << 20]))
    spool, _ = open_spool(tmp_path, **kw)
    sent: dict[int, bytes] = {}
    unread: collections.deque[int] = collections.deque()
    handed: list[int] = []
    acked: set[int] = set()
    next_seq = 1

    def check_counters():
        unacked = [s for s in sent if s not in acked]
        assert spool.backlog_chunks == len(unacked)
        assert spool.backlog_bytes == sum(len(sent[s]) for s in unacked)
        assert spool.unacked_lines() == sum(sent[s].count(b"\n") for s in unacked)

    for step in range(250):
        op = rnd.random()
        if op < 0.40:
            data = payload(next_seq, lines=rnd.randint(1, 4), width=rnd.randint(10, 150))
            spool.append(ts_of(next_seq), peer_of(next_seq), data)
            sent[next_seq] = data
            unread.append(next_seq)
            next_seq += 1
        elif op < 0.68:
            if unread:
                c = await asyncio.wait_for(spool.get(), 2)
                expected = unread.popleft()
                assert c.seq == expected, (step, c.seq, expected)
                assert (c.received_at, c.peer, c.payload) == (ts_of(expected), peer_of(expected), sent[expected])
                handed.append(c.seq)
        elif op < 0.90:
            if handed:
                seq = handed.pop(0 if rnd.random() < 0.6 else rnd.randrange(len(handed)))
                spool.ack(seq)
                acked.add(seq)
        elif op < 0.93:
            await spool.flush()
        elif op < 0.96:
            await asyncio.sleep(0.002)
        else:
            clean = rnd.random() < 0.5
            unacked_before = [s for s in sent if s not in acked]
            if clean:
                await spool.close()
            else:
                await crash(spool)
            spool, report = open_spool(tmp_path, **kw)
            replay = report.replay_records
            start = next_seq - replay
            assert replay == len([s for s in sent if s >= start])
            if clean:
                assert start == (min(unacked_before) if unacked_before else next_seq)
            else:
                assert all(s >= start for s in unacked_before), "a crash lost unacknowledged data"
            acked = {s for s in acked if s < start}
            unread = collections.deque(s for s in sorted(sent) if s >= start)
            handed = []
        check_counters()
    while unread:
        expected = unread.popleft()
        c = await asyncio.wait_for(spool.get(), 2)
        assert c.seq == expected and c.payload == sent[expected]
    assert await nothing_more(spool, 0.01)
    await spool.close()


# -- write errors: ENOSPC at the os.write layer ----------------------------------


def active_segment(root: Path) -> Path:
    return seg_files(root)[-1]


async def test_enospc_keeps_chunks_blocks_and_recovers(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path)
    spool, _ = open_spool(tmp_path)
    errors_before = metric("slsfwd_spool_write_errors_total", reason="disk_full")
    sent = append_n(spool, 1, 2)
    assert_chunks(await get_n(spool, 2), [1, 2], sent)
    assert metric("slsfwd_spool_write_blocked") == 0
    size_before = active_segment(tmp_path).stat().st_size

    faults.mode = "fail"
    sent.update(append_n(spool, 3, 3))  # must not raise
    assert not spool.writable
    assert spool.write_error == "disk_full"
    assert metric("slsfwd_spool_write_blocked") == 1
    assert metric("slsfwd_spool_write_errors_total", reason="disk_full") - errors_before == 1
    assert spool.backlog_chunks == 5 and spool.backlog_bytes == sum(len(p) for p in sent.values())
    assert active_segment(tmp_path).stat().st_size == size_before
    waiter = asyncio.ensure_future(spool.wait_writable())
    getter = asyncio.ensure_future(spool.get())
    failures = faults.failures
    await asyncio.sleep(0.08)
    assert faults.failures > failures, "the write is retried"
    assert not waiter.done() and not getter.done()
    assert metric("slsfwd_spool_write_blocked") == 1

    faults.mode = None
    await asyncio.wait_for(waiter, 1)
    assert spool.writable and spool.write_error is None
    assert metric("slsfwd_spool_write_blocked") == 0
    chunks = [await asyncio.wait_for(getter, 1)] + await get_n(spool, 2)
    assert_chunks(chunks, [3, 4, 5], sent)
    sent.update(append_n(spool, 6, 1))
    assert_chunks(await get_n(spool, 1), [6], sent)
    await spool.close()

    for path in seg_files(tmp_path):
        result = fmt.scan(path.read_bytes())
        assert (result.corrupt_records, result.torn_bytes) == (0, 0)
    spool, report = open_spool(tmp_path)
    assert (report.corrupt_records, report.torn_bytes) == (0, 0)
    assert_chunks(await get_n(spool, 6), range(1, 7), sent)
    await spool.close()


async def test_enospc_partial_record_is_truncated_away(tmp_path, monkeypatch, fast_retry):
    monkeypatch.setattr(tuning, "WRITE_RETRY_S", 30.0)  # no retry during the first part
    faults = FaultyDisk(monkeypatch, tmp_path)
    faults.only = lambda path, data: path.endswith(".seg")
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 3)
    seg = active_segment(tmp_path)
    size_before = seg.stat().st_size
    faults.mode = "partial"
    sent.update(append_n(spool, 4, 1, lines=20))
    assert faults.partial_writes == 1 and faults.failures == 1
    assert seg.stat().st_size == size_before, "the partial record must be cut off"
    assert not spool.writable and spool.backlog_chunks == 4
    # a crash now: the file is clean (no torn record) and the written chunks replay
    await crash(spool)
    faults.mode = None
    spool, report = open_spool(tmp_path)
    assert report.torn_bytes == 0 and report.corrupt_records == 0
    assert_chunks(await get_n(spool, 3), [1, 2, 3], sent)
    await spool.close()


async def test_enospc_partial_write_then_retry_succeeds(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path)
    faults.only = lambda path, data: path.endswith(".seg")
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 2)
    faults.mode = "partial"
    sent.update(append_n(spool, 3, 2, lines=10))
    assert not spool.writable
    await asyncio.sleep(0.03)
    faults.mode = None
    await asyncio.wait_for(spool.wait_writable(), 1)
    assert_chunks(await get_n(spool, 4), range(1, 5), sent)
    await spool.close()
    result = fmt.scan(active_segment(tmp_path).read_bytes())
    assert [r.seq for r in result.records] == [1, 2, 3, 4]
    assert (result.corrupt_records, result.torn_bytes) == (0, 0)


async def test_enospc_on_segment_rotation(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path)
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    sent = append_n(spool, 1, 8, width=60)  # several segments
    n_files = len(seg_files(tmp_path))
    faults.mode = "fail"
    faults.only = lambda path, data: data.startswith(fmt.SEGMENT_MAGIC)  # only new segments fail
    sent.update(append_n(spool, 9, 12, width=60))
    assert not spool.writable and spool.write_error == "disk_full"
    assert all(p.stat().st_size >= HDR for p in seg_files(tmp_path)), "no empty segment left behind"
    faults.mode = None
    await asyncio.wait_for(spool.wait_writable(), 1)
    assert_chunks(await get_n(spool, 20), range(1, 21), sent)
    assert len(seg_files(tmp_path)) > n_files
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert (report.corrupt_records, report.torn_bytes, report.replay_records) == (0, 0, 20)
    assert_chunks(await get_n(spool, 20), range(1, 21), sent)
    await spool.close()


async def test_enospc_other_errno_is_io_error(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path, err=errno.EIO)
    spool, _ = open_spool(tmp_path)
    faults.mode = "fail"
    sent = append_n(spool, 1, 2)
    assert spool.write_error == "io_error" and not spool.writable
    faults.mode = None
    await asyncio.wait_for(spool.wait_writable(), 1)
    assert_chunks(await get_n(spool, 2), [1, 2], sent)
    await spool.close()


async def test_acks_while_blocked_do_not_make_it_writable_before_the_write_succeeds(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path)
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 2)
    c1, c2 = await get_n(spool, 2)
    faults.mode = "fail"
    sent.update(append_n(spool, 3, 1))
    spool.ack(c1.seq)
    spool.ack(c2.seq)
    assert spool.backlog_chunks == 1
    assert not spool.writable, "the pending chunk is not written yet"
    waiter = asyncio.ensure_future(spool.wait_writable())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    faults.mode = None
    await asyncio.wait_for(waiter, 1)
    assert_chunks(await get_n(spool, 1), [3], sent)
    await spool.close()


async def test_drop_oldest_with_a_full_disk_does_not_raise_from_append(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path)
    spool, _ = open_spool(tmp_path, segment_bytes=1024, max_bytes=3000, full_policy="drop_oldest")
    append_n(spool, 1, 10, width=100)  # 2000 bytes in several segments
    assert len(seg_files(tmp_path)) >= 2
    faults.mode = "fail"
    for i in range(11, 17):
        spool.append(ts_of(i), peer_of(i), payload(i, width=100))  # crosses max_bytes while the disk is full
    faults.mode = None
    await asyncio.sleep(0.05)
    assert spool.write_error is None  # the held chunks were written once the disk had room
    assert spool.dropped_lines > 0  # room was made by dropping the oldest, and counted
    assert spool.backlog_bytes <= 3000
    seqs = [c.seq for c in await get_n(spool, spool.backlog_chunks)]
    assert seqs == sorted(seqs) and seqs[-1] == 16  # the newest lines survived, in order
    await spool.close()


async def test_write_error_clears_once_writes_work_again_after_a_failed_drop(tmp_path, monkeypatch, fast_retry):
    faults = FaultyDisk(monkeypatch, tmp_path)
    size = len(payload(1, width=150))
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20, max_bytes=3 * size, full_policy="drop_oldest")
    append_n(spool, 1, 2, width=150)
    faults.mode = "fail"
    faults.only = lambda path, data: data.startswith(fmt.SEGMENT_MAGIC)  # a new segment cannot be created
    append_n(spool, 3, 1, width=150)  # written; reaches max_bytes; dropping needs a rotation, which fails
    assert spool.write_error == "disk_full"
    faults.mode = None
    for c in await get_n(spool, 3):
        spool.ack(c.seq)
    await asyncio.sleep(0.05)
    append_n(spool, 4, 1, width=150)  # written fine
    assert [c.seq for c in await get_n(spool, 1)] == [4]
    assert spool.write_error is None
    assert metric("slsfwd_spool_write_blocked") == 0
    await spool.close()


async def test_drop_oldest_ledger_write_races_with_the_group_commit(tmp_path, monkeypatch):
    """drop_oldest writes and syncs the ledger on the loop while a group-commit thread is still
    syncing an older value of it: the slower sync must not move the ledger, or the durable
    position that segment deletion trusts, back behind the dropped segment."""
    monkeypatch.setattr(tuning, "INLINE_SYNC_BYTES", -1)  # every group commit in its thread
    spool, _ = open_spool(tmp_path, segment_bytes=1024, max_bytes=3000, full_policy="drop_oldest", fsync_ms=1)
    append_n(spool, 1, 10, width=100)
    await spool.flush()
    main = threading.get_ident()
    in_thread_sync, release = threading.Event(), threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync(fd):
        if threading.get_ident() != main and os.readlink(f"/proc/self/fd/{fd}").endswith("ledger"):
            in_thread_sync.set()
            release.wait(2)
        real_fdatasync(fd)

    monkeypatch.setattr(disk.os, "fdatasync", fdatasync)
    try:
        (c,) = await get_n(spool, 1)
        spool.ack(c.seq)  # the group commit will sync the ledger (value 2) in a thread
        for _ in range(100):
            if in_thread_sync.is_set():
                break
            await asyncio.sleep(0.02)
        assert in_thread_sync.is_set() and spool._sync_task is not None
        for i in range(11, 20):
            spool.append(ts_of(i), peer_of(i), payload(i, width=100))  # crosses max_bytes: drops a segment
        assert spool.dropped_lines > 0
        dropped_to = spool._ledger.durable
        assert dropped_to > 2
        release.set()
        await asyncio.gather(spool._sync_task, return_exceptions=True)
        assert spool._ledger.durable == dropped_to and ledger_value(tmp_path) == dropped_to
        remaining = spool.backlog_chunks
    finally:
        release.set()
        await spool.close()
    # the ledger was not moved back behind the dropped segment by the slower writer
    spool, report = open_spool(tmp_path, segment_bytes=1024, max_bytes=3000, full_policy="drop_oldest")
    assert report.replay_records == remaining
    assert [c.seq for c in await get_n(spool, remaining)] == list(range(20 - remaining, 20))
    await spool.close()
