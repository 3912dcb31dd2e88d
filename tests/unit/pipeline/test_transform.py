"""LineTransformer + Batcher: queue chunks -> encoded logs in closed batches.

The fast path must encode exactly what the readable reference
(:meth:`LineTransformer.encode_line`, built on :mod:`agent.parse`) encodes.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from aliyun.log.proto import LogGroupRaw
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pipeline.batch import Batch, Batcher, Destination, Ticket
from agent.pipeline.encode import SMALL_LENGTH_LIMIT
from agent.pipeline.parse import build_format_table, make_valid_utf8, peer_source
from agent.pipeline.transform import LineTransformer, Router
from tests.support import shared_data

SAMPLE = shared_data.read_bytes(shared_data.CAPTURED_SAMPLES)
SAMPLE_LINES = SAMPLE.split(b"\n")[:-1]

NOW = 1795591600  # the sample's timestamps are 1795591573..1795591634
DAY = 86400
HOST_IP = "10.0.0.1"
DEFAULT = Destination("p", "ls", "")
NGINX = Destination("p", "nginx-store", "")


def line(ts=NOW, ip="127.0.0.1", msg="hello", tag="sys_tag", app="app", version="0.1", pv="0") -> bytes:
    return f"{version} {tag} {ts} {ip} web-01 user.notice {pv} {app} 42 -  {msg}".encode()


class Harness:
    def __init__(self, *, max_logs=4096, max_bytes=512 * 1024, user_formats=None, on_close=None):
        self.closed: list[Batch] = []
        self.done: list[int] = []
        self.batcher = Batcher(
            max_logs=max_logs,
            max_bytes=max_bytes,
            linger=2.0,
            on_close=on_close or self.closed.append,
            clock=lambda: NOW,
        )
        self.transformer = LineTransformer(
            formats=build_format_table(user_formats or {}),
            router=Router(DEFAULT, {"nginx_tag": NGINX}),
            host_ip=HOST_IP,
            batcher=self.batcher,
            clock=lambda: NOW,
        )

    def process(self, payload: bytes, *, peer="127.0.0.1", received_at=NOW, seq=0) -> Ticket:
        ticket = Ticket(seq, self.done.append)
        self.transformer.process(payload, received_at, peer, ticket)
        return ticket

    def run(self, payload: bytes, **kwargs) -> list[Batch]:
        self.process(payload, **kwargs)
        self.batcher.close_all()
        return self.closed

    @property
    def stats(self):
        return self.transformer.stats


def decode(batch_or_logs) -> list[tuple[int, list[tuple[str, bytes]]]]:
    logs = batch_or_logs.logs if isinstance(batch_or_logs, Batch) else batch_or_logs
    group = LogGroupRaw()
    group.ParseFromString(b"".join(logs))
    return [(entry.Time, [(c.Key, c.Value) for c in entry.Contents]) for entry in group.Logs]


def by_key(batches: list[Batch]) -> dict[tuple[Destination, str], list[bytes]]:
    out: dict[tuple[Destination, str], list[bytes]] = defaultdict(list)
    for batch in batches:
        out[(batch.dest, batch.source)].extend(batch.logs)
    return dict(out)


def reference(lines: list[bytes], *, peer="127.0.0.1", received_at=NOW, user_formats=None):
    """What the readable reference makes of each line (UTF-8 repaired first)."""
    ref = Harness(user_formats=user_formats).transformer
    out: dict[tuple[Destination, str], list[bytes]] = defaultdict(list)
    for raw in lines:
        if not raw:
            continue
        fixed, _ = make_valid_utf8(raw)
        dest, source, log = ref.encode_line(fixed, received_at, NOW, peer_source(peer, HOST_IP))
        out[(dest, source)].append(log)
    return dict(out), ref.stats


# ---------------------------------------------------------------- fast path == reference


@pytest.mark.parametrize("index", range(50))
def test_each_sample_line_matches_the_reference(index):
    raw = SAMPLE_LINES[index]
    harness = Harness()
    batches = harness.run(raw + b"\n")
    expected, _ = reference([raw])
    got = by_key(batches)
    assert got == expected
    # and it decodes as a log with the seven rsyslog keys
    ((_, logs),) = got.items()
    ((unix_time, contents),) = decode(logs)
    assert unix_time == int(raw.split(b" ")[2])
    assert [k for k, _ in contents] == ["hostname", "pri-text", "protocol-version", "app-name", "procid", "msgid", "msg"]


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.0.0.7"])
def test_whole_sample_in_one_chunk_matches_the_reference(peer):
    harness = Harness()
    batches = harness.run(SAMPLE, peer=peer)
    expected, ref_stats = reference(SAMPLE_LINES, peer=peer)
    assert by_key(batches) == expected
    assert harness.stats.lines == 50
    assert harness.stats.parse_errors == {} == ref_stats.parse_errors
    assert harness.stats.invalid_utf8_lines == 1
    loopback_source = HOST_IP if peer == "127.0.0.1" else peer
    assert {source for _, source in expected} == {loopback_source, "127.0.0.2", "127.0.0.3"}


def test_sample_message_fields_end_to_end():
    harness = Harness()
    batches = harness.run(SAMPLE_LINES[0] + b"\n" + SAMPLE_LINES[47] + b"\n" + SAMPLE_LINES[40] + b"\n")
    logs = {b.source: decode(b) for b in batches}
    assert logs[HOST_IP] == [
        (
            1795591573,
            [
                ("hostname", b"vm"),
                ("pri-text", b"user.notice"),
                ("protocol-version", b"0"),
                ("app-name", b"root"),
                ("procid", b"-"),
                ("msgid", b"-"),
                ("msg", b"plain message one"),
            ],
        ),
        (1795591628, [("hostname", b"vm"), ("pri-text", b"user.notice"), ("protocol-version", b"0"),
                      ("app-name", b"empty"), ("procid", b"-"), ("msgid", b"-"), ("msg", b" ")]),
    ]
    assert logs["127.0.0.2"][0][1][-1] == ("msg", b"   five spaces before, 2 after  ")


_FIELD = st.sampled_from([b"", b"-", b"0", b"1", b"vm", b"user.notice", b"local0.err<133>", b"todo-list", b"\xff"]) | st.binary(
    max_size=6
).map(lambda b: b.replace(b" ", b"_").replace(b"\n", b"_"))
_GEN_LINE = st.one_of(
    st.tuples(
        st.sampled_from([b"0.1", b"0.1", b"0.1", b"2.1", b"9.9", b""]),
        st.sampled_from([b"sys_tag", b"nginx_tag", b"other", b""]),
        st.sampled_from(
            [str(NOW).encode(), str(NOW - 5).encode(), str(NOW - 30 * DAY).encode(), str(NOW + DAY).encode(), b"abc", b"",
             b"0", b"99999999999999999999"]
        ),
        st.sampled_from([b"127.0.0.1", b"::1", b"127.0.0.2", b"10.1.1.1", b""]),
        st.lists(_FIELD, min_size=0, max_size=8),
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    ).map(lambda t: b" ".join([t[0], t[1], t[2], t[3], *t[4], t[5]])),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=80, deadline=None)
@given(lines=st.lists(_GEN_LINE, max_size=25), peer=st.sampled_from(["127.0.0.1", "::1", "10.0.0.7"]))
def test_generated_lines_match_the_reference(lines, peer):
    formats = {"2.1": ("level", "method")}
    harness = Harness(user_formats=formats)
    batches = harness.run(b"".join(raw + b"\n" for raw in lines), peer=peer)
    expected, ref_stats = reference(lines, peer=peer, user_formats=formats)
    assert by_key(batches) == expected
    assert harness.stats.parse_errors == ref_stats.parse_errors
    assert harness.stats.replaced_times == ref_stats.replaced_times
    assert harness.stats.empty_lines == sum(1 for raw in lines if not raw)
    for batch in batches:
        for _, contents in decode(batch):
            for _, value in contents:
                value.decode("utf-8")  # SLS would answer InvalidEncoding otherwise


# Few values, so that "-" then "" (a " -  " before msgid) and protocol 0 (its msg loses a space) are common.
_CUT_TOKEN = st.sampled_from([b"", b"-", b"0", b"vm"])
_CUT_LINE = st.tuples(
    st.sampled_from([b"0.1", b"0.1", b"0.1", b"2.1"]),
    st.sampled_from([str(NOW).encode(), str(NOW - 1).encode(), str(NOW - 30 * DAY).encode()]),
    st.sampled_from([b"127.0.0.1", b"10.0.0.2"]),
    st.one_of(st.lists(_CUT_TOKEN, min_size=6, max_size=6), st.lists(_CUT_TOKEN | st.just(b"\xff"), max_size=8)),
    st.sampled_from([b"", b" ", b"  ", b"  "]),
    st.lists(st.sampled_from([b" ", b"-", b"x", b" -  ", b"\r", b"\xff"]), max_size=6).map(b"".join),
).map(lambda t: b" ".join([t[0], b"sys_tag", t[1], t[2], *t[3]]) + t[4] + t[5])


@settings(max_examples=200, deadline=None)
@given(pool=st.lists(_CUT_LINE, min_size=1, max_size=5), picks=st.lists(st.integers(0, 4), min_size=1, max_size=30),
       cut=st.integers(0, 30))
def test_repeated_lines_around_the_nil_msgid_cut_match_the_reference(pool, picks, cut):
    """Lines drawn from a small pool, so that keys repeat and the cut's cache is hit, in two chunks."""
    lines = [pool[i % len(pool)] for i in picks]
    harness = Harness(user_formats={"2.1": ("level", "method")})
    harness.process(b"".join(raw + b"\n" for raw in lines[:cut]), seq=0)
    harness.process(b"".join(raw + b"\n" for raw in lines[cut:]), seq=1)
    harness.batcher.close_all()
    expected, ref_stats = reference(lines, user_formats={"2.1": ("level", "method")})
    assert by_key(harness.closed) == expected
    assert harness.stats.parse_errors == ref_stats.parse_errors


