"""The spool's ledger: two slots overwritten in place (agent/spool/ledger.py, format in agent/spool).

What matters: an acknowledgement is in the file within its loop turn (a kill -9 keeps it) without
an fsync of its own; a power loss can tear only the slot written since the last sync; a ledger of
one slot, as older versions wrote it, is read and upgraded; a full disk never stops it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
import threading
import time
import zlib

import pytest

from agent.spool import disk, ledger, tuning, verify
from agent.spool import format as fmt
from tests.unit.spool.test_spool import (
    append_n,
    assert_chunks,
    crash,
    get_n,
    ledger_value,
    open_spool,
    qdir,
)

SLOT0, SLOT1 = fmt.LEDGER_SLOT_OFFSETS
GOOD_7, GOOD_9 = fmt.encode_ledger(7), fmt.encode_ledger(9)
PAD = bytes(SLOT1 - fmt.LEDGER_SIZE)


def _other_version(acked: int) -> bytes:
    head = struct.pack("<8sHQ", b"SLSFWDLG", 2, acked)
    return head + struct.pack("<I", zlib.crc32(head))


def _torn(record: bytes) -> bytes:
    return record[:12] + bytes(len(record) - 12)


# -- the file format, as a table ---------------------------------------------------

@pytest.mark.parametrize("data, acked, newest, problems, damaged", [
    (GOOD_7 + PAD + GOOD_9, 9, 1, 0, 0),
    (GOOD_9 + PAD + GOOD_7, 9, 0, 0, 0),
    (GOOD_7 + PAD + GOOD_7, 7, 0, 0, 0),
    (_torn(GOOD_9) + PAD + GOOD_7, 7, 1, 1, 1),  # the hot slot torn by a power loss
    (GOOD_9 + PAD + bytes(fmt.LEDGER_SIZE), 9, 0, 1, 1),
    (GOOD_7, 7, 0, 0, 0),  # one slot: a ledger from an older slsfwd
    (GOOD_7 + PAD + GOOD_9 + b"appended", 9, 1, 1, 0),  # bytes appended cost nothing
    (GOOD_7 + PAD, 7, 0, 2, 1),  # cut short: slot 1 is missing
    (GOOD_7 + GOOD_9, 7, 0, 2, 1),  # a size no slsfwd wrote: slot 0 still checks out
])
def test_ledger_file_takes_the_larger_valid_slot(data, acked, newest, problems, damaged):
    slots = fmt.decode_ledger_file(data, "L")
    assert (slots.acked_seq, slots.newest_slot, len(slots.problems), slots.damaged_slots) == (
        acked, newest, problems, damaged)


@pytest.mark.parametrize("data, error, damaged", [
    (_torn(GOOD_7) + PAD + _torn(GOOD_9), "checksum", 2),
    (_torn(GOOD_7), "checksum", 1),
    (b"", "bytes", 2),
    (b"x" * 30, "bytes", 2),
])
def test_ledger_file_with_no_valid_slot_is_damage(data, error, damaged):
    slots = fmt.decode_ledger_file(data, "L")
    assert slots.acked_seq is None and slots.damaged_slots == damaged
    assert error in "; ".join(slots.problems)


@pytest.mark.parametrize("data", [GOOD_9 + PAD + _other_version(3), _other_version(3) + PAD + GOOD_9, _other_version(3)])
def test_ledger_file_with_another_version_in_any_slot_is_refused(data):
    with pytest.raises(fmt.OtherVersionError, match="version 2"):
        fmt.decode_ledger_file(data, "L")


def test_new_ledger_file_layout():
    data = fmt.encode_ledger_file(42)
    assert len(data) == fmt.LEDGER_FILE_SIZE == SLOT1 + 22
    assert data[SLOT0:SLOT0 + 22] == data[SLOT1:] == fmt.encode_ledger(42)
    assert data[22:SLOT1] == bytes(SLOT1 - 22)


# -- the spool's use of it -------------------------------------------------------------

def _slot_values(root) -> list[int | None]:
    data = (qdir(root) / "ledger").read_bytes()
    values = []
    for offset in fmt.LEDGER_SLOT_OFFSETS:
        try:
            values.append(fmt.decode_ledger(data[offset:offset + fmt.LEDGER_SIZE], "slot"))
        except fmt.FormatError:
            values.append(None)
    return values


@pytest.fixture
def ledger_syncs(monkeypatch):
    """When each fdatasync of the ledger file was made (time.monotonic())."""
    calls = []
    real = os.fdatasync

    def fdatasync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/ledger"):
            calls.append(time.monotonic())
        real(fd)

    monkeypatch.setattr(disk.os, "fdatasync", fdatasync)
    return calls


async def test_an_acknowledgement_is_in_the_file_within_its_loop_turn_and_synced_later(tmp_path, monkeypatch, ledger_syncs):
    monkeypatch.setattr(tuning, "LEDGER_SYNC_MS", 300)
    spool, _ = open_spool(tmp_path, fsync_ms=5)
    append_n(spool, 1, 6)
    await asyncio.sleep(0.05)  # the appends' group commit: nothing acknowledged yet
    assert ledger_syncs == [] and ledger_value(tmp_path) == 1
    for c in await get_n(spool, 4):
        spool.ack(c.seq)
    acked_at = time.monotonic()
    await asyncio.sleep(0)
    assert ledger_value(tmp_path) == 5  # in the page cache: a kill -9 keeps it
    deadline = acked_at + 5
    while not ledger_syncs and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(ledger_syncs) == 1
    # An acknowledgement alone waits LEDGER_SYNC_MS for its sync (less at most the 100 ms timer grid).
    assert ledger_syncs[0] - acked_at >= 0.3 - 0.1
    await spool.close()


async def test_acknowledgements_ride_on_the_group_commit_of_new_data(tmp_path, monkeypatch, ledger_syncs):
    monkeypatch.setattr(tuning, "LEDGER_SYNC_MS", 60_000)
    spool, _ = open_spool(tmp_path, fsync_ms=20)
    append_n(spool, 1, 3)
    for c in await get_n(spool, 3):
        spool.ack(c.seq)
    await asyncio.sleep(0)
    append_n(spool, 4, 1)  # data: a group commit within fsync_ms, which syncs the ledger too
    await asyncio.sleep(0.3)
    assert len(ledger_syncs) == 1 and spool._ledger.durable == 4
    await spool.close()


async def test_one_loop_turn_of_acknowledgements_is_one_write(tmp_path, monkeypatch):
    spool, _ = open_spool(tmp_path, fsync_ms=60_000)
    writes = []
    real = os.pwrite
    monkeypatch.setattr(ledger.os, "pwrite", lambda fd, data, offset: (writes.append(offset), real(fd, data, offset))[1])
    append_n(spool, 1, 50)
    for c in await get_n(spool, 50):
        spool.ack(c.seq)
    await asyncio.sleep(0)
    assert len(writes) == 1 and ledger_value(tmp_path) == 51
    await spool.close()


async def test_slots_switch_only_after_a_sync(tmp_path):
    spool, _ = open_spool(tmp_path, fsync_ms=60_000)
    append_n(spool, 1, 10)
    chunks = await get_n(spool, 10)
    assert _slot_values(tmp_path) == [1, 1]
    spool.ack(chunks[0].seq)
    await asyncio.sleep(0)
    spool.ack(chunks[1].seq)
    await asyncio.sleep(0)
    assert _slot_values(tmp_path) == [3, 1]  # unsynced writes stay in one slot
    await spool.flush()
    spool.ack(chunks[2].seq)
    await asyncio.sleep(0)
    assert _slot_values(tmp_path) == [3, 4]  # synced: the other slot takes the next value
    await spool.flush()
    spool.ack(chunks[3].seq)
    await asyncio.sleep(0)
    assert _slot_values(tmp_path) == [5, 4]
    await spool.close()


async def test_a_power_loss_tearing_the_hot_slot_replays_from_the_other(tmp_path):
    spool, _ = open_spool(tmp_path, fsync_ms=60_000)
    sent = append_n(spool, 1, 10)
    chunks = await get_n(spool, 10)
    for c in chunks[:3]:
        spool.ack(c.seq)
    await spool.flush()  # durable: 4
    for c in chunks[3:8]:
        spool.ack(c.seq)
    await asyncio.sleep(0)  # written, not synced: 9, in the other slot
    await crash(spool)
    path = qdir(tmp_path) / "ledger"
    data = path.read_bytes()
    hot = SLOT1 if _slot_values(tmp_path)[1] == 9 else SLOT0
    path.write_bytes(data[:hot + 12] + bytes(10) + data[hot + 22:])  # what the power loss tore
    spool, report = open_spool(tmp_path)
    assert report.ledger_problem == "" and report.replay_records == 7
    assert_chunks(await get_n(spool, 7), range(4, 11), sent)
    await spool.close()


async def test_a_one_slot_ledger_from_an_older_version_is_read_and_upgraded(tmp_path):
    spool, _ = open_spool(tmp_path)
    sent = append_n(spool, 1, 6)
    await spool.close()
    path = qdir(tmp_path) / "ledger"
    path.write_bytes(fmt.encode_ledger(3))
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 4 and report.ledger_problem == ""
    assert len(path.read_bytes()) == fmt.LEDGER_FILE_SIZE and _slot_values(tmp_path) == [3, 3]
    assert_chunks(await get_n(spool, 4), range(3, 7), sent)
    await spool.close()


async def test_a_one_slot_ledger_on_a_full_disk_is_overwritten_in_place(tmp_path, monkeypatch):
    spool, _ = open_spool(tmp_path)
    append_n(spool, 1, 6)
    await spool.close()
    path = qdir(tmp_path) / "ledger"
    path.write_bytes(fmt.encode_ledger(3))

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger, "write_atomically", full)
    spool, report = open_spool(tmp_path, fsync_ms=60_000)
    assert report.replay_records == 4
    for c in await get_n(spool, 2):
        spool.ack(c.seq)
    await spool.flush()
    assert path.read_bytes() == fmt.encode_ledger(5)  # still one slot, moved forward
    await spool.close()
    monkeypatch.undo()
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 2
    await spool.close()


async def test_a_ledger_that_could_not_be_created_at_start_is_created_later(tmp_path, monkeypatch):
    real = ledger.write_atomically
    full = [True]

    def maybe_full(path, data):
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ledger, "write_atomically", maybe_full)
    spool, _ = open_spool(tmp_path, fsync_ms=60_000)
    assert not (qdir(tmp_path) / "ledger").exists()
    append_n(spool, 1, 4)
    for c in await get_n(spool, 2):
        spool.ack(c.seq)
    await asyncio.sleep(0)  # the write fails; nothing raises
    full[0] = False
    await spool.flush()  # retried by the group commit
    assert ledger_value(tmp_path) == 3
    await spool.close()
    spool, report = open_spool(tmp_path)
    assert report.replay_records == 2
    await spool.close()


def test_verify_reads_both_slots(tmp_path):
    qdir(tmp_path).mkdir(parents=True)
    (qdir(tmp_path) / "ledger").write_bytes(GOOD_7 + PAD + _torn(GOOD_9))
    assert verify(tmp_path).acked_seq == 7


async def test_a_write_during_a_sync_keeps_the_slot_hot(tmp_path, monkeypatch):
    """A value written while the group commit syncs the file is not covered by that sync:
    the next write must go to the same slot, or both slots could be torn at once."""
    spool, _ = open_spool(tmp_path, fsync_ms=60_000)
    append_n(spool, 1, 10)
    chunks = await get_n(spool, 10)
    await spool.flush()
    in_sync, release = threading.Event(), threading.Event()
    real = os.fdatasync

    def fdatasync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/ledger"):
            in_sync.set()
            release.wait(2)
        real(fd)

    monkeypatch.setattr(disk.os, "fdatasync", fdatasync)
    spool.ack(chunks[0].seq)
    await asyncio.sleep(0)
    flushing = asyncio.ensure_future(spool.flush())
    await asyncio.get_running_loop().run_in_executor(None, in_sync.wait, 2)
    spool.ack(chunks[1].seq)  # written while the thread syncs the value 2
    await asyncio.sleep(0)
    release.set()
    await asyncio.sleep(0.05)  # the sync of 2 completes
    spool.ack(chunks[2].seq)
    await asyncio.sleep(0)
    assert _slot_values(tmp_path) == [4, 1]  # slot 1 kept its durable value throughout
    await flushing
    await spool.close()
