"""A damaged spool never stops the agent: it costs what the damage touched, counted and logged.

The spec is the package docstring of agent/spool (segment header version 2, the header table,
the recovery invariants). The pure scan (agent/spool/scan.py) and header classification are
table-tested; the rest runs DiskSpool and `verify` on real files damaged byte by byte.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import pytest

from agent.spool import DiskSpool, SpoolError, tuning, verify
from agent.spool import format as fmt
from agent.spool import scan as sc
from agent.spool.acks import advance_acked
from tests.unit.spool.test_spool import (
    BIG,
    HDR,
    append_n,
    assert_chunks,
    get_n,
    ledger_value,
    metric,
    newer_header,
    nothing_more,
    open_spool,
    qdir,
    rec,
    seg_files,
    segment,
)

V1_HEADER = b"SLSFWDSG" + struct.pack("<H", 1) + bytes(6)  # what slsfwd 0.1.0 writes
V2_HEADER = fmt.segment_header()


def _with(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1:]


def _v2_with_crc(version: int, reserved: int = 0, magic: bytes = b"SLSFWDSG") -> bytes:
    head = struct.pack("<8sHH", magic, version, reserved)
    return head + struct.pack("<I", zlib.crc32(head))


# -- the header, as a table -------------------------------------------------------------------

@pytest.mark.parametrize("head, expected", [
    (V2_HEADER, (fmt.HEADER_INTACT, 2)),
    (V1_HEADER, (fmt.HEADER_INTACT, 1)),
    (newer_header(3), (fmt.HEADER_NEWER, 3)),
    (newer_header(0xFFFF), (fmt.HEADER_NEWER, 0xFFFF)),
    (bytes(16), (fmt.HEADER_ZEROED, 0)),
    (V2_HEADER[:15], (fmt.HEADER_SHORT, 0)),
    (b"", (fmt.HEADER_SHORT, 0)),
    # the cases: byte 0 and byte 9 of a version 1 header overwritten
    (_with(V1_HEADER, 0, 0x00), (fmt.HEADER_CORRUPT, 0)),
    (_with(V1_HEADER, 9, 0x5A), (fmt.HEADER_CORRUPT, 0)),  # "version 23041": damage, not a version
    (_with(V2_HEADER, 9, 0x5A), (fmt.HEADER_CORRUPT, 0)),
    (newer_header(3)[:12] + bytes(4), (fmt.HEADER_CORRUPT, 0)),  # a newer version without its checksum
    (_v2_with_crc(0), (fmt.HEADER_CORRUPT, 0)),  # no version 0 was ever written
    (_v2_with_crc(2, magic=b"SLSFWDXX"), (fmt.HEADER_CORRUPT, 0)),  # not our magic, whatever the CRC
    (b"NOTASPOOL" + bytes(7), (fmt.HEADER_CORRUPT, 0)),
    (V1_HEADER[:10] + b"\x00\x00\x01\x00\x00\x00", (fmt.HEADER_CORRUPT, 0)),  # v1 padding not zero
    (_with(V1_HEADER, 8, 2), (fmt.HEADER_CORRUPT, 0)),  # v1 turned into 2: no checksum there
    (_with(V2_HEADER, 8, 1), (fmt.HEADER_CORRUPT, 0)),  # v2 turned into 1: the CRC is not zeros
    (V2_HEADER + b"\xff" * 40, (fmt.HEADER_INTACT, 2)),  # only the first 16 bytes count
])
def test_segment_header_table(head, expected):
    assert tuple(fmt.read_segment_header(head)) == expected


@pytest.mark.parametrize("header", [V1_HEADER, V2_HEADER], ids=["v1", "v2"])
def test_any_one_byte_change_of_a_header_is_damage_never_another_version(header):
    for at in range(HDR):
        for value in range(256):
            if value != header[at]:
                state = fmt.read_segment_header(_with(header, at, value)).state
                assert state == fmt.HEADER_CORRUPT, (at, value, state)


def test_the_newer_format_message_is_the_one_slsfwd_always_gave():
    error = fmt.other_version_error("/q/1.seg", 3, fmt.SEGMENT_VERSION)
    assert str(error) == ("/q/1.seg: spool format version 3, but this slsfwd reads version 2; "
                          "ship it with a matching slsfwd or move the spool directory away")


# -- the shared scan and its fate, as a table ---------------------------------------------------

NAME = sc.segment_name(5)
RECORDS = rec(5) + rec(6) + rec(7)
GARBAGE = bytes(range(256)) * 2  # never contains the record magic


@pytest.mark.parametrize("name, data, acked, records, damage, expected", [
    (NAME, V2_HEADER + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.KEEP, "")),
    (NAME, V1_HEADER + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.KEEP, "")),
    (NAME, V2_HEADER + RECORDS, 8, [5, 6, 7], (0, 0, 0), (sc.DELETE, "acknowledged")),
    (NAME, V2_HEADER + RECORDS, 7, [5, 6, 7], (0, 0, 0), (sc.KEEP, "")),
    (NAME, _with(V2_HEADER, 0, 0) + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.KEEP, "")),
    (NAME, _with(V1_HEADER, 9, 0x5A) + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.KEEP, "")),
    (NAME, bytes(16) + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.KEEP, "")),
    (NAME, GARBAGE + RECORDS, 1, [5, 6, 7], (1, 512 - 16, 0), (sc.KEEP, "")),  # the header and beyond
    (NAME, _with(V2_HEADER, 3, 0) + GARBAGE, 1, [], (0, 0, 512), (sc.QUARANTINE, sc.NO_RECORDS)),
    (NAME, _with(V2_HEADER, 3, 0), 1, [], (0, 0, 0), (sc.QUARANTINE, sc.NO_RECORDS)),
    (NAME, V2_HEADER + GARBAGE, 1, [], (0, 0, 512), (sc.DELETE, "acknowledged")),  # torn, header intact
    (NAME, V2_HEADER + RECORDS + b"\x9c\x01garbage", 1, [5, 6, 7], (0, 0, 9), (sc.KEEP, "")),
    (NAME, V2_HEADER + rec(5) + _with(rec(6), 40, 0) + rec(7), 1, [5, 7], (1, len(rec(6)), 0), (sc.KEEP, "")),
    (NAME, V2_HEADER[:9], 1, [], (0, 0, 0), (sc.DELETE, "never written")),
    (NAME, newer_header(3) + RECORDS, 1, [], (0, 0, 0), (sc.REFUSE, "")),
    ("junk.seg", V2_HEADER + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.QUARANTINE, sc.BAD_NAME)),
    ("-5.seg", V2_HEADER + RECORDS, 1, [5, 6, 7], (0, 0, 0), (sc.QUARANTINE, sc.BAD_NAME)),
])
def test_scan_and_fate_table(name, data, acked, records, damage, expected):
    scan = sc.scan_segment(name, data)
    assert [r.seq for r in scan.records] == records
    assert (scan.corrupt_records, scan.corrupt_bytes, scan.torn_bytes) == damage
    assert sc.fate(scan, acked) == expected


def test_an_unreadable_segment_is_quarantined():
    assert sc.fate(sc.unreadable_segment(NAME, "Input/output error"), 1) == (sc.QUARANTINE, sc.UNREADABLE)


@pytest.mark.parametrize("name, first_seq", [
    (sc.segment_name(4711), 4711), ("00000000000000000001.seg", 1), ("7.seg", 7),
    ("junk.seg", None), ("1.seg.tmp", None), ("+1.seg", None), ("١.seg", None), (".seg", None),
])
def test_segment_names(name, first_seq):
    assert sc.first_seq_of(name) == first_seq


@pytest.mark.parametrize("acked, above, lost, expected, above_left, lost_left", [
    (5, set(), {}, 5, set(), {}),
    (5, {5, 6, 8}, {}, 7, {8}, {}),
    (5, set(), {5: 9}, 9, set(), {}),
    (5, {5, 9, 10}, {6: 9, 20: 30}, 11, set(), {20: 30}),
    (5, {6}, {7: 9}, 5, {6}, {7: 9}),
])
def test_advance_acked_table(acked, above, lost, expected, above_left, lost_left):
    assert advance_acked(acked, above, lost) == expected
    assert (above, lost) == (above_left, lost_left)


# -- real files ---------------------------------------------------------------------------------

async def _spool(tmp_path: Path, count: int = 30, header: bytes | None = None) -> dict[int, bytes]:
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    sent = append_n(spool, 1, count)
    await spool.close()
    assert len(seg_files(tmp_path)) >= 3
    if header is not None:
        for path in seg_files(tmp_path):
            _overwrite(path, 0, header)
    return sent


def _overwrite(path: Path, at: int, data: bytes) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[:at] + data + whole[at + len(data):])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def _deliver_all_and_ack(spool: DiskSpool, expected: list[int], sent: dict[int, bytes]) -> None:
    chunks = await get_n(spool, len(expected))
    assert_chunks(chunks, expected, sent)
    assert await nothing_more(spool)
    for c in chunks:
        spool.ack(c.seq)
    await spool.flush()


@pytest.mark.parametrize("at", range(HDR))
@pytest.mark.parametrize("header", [V1_HEADER, V2_HEADER], ids=["v1", "v2"])
async def test_a_flipped_header_byte_costs_the_header_not_the_segment(tmp_path, header, at):
    sent = await _spool(tmp_path, header=header)
    victim = seg_files(tmp_path)[1]
    _overwrite(victim, at, bytes([header[at] ^ 0xFF]))
    before = metric("slsfwd_spool_damaged_segment_headers_total", reason="corrupt")
    health = verify(tmp_path)
    assert (health.damaged_headers, health.replay_records, health.quarantined_segments) == (1, 30, 0)
    assert health.damaged and "1 damaged segment headers" in health.summary()

    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert (report.damaged_headers, report.replay_records, report.corrupt_records) == (1, 30, 0)
    assert metric("slsfwd_spool_damaged_segment_headers_total", reason="corrupt") - before == 1
    await _deliver_all_and_ack(spool, list(range(1, 31)), sent)
    assert ledger_value(tmp_path) == 31
    assert len(seg_files(tmp_path)) == 1  # the damaged segment went too, once acknowledged
    await spool.close()


async def test_a_spool_of_version_1_headers_is_read_as_it_is(tmp_path):
    sent = await _spool(tmp_path, header=V1_HEADER)
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert (report.damaged_headers, report.replay_records) == (0, 30)
    await _deliver_all_and_ack(spool, list(range(1, 31)), sent)
    await spool.close()
    assert not verify(tmp_path).damaged


async def test_a_newer_format_is_refused_by_the_agent_and_by_verify_and_nothing_changes(tmp_path):
    await _spool(tmp_path)
    _overwrite(seg_files(tmp_path)[-1], 0, newer_header(3))
    _overwrite(seg_files(tmp_path)[0], 3, b"\x00")  # damage elsewhere: still not touched
    before = _snapshot(tmp_path)
    message = "spool format version 3, but this slsfwd reads version 2; ship it with a matching slsfwd"
    with pytest.raises(SpoolError, match=message):
        verify(tmp_path)
    with pytest.raises(SpoolError, match=message):
        DiskSpool(tmp_path, max_bytes=BIG).open()
    assert _snapshot(tmp_path) == before


async def test_a_flipped_record_byte_costs_that_record_and_the_ledger_moves_past_it(tmp_path):
    sent = await _spool(tmp_path)
    first = seg_files(tmp_path)[0]
    victim = fmt.scan(first.read_bytes()).records[2]
    _overwrite(first, victim.offset + 30, bytes([first.read_bytes()[victim.offset + 30] ^ 0x10]))
    before = metric("slsfwd_spool_corrupt_records_total")
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert report.corrupt_records == 1 and report.replay_records == 29
    assert metric("slsfwd_spool_corrupt_records_total") - before == 1
    await _deliver_all_and_ack(spool, [s for s in range(1, 31) if s != victim.seq], sent)
    # The lost seq is not waited for: the ledger passes it and every segment is deleted.
    assert ledger_value(tmp_path) == 31
    assert len(seg_files(tmp_path)) == 1
    await spool.close()
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert report.replay_records == 0  # no duplicates on the next start either
    await spool.close()


async def test_damage_found_while_running_does_not_hold_the_ledger_back(tmp_path, monkeypatch):

    monkeypatch.setattr(tuning, "READ_AHEAD_BYTES", 0)  # every record is read back from disk
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20)
    sent = append_n(spool, 1, 20)
    segment_file = seg_files(tmp_path)[0]
    victim = fmt.scan(segment_file.read_bytes()).records[9]  # seq 10
    _overwrite(segment_file, victim.offset + 25, b"\xee")
    expected = [s for s in range(1, 21) if s != 10]
    chunks = await get_n(spool, 19)
    assert_chunks(chunks, expected, sent)
    for c in reversed(chunks):  # out of order, as responses may come
        spool.ack(c.seq)
    await spool.flush()
    assert ledger_value(tmp_path) == 21
    await spool.close()


@pytest.mark.parametrize("which", ["oldest", "middle", "newest"])
async def test_random_bytes_appended_to_a_segment_are_cut_off_and_counted(tmp_path, which):
    sent = await _spool(tmp_path)
    files = seg_files(tmp_path)
    victim = {"oldest": files[0], "middle": files[len(files) // 2], "newest": files[-1]}[which]
    junk = random.Random(7).randbytes(333)
    with open(victim, "ab") as f:
        f.write(junk)
    before = metric("slsfwd_spool_corrupt_bytes_total", reason="torn")
    assert verify(tmp_path).torn_bytes == 333
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert (report.torn_bytes, report.replay_records, report.corrupt_records) == (333, 30, 0)
    assert metric("slsfwd_spool_corrupt_bytes_total", reason="torn") - before == 333
    await _deliver_all_and_ack(spool, list(range(1, 31)), sent)
    assert ledger_value(tmp_path) == 31
    await spool.close()


async def _spool_with_acks(tmp_path: Path) -> tuple[dict[int, bytes], int]:
    """60 chunks; the first 40 acknowledged, so the oldest segments are gone: the rest start past 1."""
    spool, _ = open_spool(tmp_path, segment_bytes=1024)
    sent = append_n(spool, 1, 60)
    for c in await get_n(spool, 40):
        spool.ack(c.seq)
    await spool.flush()
    await spool.close()
    first = int(seg_files(tmp_path)[0].stem)
    assert first > 1 and ledger_value(tmp_path) == 41
    return sent, first


@pytest.mark.parametrize("slots", [(0,), (1,), (0, 1)], ids=["slot 0", "slot 1", "both slots"])
async def test_a_flipped_ledger_byte_never_stops_the_spool_nor_loses_a_record(tmp_path, slots):
    sent, first = await _spool_with_acks(tmp_path)
    path = qdir(tmp_path) / "ledger"
    assert [fmt.decode_ledger(path.read_bytes()[at:at + fmt.LEDGER_SIZE], "") for at in fmt.LEDGER_SLOT_OFFSETS] == [41, 1]
    for slot in slots:
        at = fmt.LEDGER_SLOT_OFFSETS[slot] + 12
        _overwrite(path, at, bytes([path.read_bytes()[at] ^ 0x01]))
    before = metric("slsfwd_spool_damaged_ledger_slots_total")
    health = verify(tmp_path)
    assert health.ledger_damaged_slots == len(slots) and health.damaged
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert metric("slsfwd_spool_damaged_ledger_slots_total") - before == len(slots)
    if len(slots) == 1:
        # The other slot's position is used. Slot 1 still holds 1 here (only slot 0 was written
        # since): everything still in the segments, from seq 41, is shipped, and the ledger must
        # move on from there, not wait for seqs 1-40 that are gone.
        assert report.ledger_problem == "" and report.replay_records == 20
        expected = list(range(41, 61))
    else:
        # No position left: everything still in the segments again (duplicates, never loss).
        assert "checksum" in report.ledger_problem
        expected = list(range(first, 61))
        assert report.replay_records == len(expected)
    await _deliver_all_and_ack(spool, expected, sent)
    # The ledger moves on from where the segments start, not from seq 1.
    assert ledger_value(tmp_path) == 61
    assert len(seg_files(tmp_path)) == 1
    await spool.close()


async def test_a_ledger_that_cannot_be_read_replays_everything(tmp_path):
    sent, first = await _spool_with_acks(tmp_path)
    path = qdir(tmp_path) / "ledger"
    path.unlink()
    path.mkdir()  # read_bytes() fails (EISDIR) as an unreadable file would
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert "cannot read the ledger" in report.ledger_problem
    assert_chunks(await get_n(spool, 61 - first), range(first, 61), sent)
    await spool.close()


def _damage_header_and_records(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(_with(data[:HDR], 0, 0) + bytes(b ^ 0x5A for b in data[HDR:]))


@pytest.mark.parametrize("kind, reason", [
    ("nothing intact", sc.NO_RECORDS), ("a directory", sc.UNREADABLE), ("a foreign name", sc.BAD_NAME),
])
async def test_a_segment_that_cannot_be_used_is_moved_aside_and_counted(tmp_path, kind, reason):
    sent = await _spool(tmp_path)
    files = seg_files(tmp_path)
    lost = [r.seq for r in fmt.scan(files[1].read_bytes()).records] if kind == "nothing intact" else []
    if kind == "nothing intact":
        _damage_header_and_records(files[1])
        victim = files[1]
    elif kind == "a directory":
        victim = qdir(tmp_path) / sc.segment_name(999)
        victim.mkdir()
        (victim / "inside").write_bytes(b"x")
    else:
        victim = qdir(tmp_path) / "backup.seg"
        victim.write_bytes(files[0].read_bytes())
    before = metric("slsfwd_spool_quarantined_segments_total", reason=reason)
    health = verify(tmp_path)
    assert health.quarantined_segments == 1 and health.damaged
    assert "1 unusable segments (moved to quarantine/ at the next start)" in health.summary()

    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert report.quarantined_segments == 1
    assert metric("slsfwd_spool_quarantined_segments_total", reason=reason) - before == 1
    assert not victim.exists()
    assert (tmp_path / "quarantine" / victim.name).exists()
    await _deliver_all_and_ack(spool, [s for s in range(1, 31) if s not in lost], sent)
    assert ledger_value(tmp_path) == 31
    await spool.close()
    after = verify(tmp_path)
    assert after.quarantined_segments == 0 and after.quarantine_files == 1
    assert "quarantine/ holds 1 files" in after.summary()


async def test_a_name_taken_in_quarantine_gets_a_suffix(tmp_path):
    await _spool(tmp_path)
    victim = seg_files(tmp_path)[0]
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / victim.name).write_bytes(b"from an earlier start")
    _damage_header_and_records(victim)
    damaged = victim.read_bytes()
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    await spool.close()
    assert report.quarantined_segments == 1
    assert (tmp_path / "quarantine" / victim.name).read_bytes() == b"from an earlier start"
    assert (tmp_path / "quarantine" / f"{victim.name}.1").read_bytes() == damaged


async def test_a_zeroed_header_is_counted_apart(tmp_path):
    sent = await _spool(tmp_path)
    _overwrite(seg_files(tmp_path)[-1], 0, bytes(HDR))
    before = metric("slsfwd_spool_damaged_segment_headers_total", reason="zeroed")
    spool, report = open_spool(tmp_path, segment_bytes=1024)
    assert report.damaged_headers == 1
    assert metric("slsfwd_spool_damaged_segment_headers_total", reason="zeroed") - before == 1
    await _deliver_all_and_ack(spool, list(range(1, 31)), sent)
    await spool.close()


async def test_verify_changes_nothing(tmp_path):
    await _spool(tmp_path)
    files = seg_files(tmp_path)
    _overwrite(files[0], 9, b"\x5a")
    _damage_header_and_records(files[1])
    with open(files[2], "ab") as f:
        f.write(b"junk")
    before = _snapshot(tmp_path)
    report = verify(tmp_path)
    assert (report.damaged_headers, report.quarantined_segments, report.torn_bytes) == (1, 1, 4)
    assert _snapshot(tmp_path) == before


def test_verify_of_a_spool_that_does_not_exist_yet(tmp_path):
    report = verify(tmp_path / "nowhere")
    assert (report.segments, report.replay_records) == (0, 0) and not report.damaged
    assert report.summary().endswith("; healthy")


def test_every_damage_in_one_spool_is_read_by_the_real_scan(tmp_path):
    """Segments built from the format's own encoder: the scan sees every kind at once."""
    queue = qdir(tmp_path)
    queue.mkdir(parents=True)
    (queue / sc.segment_name(1)).write_bytes(segment(rec(1), rec(2)))
    (queue / sc.segment_name(3)).write_bytes(_with(V1_HEADER, 9, 0x5A) + rec(3) + rec(4))
    (queue / sc.segment_name(5)).write_bytes(V1_HEADER + rec(5) + _with(rec(6), 30, 0) + rec(7) + b"tail")
    report = verify(tmp_path)
    assert (report.records, report.replay_records, report.damaged_headers) == (6, 6, 1)
    assert (report.corrupt_records, report.torn_bytes) == (1, 4)
    os.truncate(queue / sc.segment_name(5), HDR)
    assert verify(tmp_path).records == 4