def test_user_format_overriding_0_1_is_used_by_the_fast_path():
    formats = {"0.1": ("level", "method")}
    raw = line()
    harness = Harness(user_formats=formats)
    batches = harness.run(raw + b"\n")
    expected, _ = reference([raw], user_formats=formats)
    assert by_key(batches) == expected


# ---------------------------------------------------------------- the cut at " -  "

_T = str(NOW).encode()
# Each case: lines sent twice (once to fill the caches, once to hit them), with one chunk per line
# and all of them in one chunk; the fast path must still encode what the reference encodes.
_CUT_CASES = {
    "usual": [line(msg="hello"), line(msg="world")],
    "empty msg after the kept space": [line(msg=""), line(msg="x")],
    "msg of spaces": [line(msg="   "), line(msg=" - ")],
    "protocol 1 keeps the space": [line(pv="1", msg=" leading"), line(pv="1", msg="x")],
    "procid '-' and an empty msgid": [b"0.1 sys_tag " + _T + b" 127.0.0.1 vm user.info 0 app -  msg", line()],
    "empty procid": [b"0.1 sys_tag " + _T + b" 127.0.0.1 vm user.info 0 app  -  msg"],
    "msgid other than '-'": [b"0.1 sys_tag " + _T + b" 127.0.0.1 vm user.info 1 app 7 ID47 a -  b -  c"],
    "' -  ' after the hostname": [b"0.1 sys_tag " + _T + b" 127.0.0.1 -  0 app 7 -  msg", line()],
    "' -  ' only in the message": [b"0.1 sys_tag " + _T + b" 127.0.0.1 vm user.info 1 app 7 - x -  y"],
    "a cached key alone as a line": [line(msg="hello"), line(msg="hello").partition(b" -  ")[0]],
    "a cached key and ' -' as a line": [line(msg="hello"), line(msg="hello").partition(b" -  ")[0] + b" -"],
    "a cached key, then bad UTF-8 in msg": [line(msg="ok"), line(msg="ok") + b"\xff\xfe"],
    "a cached key, then a newer time": [line(msg="a"), line(ts=NOW + 1, msg="b")],
    "time out of window, twice": [line(ts=NOW - 30 * DAY, msg="old"), line(ts=NOW - 30 * DAY, msg="older")],
    "unknown version with a nil msgid": [line(version="9.9", msg="v"), line(version="9.9", msg="w")],
    "routed tag": [line(tag="nginx_tag", msg="n"), line(msg="s")],
}


