"""Logs -> SLS LogGroup protobuf bytes -> LZ4. Pure: no sockets, no clocks.

Hand-written because building the SDK's message objects costs about 5 us a
log; here a log is a few ``bytes`` concatenations with precomputed key bytes.
The schema (proto2, as shipped in the SDK's ``aliyun.log.proto``)::

    LogGroup { repeated Log Logs = 1; optional string Reserved = 2; optional string Topic = 3;
               optional string Source = 4; optional string MachineUUID = 5; repeated LogTag LogTags = 6; }
    Log      { required uint32 Time = 1; repeated Content Contents = 2; optional fixed32 Time_ns = 4; }
    Content  { required string Key = 1; required string Value = 2; }
    LogTag   { required string Key = 1; required string Value = 2; }

Field order inside a message does not matter to a protobuf parser, so a
LogGroup is simply its encoded Logs followed by Topic, Source and LogTags.
Tests decode the output with the SDK's ``LogGroupRaw`` to prove it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import lz4.block

# Tag bytes: (field_number << 3) | wire_type
_LOG_GROUP_LOGS = b"\x0a"  # 1, length-delimited
_LOG_GROUP_TOPIC = b"\x1a"  # 3
_LOG_GROUP_SOURCE = b"\x22"  # 4
_LOG_GROUP_TAGS = b"\x32"  # 6
_LOG_TIME = b"\x08"  # 1, varint
_LOG_CONTENTS = b"\x12"  # 2, length-delimited
_PAIR_KEY = b"\x0a"  # Content.Key / LogTag.Key = 1
_PAIR_VALUE = b"\x12"  # Content.Value / LogTag.Value = 2


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths below this are looked up in tables: the hot path frames a line's message and its
# log with one index each (value_framing_table, LOG_ENTRY_HEADERS); a longer message or log
# takes the general functions below, about 1.7 us more a line. Four tables have this many
# entries (here and in transform), each a small object of 40-50 bytes, resident for good: at
# 4096 they take 0.6 MB (at 16384, 3.2 MB). Of a log-normal corpus (median 250 B), 1.3 % of
# the lines were past them at 2048, which cost the hot path 1.5 % of its instructions; at 4096,
# 0.16 % and 0.3 %.
SMALL_LENGTH_LIMIT = 4096

_SMALL_VARINTS: tuple[bytes, ...] = tuple(varint(n) for n in range(SMALL_LENGTH_LIMIT))


def length_prefix(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < SMALL_LENGTH_LIMIT else varint(n)


def value_framing_table(prefix: bytes) -> tuple[bytes, ...]:
    """For every value length n below SMALL_LENGTH_LIMIT: the bytes of one Contents
    entry that precede its value (tag, entry length, key, value tag, value length).
    The hot path then frames a message with one tuple index."""
    return tuple(
        _LOG_CONTENTS + length_prefix(len(prefix) + len(length_prefix(n)) + n) + prefix + length_prefix(n)
        for n in range(SMALL_LENGTH_LIMIT)
    )


# ``LogGroup.Logs`` tag plus the length, for every body length below SMALL_LENGTH_LIMIT.
LOG_ENTRY_HEADERS: tuple[bytes, ...] = tuple(_LOG_GROUP_LOGS + length_prefix(n) for n in range(SMALL_LENGTH_LIMIT))


def key_prefix(key: str) -> bytes:
    """Precomputed ``Key`` field plus the ``Value`` tag of a Content."""
    raw = key.encode("utf-8")
    return _PAIR_KEY + length_prefix(len(raw)) + raw + _PAIR_VALUE


def content(prefix: bytes, value: bytes) -> bytes:
    """One encoded ``Contents`` entry from :func:`key_prefix` and a UTF-8 value."""
    inner = prefix + length_prefix(len(value)) + value
    return _LOG_CONTENTS + length_prefix(len(inner)) + inner


def time_field(unix_time: int) -> bytes:
    return _LOG_TIME + varint(unix_time)


def log_entry(body: bytes) -> bytes:
    """Wrap a Log body (time field + contents) as one ``LogGroup.Logs`` entry."""
    return _LOG_GROUP_LOGS + length_prefix(len(body)) + body


def encode_log(unix_time: int, contents: Iterable[tuple[str, bytes]]) -> bytes:
    """Readable reference for one log; the hot path builds the same bytes from caches."""
    body = time_field(unix_time) + b"".join(content(key_prefix(k), v) for k, v in contents)
    return log_entry(body)


def group_trailer(topic: str, source: str, tags: Sequence[tuple[str, str]]) -> bytes:
    """Topic, Source and LogTags: the part of a LogGroup shared by all its logs."""
    out = []
    if topic:
        raw = topic.encode("utf-8")
        out.append(_LOG_GROUP_TOPIC + length_prefix(len(raw)) + raw)
    if source:
        raw = source.encode("utf-8")
        out.append(_LOG_GROUP_SOURCE + length_prefix(len(raw)) + raw)
    for key, value in tags:
        pair = key_prefix(key)[:-1] + _PAIR_VALUE + _str_with_length(value)
        out.append(_LOG_GROUP_TAGS + length_prefix(len(pair)) + pair)
    return b"".join(out)


def log_group(logs: list[bytes], topic: str, source: str, tags: Sequence[tuple[str, str]]) -> bytes:
    """A raw LogGroup from encoded logs: the batch is copied once, with its trailer."""
    return b"".join([*logs, group_trailer(topic, source, tags)])


def _str_with_length(text: str) -> bytes:
    raw = text.encode("utf-8")
    return length_prefix(len(raw)) + raw


def compress(raw: bytes) -> bytes:
    """LZ4 raw block without a size prefix: what ``x-log-compresstype: lz4`` means."""
    return lz4.block.compress(raw, store_size=False)
