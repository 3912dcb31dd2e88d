"""Spool records, segment headers and the ledger as bytes. Pure: no files.

See :mod:`agent.spool` for the format.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterator, NamedTuple

# The segment header's version; version 1 (no checksum, written by slsfwd 0.1.0) is read too.
SEGMENT_VERSION = 2
LEDGER_VERSION = 1

SEGMENT_MAGIC = b"SLSFWDSG"
SEGMENT_HEADER = struct.Struct("<8sHH")  # magic, version, zero; then the CRC-32 of these 12 bytes
SEGMENT_HEADER_CRC = struct.Struct("<I")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size + SEGMENT_HEADER_CRC.size  # 16, as in version 1
_V1_PADDING = bytes(SEGMENT_HEADER_SIZE - 10)  # version 1: magic, u16 version, then zeros

RECORD_MAGIC = 0x534C5352  # "SLSR"
RECORD_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)
RECORD_HEADER = struct.Struct("<III")  # magic, body length, crc32(body)
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 12
BODY_HEADER = struct.Struct("<QIIH")  # seq, received_at, lines, peer length
BODY_HEADER_SIZE = BODY_HEADER.size  # 18
MAX_BODY = 1 << 30  # a sanity bound: a larger length is corruption

LEDGER_MAGIC = b"SLSFWDLG"
LEDGER = struct.Struct("<8sHQ")
LEDGER_SIZE = LEDGER.size + 4
# The ledger file holds two copies (slots) of the record, in different 4 KiB pages, so that
# a torn overwrite of one leaves the other intact. A file of one record (as written by
# slsfwd before the two slots) is read as slot 0 alone.
LEDGER_SLOT_OFFSETS = (0, 4096)
LEDGER_FILE_SIZE = LEDGER_SLOT_OFFSETS[1] + LEDGER_SIZE


class FormatError(Exception):
    pass


class OtherVersionError(FormatError):
    """Written by a slsfwd with another (newer) format version: refuse, never misread."""


def other_version_error(where: str, version: int, readable: int) -> OtherVersionError:
    return OtherVersionError(
        f"{where}: spool format version {version}, but this slsfwd reads version {readable}; "
        "ship it with a matching slsfwd or move the spool directory away"
    )


def segment_header() -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0)
    return head + SEGMENT_HEADER_CRC.pack(zlib.crc32(head))


# What a segment's first 16 bytes say (see the table in :mod:`agent.spool`).
HEADER_INTACT = "intact"  # version 1 or 2, as written
HEADER_SHORT = "short"  # fewer than 16 bytes: created, never written (a crash right after)
HEADER_ZEROED = "zeroed"  # zeros: lost in a power loss before the group commit synced it
HEADER_CORRUPT = "corrupt"  # anything else that is not a newer version: damage
HEADER_NEWER = "newer"  # a later format, its checksum intact: refuse


class SegmentHeader(NamedTuple):
    state: str
    version: int = 0  # as read, for intact and newer headers


def read_segment_header(data: bytes) -> SegmentHeader:
    """Classify a segment's header. Damage is never taken for another version: a version
    other than 1 counts only with its checksum intact (every version from 2 on has one)."""
    head = bytes(data[:SEGMENT_HEADER_SIZE])
    if len(head) < SEGMENT_HEADER_SIZE:
        return SegmentHeader(HEADER_SHORT)
    if head == bytes(SEGMENT_HEADER_SIZE):
        return SegmentHeader(HEADER_ZEROED)
    magic, version, _ = SEGMENT_HEADER.unpack_from(head)
    if magic != SEGMENT_MAGIC:
        return SegmentHeader(HEADER_CORRUPT)
    if version == 1 and head[10:] == _V1_PADDING:
        return SegmentHeader(HEADER_INTACT, 1)
    (crc,) = SEGMENT_HEADER_CRC.unpack_from(head, SEGMENT_HEADER.size)
    if version < 2 or zlib.crc32(head[:SEGMENT_HEADER.size]) != crc:
        return SegmentHeader(HEADER_CORRUPT)
    if version > SEGMENT_VERSION:
        return SegmentHeader(HEADER_NEWER, version)
    return SegmentHeader(HEADER_INTACT, version)


def encode_record(seq: int, received_at: int, lines: int, peer: bytes, payload: bytes) -> bytes:
    return b"".join(encode_record_parts(seq, received_at, lines, peer, payload))


def encode_record_parts(seq: int, received_at: int, lines: int, peer: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """A record as (headers, payload), for ``writev``: the payload is never copied."""
    body_head = BODY_HEADER.pack(seq, received_at & 0xFFFFFFFF, lines, len(peer)) + peer
    crc = zlib.crc32(payload, zlib.crc32(body_head))
    return RECORD_HEADER.pack(RECORD_MAGIC, len(body_head) + len(payload), crc) + body_head, payload


class Record(NamedTuple):
    seq: int
    received_at: int
    lines: int
    peer: str
    payload: bytes | memoryview  # a view into the scanned bytes when scanned with copy=False
    offset: int  # where the record starts in its segment
    end: int  # where the next record starts


def decode_body(body: bytes | memoryview, offset: int, end: int, copy: bool = True) -> Record:
    seq, received_at, lines, peer_len = BODY_HEADER.unpack_from(body)
    peer_end = BODY_HEADER_SIZE + peer_len
    peer = bytes(body[BODY_HEADER_SIZE:peer_end]).decode("utf-8", "replace")
    return Record(seq, received_at, lines, peer, bytes(body[peer_end:]) if copy else body[peer_end:], offset, end)


@dataclass(slots=True)
class ScanResult:
    records: list[Record]
    corrupt_records: int = 0  # CRC mismatches or bad lengths in the middle, skipped
    corrupt_bytes: int = 0
    torn_bytes: int = 0  # an incomplete record at the end
    valid_end: int = SEGMENT_HEADER_SIZE  # offset after the last good record


def scan(data: bytes, start: int = SEGMENT_HEADER_SIZE, copy: bool = True) -> ScanResult:
    """Every intact record in a segment's bytes, resyncing past corruption. ``copy=False``:
    payloads are views into ``data`` (for a count of them, no copy of every payload)."""
    result = ScanResult(records=[], valid_end=start)
    view = memoryview(data)
    pos = start
    size = len(data)
    while pos < size:
        record = _record_at(data, view, pos, size, copy)
        if isinstance(record, Record):
            result.records.append(record)
            pos = result.valid_end = record.end
            continue
        if record == "incomplete" and data.find(RECORD_MAGIC_BYTES, pos + 1) < 0:
            result.torn_bytes = size - pos
            break
        nxt = _next_valid(data, view, pos + 1, size)
        if nxt < 0:
            result.torn_bytes = size - pos  # nothing intact follows: a torn or damaged tail
            break
        result.corrupt_records += 1
        result.corrupt_bytes += nxt - pos
        pos = nxt
    return result


def _record_at(data: bytes, view: memoryview, pos: int, size: int, copy: bool) -> Record | str:
    if pos + RECORD_HEADER_SIZE > size:
        return "incomplete"
    magic, length, crc = RECORD_HEADER.unpack_from(data, pos)
    if magic != RECORD_MAGIC or length < BODY_HEADER_SIZE or length > MAX_BODY:
        return "bad"
    body_start = pos + RECORD_HEADER_SIZE
    end = body_start + length
    if end > size:
        return "incomplete"
    body = view[body_start:end]
    if zlib.crc32(body) != crc:
        return "bad"
    return decode_body(body, pos, end, copy)


def _next_valid(data: bytes, view: memoryview, pos: int, size: int) -> int:
    """Offset of the next magic that starts an intact record, or -1."""
    while True:
        pos = data.find(RECORD_MAGIC_BYTES, pos)
        if pos < 0:
            return -1
        if isinstance(_record_at(data, view, pos, size, False), Record):
            return pos
        pos += 1


def iter_records(data: bytes, start: int = SEGMENT_HEADER_SIZE) -> Iterator[Record]:
    yield from scan(data, start).records


def encode_ledger(acked_seq: int) -> bytes:
    head = LEDGER.pack(LEDGER_MAGIC, LEDGER_VERSION, acked_seq)
    return head + struct.pack("<I", zlib.crc32(head))


def decode_ledger(data: bytes, where: str) -> int:
    if len(data) != LEDGER_SIZE:
        raise FormatError(f"{where}: ledger has {len(data)} bytes, expected {LEDGER_SIZE}")
    magic, version, acked_seq = LEDGER.unpack_from(data)
    (crc,) = struct.unpack_from("<I", data, LEDGER.size)
    # The checksum first: a damaged version field is damage, not another format.
    if zlib.crc32(data[: LEDGER.size]) != crc:
        raise FormatError(f"{where}: ledger checksum mismatch")
    if magic != LEDGER_MAGIC:
        raise FormatError(f"{where}: not an slsfwd spool ledger")
    if version != LEDGER_VERSION:
        raise other_version_error(where, version, LEDGER_VERSION)
    return acked_seq


def encode_ledger_file(acked_seq: int) -> bytes:
    """A whole new ledger file: both slots hold ``acked_seq``."""
    record = encode_ledger(acked_seq)
    return record + bytes(LEDGER_SLOT_OFFSETS[1] - LEDGER_SIZE) + record


class LedgerSlots(NamedTuple):
    acked_seq: int | None  # the largest valid slot's; None: no slot is valid
    newest_slot: int  # which slot holds it
    problems: list[str]  # what is wrong: per damaged or missing slot, and the file's size
    damaged_slots: int  # slots that did not check out, a missing one included


def decode_ledger_file(data: bytes, where: str) -> LedgerSlots:
    """The acknowledged position in a ledger file: the larger valid slot's. A damaged slot
    (an overwrite torn by a power loss, bit rot) or a file of the wrong size (cut short,
    bytes appended) costs only the slots it touches. OtherVersionError if any slot was
    written by another format version."""
    problems = []
    if len(data) == LEDGER_SIZE:
        offsets = LEDGER_SLOT_OFFSETS[:1]  # one slot, as slsfwd wrote it before the two
    else:
        offsets = LEDGER_SLOT_OFFSETS
        if len(data) != LEDGER_FILE_SIZE:
            problems.append(f"{where}: ledger has {len(data)} bytes, expected {LEDGER_FILE_SIZE}")
    values: dict[int, int] = {}
    for index, offset in enumerate(offsets):
        try:
            values[index] = decode_ledger(data[offset:offset + LEDGER_SIZE], f"{where} slot {index}")
        except OtherVersionError:
            raise
        except FormatError as exc:
            problems.append(str(exc))
    damaged = len(offsets) - len(values)
    if not values:
        return LedgerSlots(None, 0, problems, damaged)
    newest = max(values, key=values.__getitem__)
    return LedgerSlots(values[newest], newest, problems, damaged)