@pytest.mark.parametrize("lines", list(_CUT_CASES.values()), ids=list(_CUT_CASES))
@pytest.mark.parametrize("one_chunk", [True, False], ids=["one_chunk", "chunk_per_line"])
def test_nil_msgid_cut_encodes_what_the_reference_encodes(lines, one_chunk):
    harness = Harness()
    sent = lines + lines
    if one_chunk:
        harness.process(b"".join(raw + b"\n" for raw in sent))
    else:
        for seq, raw in enumerate(sent):
            harness.process(raw + b"\n", seq=seq)
    harness.batcher.close_all()
    expected, ref_stats = reference(sent)
    assert by_key(harness.closed) == expected
    assert harness.stats.parse_errors == ref_stats.parse_errors
    assert harness.stats.replaced_times == ref_stats.replaced_times


_LIMIT = SMALL_LENGTH_LIMIT


# Around the tables' end for the whole log (line()'s other fields and the framing take 128
# bytes of it) and for the message alone, and where length varints grow to three bytes.
@pytest.mark.parametrize("msg_len", [127, 128, _LIMIT - 200, _LIMIT - 129, _LIMIT - 128, _LIMIT - 1, _LIMIT, _LIMIT + 1,
                                     16300, 16383 - 80, 16383, 16384, 20000, 300_000])
