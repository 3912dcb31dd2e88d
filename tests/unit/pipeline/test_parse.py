"""agent.parse: one streamlog line -> fields, source, time and UTF-8 rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pipeline.parse import (
    BAD_TIMESTAMP,
    MAX_FUTURE_S,
    MAX_PAST_S,
    TOO_FEW_FIELDS,
    UNKNOWN_VERSION,
    ParsedLine,
    ParseFailure,
    build_format_table,
    fix_time,
    make_valid_utf8,
    parse_line,
    peer_source,
    resolve_source,
)
from tests.support import shared_data

SAMPLE_LINES = shared_data.sample_lines()
FORMATS = build_format_table({})
FIELDS = ("hostname", "pri-text", "protocol-version", "app-name", "procid", "msgid")


class Big:
    """Expected msg of a long line: prefix, then one repeated byte, then suffix."""

    def __init__(self, prefix: bytes, fill: bytes, length: int, suffix: bytes = b"") -> None:
        self.expected = prefix + fill * (length - len(prefix) - len(suffix)) + suffix

    def __eq__(self, other: object) -> bool:
        return other == self.expected

    def __repr__(self) -> str:
        return f"Big({self.expected[:20]!r}...{len(self.expected)} bytes)"


D510 = b"d" * 510  # the app-name rsyslog made of a 20 KB message's second piece

# (index, ip, hostname, pri-text, protocol-version, app-name, procid, msgid, msg)
# Written out by hand from the captured bytes; protocol-version 0 drops exactly
# one leading space of %msg% (the one after "tag:"), protocol-version 1 none.
SAMPLE_TABLE = [
    (0, "127.0.0.1", "vm", "user.notice", "0", "root", "-", "-", b"plain message one"),
    (1, "127.0.0.1", "vm", "user.notice", "0", "root", "-", "-", b"plain message two"),
    (2, "127.0.0.1", "vm", "user.notice", "0", "myapp", "-", "-", b"tagged message"),
    (3, "127.0.0.1", "vm", "user.notice", "0", "myapp", "4242", "-", b"tag and explicit pid 4242"),
    (4, "127.0.0.1", "vm", "user.notice", "0", "myapp", "6546", "-", b"tag and logger's own pid (-i)"),
    (5, "127.0.0.1", "vm", "local0.err", "0", "dbapp", "-", "-", b"local0.err priority"),
    (6, "127.0.0.1", "vm", "auth.info", "0", "sshd-ish", "77", "-", b"auth.info priority"),
    (7, "127.0.0.1", "vm", "user.emerg", "0", "kerntest", "-", "-", b"kern.emerg from userspace"),
    (8, "127.0.0.1", "vm", "user.notice", "0", "1", "-", "-",
     b'2026-11-25T07:26:36.008146+00:00 vm shop 999 ORDER42 [timeQuality tzKnown="1" isSynced="0"] '
     b"rfc5424 via unix socket with msgid"),
    (9, "127.0.0.1", "vm", "user.notice", "0", "1", "-", "-",
     b'2026-11-25T07:26:36.312301+00:00 vm shop - ORDER43 [timeQuality tzKnown="1" isSynced="0"]'
     b'[zoo@123 tiger="hungry" zebra="striped"] rfc5424 via unix socket with structured data'),
    (10, "127.0.0.1", "vm", "user.notice", "0", "vm", "-", "-", b"oldapp: explicit rfc3164 via unix socket"),
    (11, "127.0.0.1", "vm", "user.notice", "0", "ml", "-", "-", b"multi-line arg: line1#012line2#012line3"),
    (12, "127.0.0.1", "vm", "user.notice", "0", "mlstdin", "-", "-", b"stdin line A"),
    (13, "127.0.0.1", "vm", "user.notice", "0", "mlstdin", "-", "-", b"stdin line B"),
    (14, "127.0.0.1", "vm", "user.notice", "0", "chars", "-", "-",
     "tab#011here, UTF-8: äöü ß 日本語, emoji: 😀🚀, bell:#007, CR:#015X, DEL:\x7f end".encode()),
    (15, "127.0.0.1", "vm", "user.notice", "0", "spaces", "-", "-", b"   three leading and three trailing spaces   "),
    (16, "127.0.0.1", "vm", "user.notice", "0", "big10k", "-", "-", Big(b"BIG10K-BEGIN ", b"a", 8192 - len(b"0.1 sys_tag 1795591598 127.0.0.1 vm user.notice 0 big10k - -  "))),
    (17, "127.0.0.1", "vm", "user.notice", "0", "big100k", "-", "-", Big(b"BIG100K-BEGIN ", b"b", 8192 - len(b"0.1 sys_tag 1795591599 127.0.0.1 vm user.notice 0 big100k - -  "))),
    (18, "127.0.0.1", "vm", "user.notice", "0", "big2k", "-", "-", Big(b"BIG2K-DEFAULTSIZE-BEGIN ", b"c", 1085 - len(b"0.1 sys_tag 1795591599 127.0.0.1 vm user.notice 0 big2k - -  "))),
    (19, "127.0.0.1", "vm", "user.notice", "1", "tcp5424", "31337", "TCPMSG", b"rfc5424 over TCP LF framing"),
    (20, "127.0.0.1", "vm", "user.notice", "1", "tcp5424oc", "-", "OCTMSG", b"rfc5424 over TCP octet-counted"),
    (21, "127.0.0.1", "vm", "user.notice", "0", "tcp3164", "55", "-", b"rfc3164 over TCP"),
    (22, "127.0.0.1", "vm", "user.notice", "1", "udp5424", "-", "UDPMSG", b"rfc5424 over UDP"),
    (23, "127.0.0.1", "vm", "user.notice", "1", "bigtcp", "-", "-", Big(b"BIGTCP20K-BEGIN ", b"d", 8161 - len(b"0.1 sys_tag 1795591600 127.0.0.1 vm user.notice 1 bigtcp - - "))),
    # rsyslog split the 20 KB message over imtcp; the later pieces are misparsed.
    (24, "127.0.0.1", "localhost", "user.notice", "0", D510.decode(), "-", "-", b"d" * 7620),
    (25, "127.0.0.1", "localhost", "user.notice", "0", D510.decode(), "-", "-", b"d" * 3212 + b" BIGTCP20K-END"),
    (26, "127.0.0.2", "webhost01", "auth.crit", "0", "su", "123", "-", b"'su root' failed for lonvick on /dev/pts/8"),
    (27, "127.0.0.2", "mymachine.example.com", "local4.notice", "1", "evntslog", "8710", "ID47",
     b"An application event log entry"),
    (28, "127.0.0.2", "192.0.2.1", "local4.notice", "1", "myproc", "8710", "-", b"%% It's time to make the do-nuts."),
    (29, "127.0.0.2", "h5", "user.info", "1", "-", "-", "-", b"nil everything"),
    (30, "127.0.0.2", "no", "user.notice", "0", "pri", "-", "-", b"at all, just a line"),
    (31, "127.0.0.2", "webhost01", "user.notice", "0", "crlf", "-", "-", b"line ending with CRLF#015"),
    (32, "127.0.0.2", "webhost01", "user.notice", "0", "trail", "-", "-", b"trailing spaces   "),
    (33, "127.0.0.2", "webhost01", "user.notice", "0", "nul", "-", "-", b"NUL byte here:#000:after"),
    (34, "127.0.0.2", "webhost01", "local7.debug", "0", "dbg", "-", "-", b"local7.debug"),
    (35, "127.0.0.3", "udphost", "user.notice", "0", "udp3164", "9", "-", b"raw 3164 over UDP from 127.0.0.3"),
    (36, "127.0.0.3", "udphost", "user.notice", "0", "udpnl", "-", "-", b"UDP datagram ending in LF"),
    (37, "127.0.0.1", "vm", "user.notice", "0", "unixnl", "-", "-", b"unix datagram ending in LF"),
    (38, "127.0.0.1", "vm", "user.notice", "0", "unixnl2", "-", "-", b"unix datagram ending in two LF#012"),
    (39, "127.0.0.1", "vm", "user.notice", "0", "1", "-", "-",
     b"2024-01-01T00:00:00Z ignoredhost app5424 321 MID5424 - 5424 raw into unix socket"),
    (40, "127.0.0.1", "vm", "user.notice", "0", "empty", "-", "-", b" "),
    (41, "127.0.0.1", "vm", "user.notice", "0", "emptystdin", "-", "-", b""),
    (42, "127.0.0.1", "vm", "user.notice", "0", "notagmsg", "-", "-", b""),
    (43, "127.0.0.2", "webhost01", "user.notice", "0", "emptytcp", "-", "-", b""),
    (44, "127.0.0.2", "webhost01", "user.notice", "0", "emptytcp2", "-", "-", b""),
    (45, "127.0.0.2", "h5", "user.notice", "1", "app", "-", "-", b""),
    (46, "127.0.0.2", "h5", "user.notice", "1", "app", "-", "-", b""),
    (47, "127.0.0.2", "h5", "user.notice", "1", "app", "-", "-", b"   five spaces before, 2 after  "),
    (48, "127.0.0.2", "h5", "user.notice", "1", "app", "-", "-", b"BOM\xef\xbb\xbfmsg with BOM"),
    (49, "127.0.0.2", "h5", "user.notice", "1", "app", "-", "-", b"invalid utf8 \xff\xfe here"),
]


def test_table_covers_every_sample_line():
    assert [row[0] for row in SAMPLE_TABLE] == list(range(50)) == list(range(len(SAMPLE_LINES)))


@pytest.mark.parametrize("row", SAMPLE_TABLE, ids=[f"line{row[0]}" for row in SAMPLE_TABLE])
def test_parse_every_sample_line(row):
    index, ip, hostname, pri, version, app, procid, msgid, msg = row
    line = SAMPLE_LINES[index]
    parsed = parse_line(line, FORMATS)
    assert isinstance(parsed, ParsedLine), parsed
    assert parsed.format.version == "0.1"
    assert parsed.tag == b"sys_tag"
    assert parsed.time == int(line.split(b" ")[2])
    assert 1795591573 <= parsed.time <= 1795591634
    assert parsed.ip == ip.encode()
    expected_values = tuple(v.encode() for v in (hostname, pri, version, app, procid, msgid))
    assert parsed.values == expected_values
    assert parsed.msg == msg
    # Content keys are the rsyslog property names; version and tag are not content.
    assert parsed.contents() == list(zip(FIELDS, expected_values)) + [("msg", parsed.msg)]


@pytest.mark.parametrize(
    "msg_part, version, expected",
    [
        (b"  two spaces", b"0", b" two spaces"),  # exactly one space dropped
        (b" one space", b"0", b"one space"),
        (b"no space", b"0", b"no space"),
        (b"   ", b"0", b"  "),
        (b" ", b"0", b""),
        (b"", b"0", b""),
        (b"  two spaces", b"1", b"  two spaces"),  # RFC 5424: nothing dropped
        (b" one space", b"1", b" one space"),
        (b" ", b"1", b" "),
        (b" x", b"2", b" x"),  # only "0" is special
    ],
)
def test_protocol_version_space_rule(msg_part, version, expected):
    line = b"0.1 sys_tag 1795591573 127.0.0.1 vm user.notice " + version + b" app - - " + msg_part
    parsed = parse_line(line, FORMATS)
    assert isinstance(parsed, ParsedLine)
    assert parsed.msg == expected


def test_line_without_separator_before_empty_msg():
    parsed = parse_line(b"0.1 sys_tag 1795591573 127.0.0.1 vm user.notice 0 app - -", FORMATS)
    assert isinstance(parsed, ParsedLine)
    assert parsed.values[-1] == b"-"
    assert parsed.msg == b""


@pytest.mark.parametrize(
    "line, tag, values, msg",
    [
        (b"2.1 app_tag 1795591573 10.0.0.5 INFO GET /index.html took 3 ms", b"app_tag", (b"INFO", b"GET"),
         b"/index.html took 3 ms"),
        (b"2.1 app_tag 1795591573 10.0.0.5 WARN POST  leading space kept", b"app_tag", (b"WARN", b"POST"),
         b" leading space kept"),
        (b"2.1 t 1795591573 10.0.0.5 INFO GET", b"t", (b"INFO", b"GET"), b""),
    ],
)
def test_user_format(line, tag, values, msg):
    formats = build_format_table({"2.1": ("level", "method")})
    parsed = parse_line(line, formats)
    assert isinstance(parsed, ParsedLine), parsed
    assert parsed.format.version == "2.1"
    assert (parsed.tag, parsed.ip, parsed.values, parsed.msg) == (tag, b"10.0.0.5", values, msg)
    assert parsed.contents() == [("level", values[0]), ("method", values[1]), ("msg", msg)]


def test_user_formats_keep_the_builtin_and_win_over_it():
    table = build_format_table({"2.1": ("level", "method")})
    assert set(table) == {b"0.1", b"2.1"}
    assert table[b"0.1"].fields == FIELDS
    override = build_format_table({"0.1": ("a", "b")})
    assert override[b"0.1"].fields == ("a", "b")
    parsed = parse_line(b"0.1 t 1795591573 1.2.3.4 x y  z", override)
    assert isinstance(parsed, ParsedLine)
    assert parsed.values == (b"x", b"y") and parsed.msg == b" z"


def test_user_format_with_no_fields():
    parsed = parse_line(b"3.0 t 1795591573 1.2.3.4 just the message", build_format_table({"3.0": ()}))
    assert isinstance(parsed, ParsedLine)
    assert parsed.values == () and parsed.msg == b"just the message"


@pytest.mark.parametrize(
    "line, failure",
    [
        (b"", UNKNOWN_VERSION),
        (b"9.9 sys_tag 1795591573 127.0.0.1 vm user.notice 0 app - - msg", UNKNOWN_VERSION),
        (b"2.1 app_tag 1795591573 10.0.0.5 INFO GET x", UNKNOWN_VERSION),  # not configured
        (b"\xff\xfe\x00garbage", UNKNOWN_VERSION),
        (b"hello world", UNKNOWN_VERSION),
        (b" 0.1 sys_tag 1795591573 127.0.0.1 vm user.notice 0 app - - msg", UNKNOWN_VERSION),
        (b"0.1", TOO_FEW_FIELDS),
        (b"0.1 sys_tag 1795591573 127.0.0.1 vm user.notice 0 app -", TOO_FEW_FIELDS),
        (b"0.1 sys_tag 1795591573 127.0.0.1", TOO_FEW_FIELDS),
        (b"0.1 sys_tag abc 127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
        (b"0.1 sys_tag -1795591573 127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
        (b"0.1 sys_tag 1_795_591_573 127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
        (b"0.1 sys_tag 1795591573.5 127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
        (b"0.1 sys_tag +1795591573 127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
        (b"0.1 sys_tag  127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
        ("0.1 sys_tag １７９５ 127.0.0.1 vm user.notice 0 app - - msg".encode(), BAD_TIMESTAMP),
        (b"0.1 sys_tag 0x6b06b1d5 127.0.0.1 vm user.notice 0 app - - msg", BAD_TIMESTAMP),
    ],
)
def test_parse_failures(line, failure):
    result = parse_line(line, FORMATS)
    assert isinstance(result, ParseFailure)
    assert result == failure


def test_failure_reasons_are_low_cardinality_labels():
    assert {UNKNOWN_VERSION.reason, TOO_FEW_FIELDS.reason, BAD_TIMESTAMP.reason} == {
        "unknown_version",
        "too_few_fields",
        "bad_timestamp",
    }


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_parse_line_never_raises(line):
    result = parse_line(line, build_format_table({"2.1": ("level", "method")}))
    assert isinstance(result, (ParsedLine, ParseFailure))


# ---------------------------------------------------------------- source


@pytest.mark.parametrize(
    "line_ip, peer_src, expected",
    [
        (b"127.0.0.1", "10.0.0.1", "10.0.0.1"),  # loopback line ip -> the peer's source
        (b"::1", "10.0.0.1", "10.0.0.1"),
        (b"", "10.0.0.1", "10.0.0.1"),
        (b"127.0.0.2", "10.0.0.1", "127.0.0.2"),  # only 127.0.0.1 is Logtail's "local"
        (b"10.1.2.3", "10.0.0.1", "10.1.2.3"),
        (b"192.0.2.7", "203.0.113.9", "192.0.2.7"),
        (b"2001:db8::5", "10.0.0.1", "2001:db8::5"),
    ],
)
def test_resolve_source(line_ip, peer_src, expected):
    assert resolve_source(line_ip, peer_src) == expected


@pytest.mark.parametrize(
    "peer_ip, host_ip, expected",
    [
        ("127.0.0.1", "10.0.0.1", "10.0.0.1"),  # local rsyslog -> the agent's own ip
        ("::1", "10.0.0.1", "10.0.0.1"),
        ("", "10.0.0.1", "10.0.0.1"),
        ("10.0.0.7", "10.0.0.1", "10.0.0.7"),  # a relay sending from elsewhere
        ("2001:db8::9", "10.0.0.1", "2001:db8::9"),
    ],
)
def test_peer_source(peer_ip, host_ip, expected):
    assert peer_source(peer_ip, host_ip) == expected


def test_loopback_line_from_loopback_peer_gets_the_host_ip():
    assert resolve_source(b"127.0.0.1", peer_source("127.0.0.1", "10.0.0.1")) == "10.0.0.1"
    assert resolve_source(b"127.0.0.1", peer_source("10.9.9.9", "10.0.0.1")) == "10.9.9.9"


# ---------------------------------------------------------------- time

NOW = 1795591600
DAY = 86400
SLS_PAST_S = 7 * DAY  # the service rejects older logs
SLS_FUTURE_S = 15 * 60  # and logs further in the future


@pytest.mark.parametrize(
    "line_time, receive_time, expected",
    [
        (NOW, NOW, (NOW, False)),
        (NOW - 5, NOW, (NOW - 5, False)),
        (NOW - 6 * DAY, NOW, (NOW - 6 * DAY, False)),
        (NOW + 60, NOW, (NOW + 60, False)),
        (NOW - 30 * DAY, NOW - 2, (NOW - 2, True)),  # 30 days old -> receive time
        (NOW + DAY, NOW - 1, (NOW - 1, True)),  # next day -> receive time
        (0, NOW, (NOW, True)),
        (2**40, NOW - 3, (NOW - 3, True)),
        (NOW - 30 * DAY, NOW - 30 * DAY, (NOW, True)),  # both bad -> now
        (NOW + DAY, NOW + DAY, (NOW, True)),
        (NOW - SLS_PAST_S, NOW, (NOW, True)),  # exactly at SLS's limit: too close to ship
        (NOW + SLS_FUTURE_S, NOW, (NOW, True)),
    ],
)
def test_fix_time(line_time, receive_time, expected):
    assert fix_time(line_time, receive_time, NOW) == expected


@settings(max_examples=100, deadline=None)
@given(
    line_time=st.integers(min_value=0, max_value=2**40),
    receive_offset=st.integers(min_value=-30 * DAY, max_value=30 * DAY),
)
def test_fix_time_result_is_always_inside_the_sls_window(line_time, receive_offset):
    unix_time, replaced = fix_time(line_time, NOW + receive_offset, NOW)
    assert NOW - SLS_PAST_S < unix_time < NOW + SLS_FUTURE_S
    assert replaced == (unix_time != line_time)


def test_window_margins_are_inside_the_sls_limits():
    assert 0 < MAX_PAST_S < SLS_PAST_S
    assert 0 < MAX_FUTURE_S < SLS_FUTURE_S


# ---------------------------------------------------------------- UTF-8


@pytest.mark.parametrize(
    "data, expected, repaired",
    [
        (b"", b"", False),
        (b"plain ascii", b"plain ascii", False),
        ("äöü ß 日本語 😀🚀".encode(), "äöü ß 日本語 😀🚀".encode(), False),
        (b"BOM\xef\xbb\xbfmsg", b"BOM\xef\xbb\xbfmsg", False),
        (b"NUL\x00DEL\x7f", b"NUL\x00DEL\x7f", False),
        (b"invalid utf8 \xff\xfe here", b"invalid utf8 \\xff\\xfe here", True),
        (b"\xff", b"\\xff", True),
        (b"cut \xe6\x97", b"cut \\xe6\\x97", True),  # truncated sequence
        (b"\xc0\xaf", b"\\xc0\\xaf", True),  # overlong
        (b"\xed\xa0\x80", b"\\xed\\xa0\\x80", True),  # UTF-8 of a surrogate
        ("ok ä ".encode() + b"\xfe", "ok ä \\xfe".encode(), True),
    ],
)
def test_make_valid_utf8(data, expected, repaired):
    assert make_valid_utf8(data) == (expected, repaired)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=100))
def test_make_valid_utf8_always_decodes(data):
    fixed, repaired = make_valid_utf8(data)
    fixed.decode("utf-8")
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert repaired is not valid
    if valid:
        assert fixed == data


def test_sample_line_with_invalid_bytes_is_the_only_one_repaired():
    repaired = [i for i, line in enumerate(SAMPLE_LINES) if make_valid_utf8(line)[1]]
    assert repaired == [49]
    assert make_valid_utf8(SAMPLE_LINES[49])[0].endswith(b"invalid utf8 \\xff\\xfe here")
