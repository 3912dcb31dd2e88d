"""agent.encode: hand-written LogGroup protobuf, checked against the SDK's classes."""

from __future__ import annotations

import lz4.block
import pytest
from aliyun.log.proto import LogGroup, LogGroupRaw
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pipeline.encode import (
    LOG_ENTRY_HEADERS,
    SMALL_LENGTH_LIMIT,
    compress,
    content,
    encode_log,
    group_trailer,
    key_prefix,
    length_prefix,
    log_entry,
    log_group,
    time_field,
    value_framing_table,
    varint,
)


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**21 - 1, b"\xff\xff\x7f"),
        (2**21, b"\x80\x80\x80\x01"),
        (1795591573, b"\x95\x9b\x9a\xd8\x06"),
        (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_varint(n, expected):
    assert varint(n) == expected
    assert length_prefix(n) == expected  # the lookup table and the slow path agree
    assert _VarintBytes(n) == expected  # protobuf's own encoder agrees with the table


def _decode_varint(data: bytes) -> tuple[int, int]:
    value = shift = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i + 1
    raise AssertionError("truncated varint")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(n):
    encoded = varint(n)
    assert _decode_varint(encoded) == (n, len(encoded))
    if n < 2**20:
        assert length_prefix(n) == encoded


def test_length_prefix_table_boundary():
    limit = SMALL_LENGTH_LIMIT
    for n in (limit - 2, limit - 1, limit, limit + 1, 16382, 16383, 16384, 16385, 10 * 1024 * 1024):
        assert length_prefix(n) == varint(n)
        assert _decode_varint(length_prefix(n))[0] == n


def test_framing_tables_hold_what_the_general_functions_build():
    prefix = key_prefix("msg")
    framing = value_framing_table(prefix)
    assert len(framing) == len(LOG_ENTRY_HEADERS) == SMALL_LENGTH_LIMIT
    for n in (0, 1, 120, 127, 128, 129, SMALL_LENGTH_LIMIT - 1):
        value = b"v" * n
        assert framing[n] + value == content(prefix, value)
        assert LOG_ENTRY_HEADERS[n] + value == log_entry(value)


# ---------------------------------------------------------------- LogGroup round trip

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\x00", "a\x00b", "😀🚀", "日本語", "\ufeff", "line1\nline2", " spaced ", "x" * 200]
)
_KEY = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20)
_LOG = st.tuples(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(st.tuples(_KEY, _TEXT), max_size=8),
)


def _decoded(group, raw_values: bool):
    logs = []
    for entry in group.Logs:
        pairs = [(c.Key, c.Value.decode("utf-8") if raw_values else c.Value) for c in entry.Contents]
        logs.append((entry.Time, pairs))
    return logs


def _build(logs, topic, source, tags) -> bytes:
    return log_group([encode_log(t, [(k, v.encode("utf-8")) for k, v in contents]) for t, contents in logs], topic, source, tags)


@settings(max_examples=60, deadline=None)
@given(
    logs=st.lists(_LOG, max_size=10),
    topic=_TEXT,
    source=_TEXT,
    tags=st.lists(st.tuples(_KEY, _TEXT), max_size=4),
)
def test_log_group_decodes_with_the_sdk(logs, topic, source, tags):
    raw = _build(logs, topic, source, tags)
    for cls, raw_values in ((LogGroupRaw, True), (LogGroup, False)):
        group = cls()
        group.ParseFromString(raw)
        assert _decoded(group, raw_values) == [(t, list(contents)) for t, contents in logs]
        assert group.Topic == topic
        assert group.Source == source
        assert [(tag.Key, tag.Value) for tag in group.LogTags] == list(tags)
        assert not group.HasField("MachineUUID") and not group.HasField("Reserved")
        for entry in group.Logs:
            assert not entry.HasField("Time_ns")
        group.SerializeToString()  # required fields all set


def test_log_group_matches_the_sdks_own_encoding():
    # Same group built with the SDK's classes: equal as messages (field order may differ).
    contents = [("hostname", "web-01"), ("msg", "héllo 😀"), ("empty", "")]
    raw = b"".join(
        [encode_log(1795591573, [(k, v.encode()) for k, v in contents]), encode_log(1795591574, [])]
    ) + group_trailer("my-topic", "10.0.0.1", [("__hostname__", "web-01")])
    sdk = LogGroup()
    log = sdk.Logs.add()
    log.Time = 1795591573
    for k, v in contents:
        c = log.Contents.add()
        c.Key, c.Value = k, v
    sdk.Logs.add().Time = 1795591574
    sdk.Topic = "my-topic"
    sdk.Source = "10.0.0.1"
    tag = sdk.LogTags.add()
    tag.Key, tag.Value = "__hostname__", "web-01"
    ours = LogGroup()
    ours.ParseFromString(raw)
    assert ours == sdk
    # With the SDK's field order (Logs, Topic, Source, LogTags) the bytes are the same too.
    assert raw == sdk.SerializeToString()


def test_empty_topic_and_source_are_omitted():
    assert group_trailer("", "", []) == b""
    group = LogGroupRaw()
    group.ParseFromString(encode_log(5, [("k", b"v")]))
    assert not group.HasField("Topic") and not group.HasField("Source")


def test_building_blocks_compose_to_encode_log():
    prefix = key_prefix("app-name")
    body = time_field(1795591573) + content(prefix, b"todo-list") + content(key_prefix("msg"), b"x" * 20000)
    assert log_entry(body) == encode_log(1795591573, [("app-name", b"todo-list"), ("msg", b"x" * 20000)])
    group = LogGroupRaw()
    group.ParseFromString(log_entry(body))
    assert group.Logs[0].Contents[1].Value == b"x" * 20000


def test_large_value_over_the_varint_table():
    value = "é".encode() * 100_000  # 200,000 bytes: a 3-byte length prefix
    group = LogGroupRaw()
    group.ParseFromString(encode_log(1, [("msg", value)]))
    assert group.Logs[0].Contents[0].Value == value


# ---------------------------------------------------------------- LZ4


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"x",
        b"0.1 sys_tag " * 1000,
        bytes(range(256)) * 40,
        encode_log(1795591573, [("msg", b"hello " * 500)]) + group_trailer("t", "10.0.0.1", []),
    ],
    ids=["empty", "one", "repetitive", "binary", "loggroup"],
)
def test_compress_is_a_raw_lz4_block(raw):
    packed = compress(raw)
    assert lz4.block.decompress(packed, uncompressed_size=len(raw)) == raw
    if raw:
        # No 4-byte size prefix: decompressing as "store_size" format must not give raw back.
        try:
            prefixed = lz4.block.decompress(packed)
        except (lz4.block.LZ4BlockError, ValueError):  # corrupt, or a nonsense size: what we expect
            prefixed = None
        assert prefixed != raw


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000))
def test_compress_round_trip(raw):
    assert lz4.block.decompress(compress(raw), uncompressed_size=len(raw)) == raw

