"""LineFramer: bytes of one TCP connection -> LF-terminated lines.

Pure and fast: no sockets. The real rsyslog bytes are the main input; the
hypothesis test covers random lines cut at random read boundaries.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.input.framing import LineFramer, detect_octet_counting
from tests.support import shared_data

SAMPLE = shared_data.read_bytes(shared_data.CAPTURED_SAMPLES)
SAMPLE_LINES = SAMPLE.split(b"\n")[:-1]
BIG = 1 << 20


def feed_all(framer: LineFramer, reads: list[bytes], *, check_buffer: int | None = None) -> bytes:
    out = []
    for data in reads:
        out.append(framer.feed(data))
        if check_buffer is not None:
            assert framer.buffered <= check_buffer
    out.append(framer.finish())
    return b"".join(out)


def one_byte_reads(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def octet(body: bytes) -> bytes:
    return str(len(body)).encode() + b" " + body


# ---------------------------------------------------------------- LF framing


def test_sample_is_what_the_readme_says():
    assert len(SAMPLE_LINES) == 50
    assert SAMPLE.endswith(b"\n")


def test_sample_in_one_read_gives_every_line():
    framer = LineFramer(BIG)
    out = feed_all(framer, [SAMPLE])
    assert out == SAMPLE
    assert framer.octet_counted is False
    assert framer.stats.truncated_lines == 0 and framer.stats.framing_errors == 0


def test_sample_split_at_every_byte_boundary_gives_the_same_lines():
    # Use a head of the sample (the small lines, up to the first 8 KiB one) so
    # that splitting at every boundary stays fast; plus one read per split of
    # the whole sample at a coarser stride.
    head = b"".join(line + b"\n" for line in SAMPLE_LINES[:16])
    for cut in range(len(head) + 1):
        framer = LineFramer(BIG)
        assert feed_all(framer, [head[:cut], head[cut:]]) == head, cut
    for cut in range(0, len(SAMPLE) + 1, 97):
        framer = LineFramer(BIG)
        assert feed_all(framer, [SAMPLE[:cut], SAMPLE[cut:]]) == SAMPLE, cut


def test_sample_in_one_byte_reads():
    head = b"".join(line + b"\n" for line in SAMPLE_LINES[:16])
    framer = LineFramer(BIG)
    out = [framer.feed(b) for b in one_byte_reads(head)]
    assert b"".join(out) + framer.finish() == head
    # every complete line is returned by the read that finished it
    assert [o for o in out if o] == [line + b"\n" for line in SAMPLE_LINES[:16]]


@pytest.mark.parametrize(
    "reads, expected",
    [
        ([b"a b\r\nc d\r\n"], b"a b\nc d\n"),
        ([b"a b\r", b"\nc d\r\n"], b"a b\nc d\n"),  # CR and LF in different reads
        ([b"a\rb\n"], b"a\rb\n"),  # a lone CR is data
        ([b"last without LF"], b"last without LF\n"),
        ([b"last with CR\r"], b"last with CR\n"),
        ([b"x\n", b"partial"], b"x\npartial\n"),
        ([], b""),
        ([b""], b""),
        ([b"", b"", b""], b""),
        ([b"\n0.1 a\n"], b"0.1 a\n"),  # leading empty lines carry nothing and are dropped
        ([b"0.1 a\n\n0.1 b\n"], b"0.1 a\n\n0.1 b\n"),
    ],
)
def test_lf_framing_table(reads, expected):
    assert feed_all(LineFramer(BIG), reads) == expected


def test_partial_last_line_is_only_returned_by_finish():
    framer = LineFramer(BIG)
    assert framer.feed(b"0.1 t 1 ip complete\n0.1 t 1 ip parti") == b"0.1 t 1 ip complete\n"
    assert framer.buffered == len(b"0.1 t 1 ip parti")
    assert framer.feed(b"al") == b""
    assert framer.finish() == b"0.1 t 1 ip partial\n"
    assert framer.buffered == 0
    assert framer.finish() == b""


@pytest.mark.parametrize("stream", [b"\n", b"\n\n", b"\r\n"])
def test_stream_of_only_line_ends(stream):
    framer = LineFramer(BIG)
    assert feed_all(framer, [stream]) == b""  # empty lines carry nothing: dropped, never buffered


def test_leading_line_ends_do_not_grow_the_buffer_without_bound():
    framer = LineFramer(10)
    for _ in range(1000):
        framer.feed(b"\n")
        assert framer.buffered <= 10


def test_empty_input_returns_nothing():
    framer = LineFramer(BIG)
    assert framer.feed(b"") == b""
    assert framer.finish() == b""
    assert framer.buffered == 0


# ---------------------------------------------------------------- max_line_bytes

LIMIT = 64


@pytest.mark.parametrize("reads_of", ["one_read", "one_byte_reads", "three_reads"])
def test_line_of_three_times_the_limit_is_cut_and_next_line_arrives(reads_of):
    long_line = bytes(range(33, 33 + 64)) * 3  # 3 * LIMIT bytes, no LF
    assert len(long_line) == 3 * LIMIT
    nxt = b"0.1 sys_tag 1 127.0.0.1 next line"
    stream = b"0.1 first\n" + long_line + b"\n" + nxt + b"\n"
    if reads_of == "one_read":
        reads = [stream]
    elif reads_of == "one_byte_reads":
        reads = one_byte_reads(stream)
    else:
        reads = [stream[:20], stream[20:150], stream[150:]]
    framer = LineFramer(LIMIT)
    out = feed_all(framer, reads, check_buffer=LIMIT)
    assert out.split(b"\n") == [b"0.1 first", long_line[:LIMIT], nxt, b""]
    assert framer.stats.truncated_lines == 1
    assert framer.stats.discarded_bytes == 2 * LIMIT


@pytest.mark.parametrize("reads_of", ["one_read", "one_byte_reads"])
def test_unterminated_long_line_at_end_of_stream(reads_of):
    stream = b"a\n" + b"x" * (3 * LIMIT)
    reads = [stream] if reads_of == "one_read" else one_byte_reads(stream)
    framer = LineFramer(LIMIT)
    out = feed_all(framer, reads, check_buffer=LIMIT)
    assert out == b"a\n" + b"x" * LIMIT + b"\n"
    assert framer.stats.truncated_lines == 1
    assert framer.stats.discarded_bytes == 2 * LIMIT


@pytest.mark.parametrize("length", [LIMIT - 1, LIMIT])
def test_lines_up_to_the_limit_are_untouched(length):
    line = b"y" * length
    for reads in ([line + b"\n" + line + b"\n"], one_byte_reads(line + b"\n" + line + b"\n")):
        framer = LineFramer(LIMIT)
        assert feed_all(framer, reads, check_buffer=LIMIT) == line + b"\n" + line + b"\n"
        assert framer.stats.truncated_lines == 0
        assert framer.stats.discarded_bytes == 0


@pytest.mark.parametrize("stream", [b"abcde\r\nxy\n", b"6 abcde\n3 xy\n"], ids=["crlf", "octet_lf"])
def test_line_of_exactly_the_limit_plus_terminator_is_not_truncated(stream):
    framer = LineFramer(5)
    assert feed_all(framer, [stream]) == b"abcde\nxy\n"
    assert framer.stats.truncated_lines == 0
    assert framer.stats.discarded_bytes == 0


def test_several_long_lines_in_one_read_are_each_counted():
    stream = b"a" * 100 + b"\n" + b"b" * 70 + b"\n" + b"c\n"
    framer = LineFramer(LIMIT)
    out = feed_all(framer, [stream], check_buffer=LIMIT)
    assert out == b"a" * LIMIT + b"\n" + b"b" * LIMIT + b"\nc\n"
    assert framer.stats.truncated_lines == 2
    assert framer.stats.discarded_bytes == (100 - LIMIT) + (70 - LIMIT)


def test_the_real_10k_line_with_a_4k_limit():
    big = SAMPLE_LINES[16]
    assert len(big) == 8192
    framer = LineFramer(4096)
    stream = big + b"\n" + SAMPLE_LINES[18] + b"\n"
    out = feed_all(framer, [stream[i : i + 1000] for i in range(0, len(stream), 1000)], check_buffer=4096)
    assert out == big[:4096] + b"\n" + SAMPLE_LINES[18] + b"\n"
    assert framer.stats.truncated_lines == 1
    assert framer.stats.discarded_bytes == 8192 - 4096


# ---------------------------------------------------------------- octet counting


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"0.1 sys", False),
        (b"0.1 sys_tag 1795591573 127.0.0.1 vm", False),
        (b"12 0.1", True),
        (b"12 ", True),
        (b"1 x", True),
        (b"12", None),
        (b"1", None),
        (b"", None),
        (b"\n", None),
        (b"\r\n", None),
        (b"2.1 x", False),
        (b"0 x", False),  # a count never starts with 0
        (b"012 x", False),
        (b" 12 x", False),
        (b"12x", False),
        (b"abc", False),
        (b"1234567890", None),  # 10 digits: still possibly a count
        (b"1234567890 x", True),
        (b"12345678901", False),  # 11 digits: no count is that long
        (b"12345678901 x", False),
        (b"\n12 x", True),  # leading line ends are skipped
    ],
)
def test_detect_octet_counting_table(head, expected):
    assert detect_octet_counting(head) is expected


LINE_A = b"0.1 sys_tag 1795591599 127.0.0.1 vm user.notice 1 tcp5424oc - OCTMSG rfc5424 over TCP octet-counted"
LINE_B = b"0.1 sys_tag 1795591600 127.0.0.1 vm user.notice 0 tcp3164 55 -  rfc3164 over TCP"


@pytest.mark.parametrize("trailing_lf", [True, False], ids=["template_lf", "no_lf"])
@pytest.mark.parametrize("split", ["one_read", "one_byte_reads"])
def test_octet_counted_frames(trailing_lf, split):
    end = b"\n" if trailing_lf else b""
    stream = octet(LINE_A + end) + octet(LINE_B + end) + octet(b"x" + end)
    reads = [stream] if split == "one_read" else one_byte_reads(stream)
    framer = LineFramer(BIG)
    out = feed_all(framer, reads)
    assert out == LINE_A + b"\n" + LINE_B + b"\n" + b"x\n"
    assert framer.octet_counted is True
    assert framer.stats.framing_errors == 0


def test_octet_count_arriving_one_byte_at_a_time_is_undecided_until_the_space():
    framer = LineFramer(BIG)
    body = b"0.1 t 1 ip " + b"m" * 120 + b"\n"  # count has 3 digits
    stream = octet(body)
    assert framer.feed(stream[:1]) == b""
    assert framer.octet_counted is None
    assert framer.feed(stream[1:3]) == b""
    assert framer.octet_counted is None
    assert framer.feed(stream[3:4]) == b""  # the space decides
    assert framer.octet_counted is True
    assert framer.feed(stream[4:-1]) == b""
    assert framer.feed(stream[-1:]) == body


def test_octet_frame_with_embedded_lf_is_escaped_as_012():
    framer = LineFramer(BIG)
    out = feed_all(framer, [octet(b"0.1 t 1 ip first\nsecond\nthird\n")])
    assert out == b"0.1 t 1 ip first#012second#012third\n"
    assert framer.stats.escaped_newlines == 2


def test_octet_frame_crlf_end_is_folded():
    assert feed_all(LineFramer(BIG), [octet(b"abc\r\n") + octet(b"def\r")]) == b"abc\ndef\n"


def test_truncated_octet_frame_at_end_of_stream_is_kept():
    framer = LineFramer(BIG)
    stream = octet(b"complete\n") + b"50 only part of it"
    assert framer.feed(stream) == b"complete\n"
    assert framer.finish() == b"only part of it\n"


@pytest.mark.parametrize(
    "bad",
    [
        b"abc def\n",  # not digits
        b"0 zero count\n",  # a count never starts with 0
        b"12345678901234 way too many digits\n",
    ],
)
def test_bad_count_falls_back_to_lf_framing_and_is_counted(bad):
    framer = LineFramer(BIG)
    stream = octet(b"good frame\n") + bad + b"then a plain line\n"
    out = feed_all(framer, [stream])
    assert out == b"good frame\n" + bad + b"then a plain line\n"
    assert framer.stats.framing_errors == 1
    assert framer.octet_counted is False


def test_bad_count_in_one_byte_reads_falls_back_too():
    framer = LineFramer(BIG)
    stream = octet(b"good\n") + b"x.y plain\nsecond plain\n"
    out = feed_all(framer, one_byte_reads(stream))
    assert out == b"good\nx.y plain\nsecond plain\n"
    assert framer.stats.framing_errors == 1


def test_leading_line_ends_before_the_first_octet_frame():
    framer = LineFramer(BIG)
    out = feed_all(framer, [b"\r\n" + octet(b"hello\n") + octet(b"world\n")])
    assert out.replace(b"\n", b" ").split() == [b"hello", b"world"]
    assert framer.octet_counted is True
    assert framer.stats.framing_errors == 0


@pytest.mark.parametrize("split", ["one_read", "one_byte_reads", "chunks"])
def test_over_long_octet_frame_is_cut_and_the_next_frame_arrives(split):
    body = bytes(range(65, 65 + 26)) * 8  # 208 bytes > 3 * LIMIT
    stream = octet(b"before\n") + octet(body + b"\n") + octet(b"after\n")
    reads = {
        "one_read": [stream],
        "one_byte_reads": one_byte_reads(stream),
        "chunks": [stream[i : i + 50] for i in range(0, len(stream), 50)],
    }[split]
    framer = LineFramer(LIMIT)
    out = []
    for data in reads:
        out.append(framer.feed(data))
        # The count and its space are buffered on top of the kept part.
        assert framer.buffered <= LIMIT + len(b"1234567890 ")
    out.append(framer.finish())
    assert b"".join(out) == b"before\n" + body[:LIMIT] + b"\nafter\n"
    assert framer.stats.truncated_lines == 1
    assert framer.stats.discarded_bytes == len(body) + 1 - LIMIT


# ---------------------------------------------------------------- property

def _lf_reads(lines: list[bytes], cuts: list[int]) -> list[bytes]:
    """The LF-framed stream of ``lines``, cut into reads at ``cuts``."""
    stream = b"".join(line + b"\n" for line in lines)
    # A stream that starts like "12 ..." is octet-counted by design, and leading empty
    # lines are dropped (tested above): neither is what these properties are about.
    assume(detect_octet_counting(stream) is not True)
    assume(not lines or lines[0] != b"")
    bounds = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


_LINE = st.binary(max_size=80).filter(lambda b: b"\n" not in b and not b.endswith(b"\r"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    lines=st.lists(_LINE, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    limit=st.integers(min_value=80, max_value=200),
)
def test_random_lines_at_random_read_boundaries(lines, cuts, limit):
    reads = _lf_reads(lines, cuts)
    framer = LineFramer(limit)
    out = feed_all(framer, reads, check_buffer=limit)
    assert out.split(b"\n")[:-1] == lines
    assert framer.stats.truncated_lines == 0


@settings(max_examples=80, deadline=None)
@given(
    lines=st.lists(st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"_").replace(b"\r", b"_")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    limit=st.integers(min_value=1, max_value=20),
)
def test_random_long_lines_are_cut_to_the_limit(lines, cuts, limit):
    reads = _lf_reads(lines, cuts)
    framer = LineFramer(limit)
    out = feed_all(framer, reads, check_buffer=limit)
    assert out.split(b"\n")[:-1] == [line[:limit] for line in lines]
    assert framer.stats.truncated_lines == sum(len(line) > limit for line in lines)
    assert framer.stats.discarded_bytes == sum(max(0, len(line) - limit) for line in lines)


@settings(max_examples=80, deadline=None)
@given(
    bodies=st.lists(st.binary(min_size=1, max_size=60), max_size=15),
    cuts=st.lists(st.integers(min_value=0, max_value=1500), max_size=20),
)
def test_random_octet_frames_at_random_read_boundaries(bodies, cuts):
    stream = b"".join(octet(body) for body in bodies)
    bounds = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    reads = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    framer = LineFramer(BIG)
    out = feed_all(framer, reads)

    def expected(body: bytes) -> bytes:
        if body.endswith(b"\n"):
            body = body[:-1]
        return body.rstrip(b"\r").replace(b"\n", b"#012") + b"\n"

    assert out == b"".join(expected(body) for body in bodies)
    assert framer.stats.framing_errors == 0


@settings(max_examples=80, deadline=None)
@given(
    bodies=st.lists(st.binary(min_size=1, max_size=40), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=800), max_size=20),
    limit=st.integers(min_value=1, max_value=30),
)
def test_random_octet_frames_with_a_small_limit(bodies, cuts, limit):
    stream = b"".join(octet(body) for body in bodies)
    bounds = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    reads = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    framer = LineFramer(limit)
    out = []
    for data in reads:
        out.append(framer.feed(data))
        assert framer.buffered <= limit + len(b"1234567890 ")
    out.append(framer.finish())

    def content(body: bytes) -> bytes:  # the frame without the template's line ending
        body = body[:-1] if body.endswith(b"\n") else body
        return body.rstrip(b"\r")

    def expected(body: bytes) -> bytes:
        return content(body)[:limit].replace(b"\n", b"#012") + b"\n"

    def discarded(body: bytes) -> int:
        # A frame too long to buffer (over limit + CRLF) is skipped raw, ending included.
        return len(body) - limit if len(body) > limit + 2 else max(0, len(content(body)) - limit)

    assert b"".join(out) == b"".join(expected(body) for body in bodies)
    assert framer.stats.truncated_lines == sum(len(content(body)) > limit for body in bodies)
    assert framer.stats.discarded_bytes == sum(discarded(body) for body in bodies)
