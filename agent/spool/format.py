"""Spool records, segment headers and the ledger as bytes. Pure: no files.

See :mod:`agent.spool` for the format.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterator, NamedTuple

FORMAT_VERSION = 1

SEGMENT_MAGIC = b"SLSFWDSG"
SEGMENT_HEADER = struct.Struct("<8sH6x")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 16

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
    """Written by a slsfwd with another format version: refuse, never misread."""


def _other_version(where: str, version: int) -> FormatError:
    return OtherVersionError(
        f"{where}: spool format version {version}, but this slsfwd reads version {FORMAT_VERSION}; "
        "ship it with a matching slsfwd or move the spool directory away"
    )


def segment_header() -> bytes:
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION)


def check_segment_header(head: bytes, where: str) -> None:
    if len(head) < SEGMENT_HEADER_SIZE:
        raise FormatError(f"{where}: too short for a segment header")
    magic, version = SEGMENT_HEADER.unpack_from(head)
    if magic != SEGMENT_MAGIC:
        raise FormatError(f"{where}: not an slsfwd spool segment")
    if version != FORMAT_VERSION:
        raise _other_version(where, version)


def header_lost(segment: bytes) -> bool:
    """Zeros where the header should be: a power loss between creating a segment and the
    group commit that syncs it (rotation leaves that sync to the group commit)."""
    return segment[:SEGMENT_HEADER_SIZE] == bytes(SEGMENT_HEADER_SIZE)


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
    payload: bytes
    offset: int  # where the record starts in its segment
    end: int  # where the next record starts


def decode_body(body: bytes | memoryview, offset: int, end: int) -> Record:
    seq, received_at, lines, peer_len = BODY_HEADER.unpack_from(body)
    peer_end = BODY_HEADER_SIZE + peer_len
    peer = bytes(body[BODY_HEADER_SIZE:peer_end]).decode("utf-8", "replace")
    return Record(seq, received_at, lines, peer, bytes(body[peer_end:]), offset, end)


@dataclass(slots=True)
class ScanResult:
    records: list[Record]
    corrupt_records: int = 0  # CRC mismatches or bad lengths in the middle, skipped
    corrupt_bytes: int = 0
    torn_bytes: int = 0  # an incomplete record at the end
    valid_end: int = SEGMENT_HEADER_SIZE  # offset after the last good record


def scan(data: bytes, start: int = SEGMENT_HEADER_SIZE) -> ScanResult:
    """Every intact record in a segment's bytes, resyncing past corruption."""
    result = ScanResult(records=[], valid_end=start)
    view = memoryview(data)
    pos = start
    size = len(data)
    while pos < size:
        record = _record_at(data, view, pos, size)
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


def _record_at(data: bytes, view: memoryview, pos: int, size: int) -> Record | str:
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
    return decode_body(body, pos, end)


def _next_valid(data: bytes, view: memoryview, pos: int, size: int) -> int:
    """Offset of the next magic that starts an intact record, or -1."""
    while True:
        pos = data.find(RECORD_MAGIC_BYTES, pos)
        if pos < 0:
            return -1
        if isinstance(_record_at(data, view, pos, size), Record):
            return pos
        pos += 1


def iter_records(data: bytes, start: int = SEGMENT_HEADER_SIZE) -> Iterator[Record]:
    yield from scan(data, start).records


def encode_ledger(acked_seq: int) -> bytes:
    head = LEDGER.pack(LEDGER_MAGIC, FORMAT_VERSION, acked_seq)
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
    if version != FORMAT_VERSION:
        raise _other_version(where, version)
    return acked_seq


def encode_ledger_file(acked_seq: int) -> bytes:
    """A whole new ledger file: both slots hold ``acked_seq``."""
    record = encode_ledger(acked_seq)
    return record + bytes(LEDGER_SLOT_OFFSETS[1] - LEDGER_SIZE) + record


class LedgerSlots(NamedTuple):
    acked_seq: int  # the largest valid slot's
    newest_slot: int  # which slot holds it
    problems: list[str]  # what is wrong with the other slot, if anything


def decode_ledger_file(data: bytes, where: str) -> LedgerSlots:
    """The acknowledged position in a ledger file. One damaged slot is a torn overwrite
    (reported in ``problems``); FormatError if no slot is valid, OtherVersionError if any
    slot was written by another format version."""
    if len(data) == LEDGER_FILE_SIZE:
        slots = [data[offset:offset + LEDGER_SIZE] for offset in LEDGER_SLOT_OFFSETS]
    elif len(data) == LEDGER_SIZE:
        slots = [data]
    else:
        raise FormatError(f"{where}: ledger has {len(data)} bytes, expected {LEDGER_FILE_SIZE} (or {LEDGER_SIZE})")
    values: dict[int, int] = {}
    problems = []
    for index, slot in enumerate(slots):
        try:
            values[index] = decode_ledger(slot, f"{where} slot {index}")
        except OtherVersionError:
            raise
        except FormatError as exc:
            problems.append(str(exc))
    if not values:
        raise FormatError("; ".join(problems))
    newest = max(values, key=values.__getitem__)
    return LedgerSlots(values[newest], newest, problems)