def test_long_messages_around_the_length_tables_match_the_reference(msg_len):
    """Messages and logs of SMALL_LENGTH_LIMIT bytes or more are past the framing tables: the general encoder."""
    raw = line(msg="m" * msg_len)
    harness = Harness()
    harness.run(raw + b"\n" + raw + b"\n")
    expected, _ = reference([raw, raw])
    assert by_key(harness.closed) == expected
    assert [dict(c)["msg"] for b in harness.closed for _, c in decode(b)] == [b"m" * msg_len] * 2


def test_nil_msgid_cut_keeps_a_protocol_1_space_however_often_it_is_seen():
    harness = Harness()
    harness.run(b"".join(line(pv="1", msg="kept") + b"\n" for _ in range(5)))  # "... 42 -  kept"
    assert [dict(c)["msg"] for b in harness.closed for _, c in decode(b)] == [b" kept"] * 5


def test_a_bare_cr_inside_a_message_is_data():
    harness = Harness()
    (batch,) = harness.run(line(msg="before\rafter") + b"\n" + line(msg="next") + b"\n")
    assert [dict(c)["msg"] for _, c in decode(batch)] == [b"before\rafter", b"next"]


# ---------------------------------------------------------------- routing and sources


def test_routing_by_tag():
    harness = Harness()
    batches = harness.run(
        line(tag="nginx_tag", msg="a") + b"\n" + line(tag="sys_tag", msg="b") + b"\n"
        + line(tag="unknown_tag", msg="c") + b"\n" + line(tag="nginx_tag", msg="d") + b"\n"
    )
    got = {dest: [c[-1][1] for _, c in decode(logs)] for (dest, _), logs in by_key(batches).items()}
    assert got == {NGINX: [b"a", b"d"], DEFAULT: [b"b", b"c"]}


@pytest.mark.parametrize(
    "peer, line_ip, expected_source",
    [
        ("127.0.0.1", "127.0.0.1", HOST_IP),
        ("::1", "127.0.0.1", HOST_IP),
        ("127.0.0.1", "::1", HOST_IP),
        ("10.0.0.7", "127.0.0.1", "10.0.0.7"),
        ("127.0.0.1", "127.0.0.2", "127.0.0.2"),
        ("10.0.0.7", "127.0.0.2", "127.0.0.2"),
        ("127.0.0.1", "192.0.2.9", "192.0.2.9"),
    ],
)
def test_source_of_a_line(peer, line_ip, expected_source):
    harness = Harness()
    (batch,) = harness.run(line(ip=line_ip) + b"\n", peer=peer)
    assert batch.source == expected_source
    assert batch.dest == DEFAULT


def test_lines_are_grouped_by_source_in_order():
    harness = Harness()
    payload = b"".join(
        line(ip=ip, msg=str(i)) + b"\n" for i, ip in enumerate(["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2", "127.0.0.1"])
    )
    batches = harness.run(payload)
    got = {source: [c[-1][1] for _, c in decode(logs)] for (_, source), logs in by_key(batches).items()}
    assert got == {HOST_IP: [b"0", b"2", b"4"], "127.0.0.2": [b"1", b"3"]}
    assert len(batches) == 2


# ---------------------------------------------------------------- bad lines, UTF-8, time


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x00\x01 random garbage \x7f", "unknown_version"),
        (line(version="9.9"), "unknown_version"),
        (line(ts="17955x1600"), "bad_timestamp"),
        (line(ts="-5"), "bad_timestamp"),
        (b"0.1 sys_tag 1795591600 127.0.0.1 vm", "too_few_fields"),
    ],
)
@pytest.mark.parametrize("peer", ["127.0.0.1", "10.0.0.7"])
def test_bad_line_is_shipped_whole_with_a_parse_error(raw, reason, peer):
    harness = Harness()
    received_at = NOW - 3
    (batch,) = harness.run(raw + b"\n", peer=peer, received_at=received_at)
    assert decode(batch) == [(received_at, [("msg", raw), ("parse-error", reason.encode())])]
    assert batch.dest == DEFAULT
    assert batch.source == (HOST_IP if peer == "127.0.0.1" else peer)
    assert harness.stats.parse_errors == {reason: 1}


def test_parse_errors_are_counted_by_reason():
    harness = Harness()
    harness.run(b"junk\n" + line() + b"\n" + line(version="7") + b"\n" + line(ts="x") + b"\n")
    assert harness.stats.parse_errors == {"unknown_version": 2, "bad_timestamp": 1}
    assert harness.stats.lines == 4


def test_bad_line_with_out_of_window_receive_time_gets_now():
    harness = Harness()
    (batch,) = harness.run(b"junk\n", received_at=NOW - 30 * DAY)
    assert decode(batch)[0][0] == NOW


def test_invalid_utf8_is_repaired_and_counted():
    harness = Harness()
    raw = b"0.1 sys_tag 1795591600 127.0.0.1 h\xc3st user.notice 1 app - - bad \xff\xfe here"
    (batch,) = harness.run(raw + b"\n" + line(msg="fine") + b"\n")
    (first, second) = decode(batch)
    assert dict(first[1])["msg"] == b"bad \\xff\\xfe here"
    assert dict(first[1])["hostname"] == b"h\\xc3st"
    assert dict(second[1])["msg"] == b"fine"
    assert harness.stats.invalid_utf8_lines == 1


@pytest.mark.parametrize("field", range(1, 11))
def test_invalid_utf8_in_any_field_is_repaired_like_the_readable_path(field):
    """The fast path checks the prefix's UTF-8 only when a sub-cache misses: a bad byte in
    any field must still give the readable path's repaired log, also when the same line's
    valid twin was cached first."""
    harness = Harness()
    parts = line().split(b" ", 10)
    parts[field] = parts[field] + b"\xff"
    bad = b" ".join(parts)
    harness.run(line() + b"\n")  # the valid twin fills every cache first
    harness.closed.clear()
    (batch,) = harness.run(bad + b"\n" + bad + b"\n")
    logs = decode(batch)
    reference = decode([harness.transformer.encode_line(make_valid_utf8(bad)[0], NOW, NOW, "127.0.0.1")[2]])
    assert logs[0] == logs[1] == reference[0]
    assert harness.stats.invalid_utf8_lines == 2
    assert all(b"\xff" not in value for _, contents in logs for _, value in contents)


def test_valid_non_ascii_is_not_counted_as_repaired():
    harness = Harness()
    (batch,) = harness.run(line(msg="日本語 😀 äöü") + b"\n")
    assert dict(decode(batch)[0][1])["msg"] == "日本語 😀 äöü".encode()
    assert harness.stats.invalid_utf8_lines == 0


@pytest.mark.parametrize("line_time", [NOW - 30 * DAY, NOW + DAY, 0, 99999999999])
def test_out_of_window_time_is_replaced_and_kept_as_orig_time(line_time):
    harness = Harness()
    received_at = NOW - 2
    (batch,) = harness.run(line(ts=line_time, msg="old") + b"\n", received_at=received_at)
    ((unix_time, contents),) = decode(batch)
    assert unix_time == received_at
    assert contents[-2:] == [("msg", b"old"), ("orig-time", str(line_time).encode())]
    assert harness.stats.replaced_times == 1
    assert harness.stats.parse_errors == {}


def test_in_window_time_is_kept_without_orig_time():
    harness = Harness()
    (batch,) = harness.run(line(ts=NOW - 6 * DAY) + b"\n", received_at=NOW)
    ((unix_time, contents),) = decode(batch)
    assert unix_time == NOW - 6 * DAY
    assert "orig-time" not in dict(contents)
    assert harness.stats.replaced_times == 0


def test_empty_lines_are_ignored():
    harness = Harness()
    batches = harness.run(b"\n\n" + line(msg="only") + b"\n\n")
    assert [c[-1][1] for b in batches for _, c in decode(b)] == [b"only"]
    assert harness.stats.empty_lines == 3


def test_chunk_of_only_empty_lines_makes_no_batch():
    harness = Harness()
    assert harness.run(b"\n\n\n") == []


# ---------------------------------------------------------------- batch limits


@pytest.mark.parametrize("slow", [False, True], ids=["fast_path", "slow_path"])
def test_batches_close_at_max_logs(slow):
    harness = Harness(max_logs=3)
    ts = NOW - 30 * DAY if slow else NOW  # a replaced time takes the slow path
    harness.process(b"".join(line(ts=ts, msg=str(i)) + b"\n" for i in range(10)))
    assert [len(b) for b in harness.closed] == [3, 3, 3]  # closed as soon as full
    harness.batcher.close_all()
    assert [len(b) for b in harness.closed] == [3, 3, 3, 1]
    msgs = [dict(c)["msg"] for b in harness.closed for _, c in decode(b)]
    assert msgs == [str(i).encode() for i in range(10)]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=40),
    max_bytes=st.integers(min_value=200, max_value=1500),
    slow_every=st.integers(min_value=0, max_value=5),
)
def test_batches_close_before_exceeding_max_bytes(sizes, max_bytes, slow_every):
    harness = Harness(max_bytes=max_bytes)
    lines = [
        line(msg="m" * size, ts=NOW - 30 * DAY if slow_every and i % slow_every == 0 else NOW) for i, size in enumerate(sizes)
    ]
    harness.run(b"".join(raw + b"\n" for raw in lines))
    batches = harness.closed
    assert sum(len(b) for b in batches) == len(lines)
    for i, batch in enumerate(batches):
        assert batch.raw_bytes == sum(len(log) for log in batch.logs)
        assert batch.raw_bytes <= max_bytes or len(batch) == 1
        if i + 1 < len(batches):
            # not closed early: the next log would not have fitted
            assert batch.raw_bytes + len(batches[i + 1].logs[0]) > max_bytes
    got = [dict(c)["msg"] for b in batches for _, c in decode(b)]
    assert got == [b"m" * size for size in sizes]


# ---------------------------------------------------------------- tickets


def test_ticket_fires_once_after_the_last_batch_is_released():
    harness = Harness()
    ticket = harness.process(
        line(tag="nginx_tag") + b"\n" + line(ip="127.0.0.2") + b"\n" + line() + b"\n" + b"junk\n", seq=7
    )
    ticket.seal()
    assert harness.done == []
    harness.batcher.close_all()
    batches = harness.closed
    assert len(batches) == 3
    assert ticket.lines == 4
    for batch in batches[:-1]:
        batch.release()
        assert harness.done == []
    batches[-1].release()
    assert harness.done == [7]
    for batch in batches:  # releasing again does nothing
        batch.release()
    assert harness.done == [7]


def test_ticket_released_before_seal_fires_at_seal():
    harness = Harness(max_logs=2)
    ticket = harness.process(b"".join(line(msg=str(i)) + b"\n" for i in range(4)), seq=3)
    assert len(harness.closed) == 2  # both full batches closed while processing
    for batch in harness.closed:
        batch.release()
    assert harness.done == []  # more batches could still take the chunk's lines
    ticket.seal()
    assert harness.done == [3]


def test_ticket_of_a_chunk_without_logs_fires_at_seal():
    harness = Harness()
    ticket = harness.process(b"\n\n", seq=9)
    ticket.seal()
    assert harness.done == [9]


def test_two_chunks_in_one_batch():
    harness = Harness()
    first = harness.process(line(msg="a") + b"\n", seq=1)
    first.seal()
    second = harness.process(line(msg="b") + b"\n" + line(tag="nginx_tag") + b"\n", seq=2)
    second.seal()
    harness.batcher.close_all()
    shared = next(b for b in harness.closed if b.dest == DEFAULT)
    other = next(b for b in harness.closed if b.dest == NGINX)
    assert harness.done == []
    shared.release()
    assert harness.done == [1]
    other.release()
    assert harness.done == [1, 2]


@settings(max_examples=40, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.sampled_from([line(), line(ip="127.0.0.2"), line(tag="nginx_tag"), b"junk", b"",
                                  line(ts=NOW - 30 * DAY)]), max_size=12),
        min_size=1,
        max_size=6,
    ),
    max_logs=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_ticket_fires_exactly_once_after_its_last_batch(chunks, max_logs, seed):
    harness = Harness(max_logs=max_logs)
    tickets = []
    for seq, lines in enumerate(chunks):
        ticket = harness.process(b"".join(raw + b"\n" for raw in lines), seq=seq)
        ticket.seal()
        tickets.append(ticket)
    harness.batcher.close_all()
    batches = list(harness.closed)
    holding = {seq: {id(b) for b in batches if any(t.seq == seq for t in b.tickets)} for seq in range(len(chunks))}
    # a chunk with no logs is done at seal
    assert sorted(harness.done) == sorted(seq for seq, held in holding.items() if not held)
    random.Random(seed).shuffle(batches)
    released: set[int] = set()
    for batch in batches:
        batch.release()
        released.add(id(batch))
        for seq, held in holding.items():
            fired = harness.done.count(seq)
            assert fired == (1 if held <= released else 0), (seq, fired)
    assert sorted(harness.done) == list(range(len(chunks)))
    logs = sum(len(b) for b in batches)
    assert logs == sum(1 for lines in chunks for raw in lines if raw)


def test_close_stale_closes_only_batches_whose_oldest_line_has_waited_a_linger():
    closed: list[Batch] = []
    batcher = Batcher(max_logs=100, max_bytes=1 << 20, linger=2.0, on_close=closed.append, clock=lambda: 100.0)
    backlog = Ticket(1, lambda seq: None, appended=0.0)  # read back from disk
    live = Ticket(2, lambda seq: None, appended=99.5)
    batcher.add_run((DEFAULT, "10.0.0.1"), [b"old"], backlog)
    batcher.add_run((DEFAULT, "10.0.0.1"), [b"newer"], live)  # the batch's oldest line decides
    batcher.add_run((NGINX, "10.0.0.1"), [b"live"], live)
    batcher.close_stale(100.0 - 2.0)
    assert [(b.dest, b.logs) for b in closed] == [(DEFAULT, [b"old", b"newer"])]
    batcher.close_stale(101.6 - 2.0)
    assert [(b.dest, b.logs) for b in closed][1:] == [(NGINX, [b"live"])]
