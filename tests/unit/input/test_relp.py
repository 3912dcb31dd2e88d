"""RELP input: the pure frame parser and session, then the asyncio receiver in-process.

The in-process tests use a fake queue whose durability the test controls, and a raw TCP
client speaking RELP, so the acknowledgement rule (only once durable, in order, never 500)
is checked on the wire.
"""

from __future__ import annotations

import asyncio
import collections
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.input.relp import RelpReceiver
from agent.input.relp import protocol as relp
from agent.input.relp.protocol import (
    MAX_DATALEN,
    SERVERCLOSE,
    Frame,
    FrameParser,
    ack_frame,
    check_offers,
    format_frame,
    parse_offers,
)
from agent.input.relp.session import DuplicateTracker, RelpSession
from agent.ops import metrics
from tests.support.agent_proc import wait_until
from tests.support.relp_client import LIBRELP_OPEN, Client

# What rsyslog 8.2302's omrelp (librelp 1.11) sends to open a session.


def line(i: int) -> bytes:
    return b"0.1 sys_tag 1700000000 127.0.0.1 web-1 user.notice 0 app - -  message %d\n" % i


def feed_all(parser: FrameParser, reads: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for data in reads:
        frames.extend(parser.feed(data))
    return frames


def client_stream(payloads: list[bytes], *, first: int = 1, close: bool = False) -> bytes:
    """What a client sends: open, one syslog frame per payload, optionally close."""
    frames = [format_frame(first, "open", LIBRELP_OPEN)]
    txnr = first
    for data in payloads:
        txnr += 1
        frames.append(format_frame(txnr, "syslog", data))
    if close:
        frames.append(format_frame(txnr + 1, "close"))
    return b"".join(frames)


# ------------------------------------------------------------------ framing tables

GOOD = [
    (b"1 open 5 abcde\n", [Frame(1, "open", b"abcde")]),
    (b"1 close 0\n", [Frame(1, "close", b"")]),
    (b"1 syslog 3 a\nb\n", [Frame(1, "syslog", b"a\nb")]),  # LF inside DATA
    (b"1 syslog 1 \n\n", [Frame(1, "syslog", b"\n")]),  # DATA is just LF
    (b"1 syslog 2 x\n\n2 syslog 0\n3 close 0\n",
     [Frame(1, "syslog", b"x\n"), Frame(2, "syslog", b""), Frame(3, "close", b"")]),
    (b"01 syslog 002 ab\n", [Frame(1, "syslog", b"ab")]),  # leading zeros, as librelp reads them
    (b"1 SYSLOG 1 a\n", []),  # command words are case-sensitive: an unknown command (see BAD)
]

BAD = [
    # (bytes, substring of the reason, frames before the error)
    (b"x open 0\n", "TXNR is not a number", 0),
    (b" 1 open 0\n", "TXNR is not a number", 0),
    (b"1x open 0\n", "TXNR is not a number", 0),
    (b"1234567890 open 0\n", "TXNR longer than 9 digits", 0),
    (b"0 open 0\n", "TXNR 0", 0),
    (b"2 open 0\n", "TXNR 2 where 1 was expected", 0),
    (b"1 close 0\n1 close 0\n", "TXNR 1 where 2 was expected", 1),
    (b"1 close 0\n3 close 0\n", "TXNR 3 where 2 was expected", 1),
    (b"1  0\n", "command is not 1 to 32 letters", 0),
    (b"1 op3n 0\n", "command is not 1 to 32 letters", 0),
    (b"1 " + b"a" * 33 + b" 0\n", "command longer than 32 letters", 0),
    (b"1 starttls 0\n", "unknown or unsupported command 'starttls'", 0),
    (b"1 rsp 6 200 OK\n", "unknown or unsupported command 'rsp'", 0),
    (b"1 bogus 0\n", "unknown or unsupported command 'bogus'", 0),
    (b"1 SYSLOG 1 a\n", "unknown or unsupported command 'SYSLOG'", 0),
    (b"1 open x\n", "DATALEN is not a number", 0),
    (b"1 open \n", "DATALEN is not a number", 0),
    (b"1 open 1234567890 x\n", "DATALEN longer than 9 digits", 0),
    (b"1 syslog %d " % (MAX_DATALEN + 1), "over the limit", 0),
    (b"1 open 0 \n", "DATALEN 0 is not followed by LF", 0),
    (b"1 open 3\nabc\n", "followed by LF instead of SP", 0),
    (b"1 open 3 abcd\n", "no LF after the 3 bytes of DATA", 0),
    (b"1 open 3 ab\nX", "no LF after the 3 bytes of DATA", 0),  # DATA "ab\n", then no trailer
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "TXNR is not a number", 0),
    (b"\x16\x03\x01\x02\x00\x01\x00", "TXNR is not a number", 0),  # a TLS ClientHello
    (b"1 syslog 1 a\n2 syslog 1 b\n\x00garbage", "TXNR is not a number", 2),
]


@pytest.mark.parametrize("data,expected", [g for g in GOOD if g[1]])
def test_good_frames_in_one_read(data: bytes, expected: list[Frame]) -> None:
    parser = FrameParser()
    assert parser.feed(data) == expected
    assert parser.error is None and parser.buffered == 0


@pytest.mark.parametrize("data,expected", [g for g in GOOD if g[1]])
def test_good_frames_split_at_every_boundary(data: bytes, expected: list[Frame]) -> None:
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            parser = FrameParser()
            assert feed_all(parser, [data[:i], data[i:j], data[j:]]) == expected, (i, j)
            assert parser.error is None and parser.buffered == 0


def test_good_frames_byte_by_byte() -> None:
    data = client_stream([line(i) for i in range(50)], close=True)
    parser = FrameParser()
    frames = feed_all(parser, [data[i : i + 1] for i in range(len(data))])
    assert [f.command for f in frames] == ["open"] + ["syslog"] * 50 + ["close"]
    assert [f.txnr for f in frames] == list(range(1, 53))
    assert [f.data for f in frames[1:51]] == [line(i) for i in range(50)]


@pytest.mark.parametrize("data,reason,before", BAD)
def test_bad_frames_are_errors_at_every_split(data: bytes, reason: str, before: int) -> None:
    for i in range(len(data) + 1):
        parser = FrameParser()
        frames = feed_all(parser, [data[:i], data[i:]])
        assert parser.error is not None and reason in parser.error, (i, parser.error)
        assert len(frames) == before, i
        assert parser.feed(b"1 close 0\n") == []  # dead after an error
    one_by_one = FrameParser()
    feed_all(one_by_one, [data[i : i + 1] for i in range(len(data))])
    assert one_by_one.error is not None and reason in one_by_one.error


def test_incomplete_frame_is_no_error_and_waits() -> None:
    parser = FrameParser()
    assert parser.feed(b"1 syslog 10 abc") == []
    assert parser.error is None and parser.buffered == len(b"1 syslog 10 abc")
    assert parser.feed(b"defghij") == []  # all DATA, no trailer yet
    assert parser.feed(b"\n") == [Frame(1, "syslog", b"abcdefghij")]


def test_oversize_is_refused_from_the_header_alone() -> None:
    parser = FrameParser()
    assert parser.feed(b"1 syslog %d " % (MAX_DATALEN + 1)) == []
    assert parser.error is not None and "over the limit" in parser.error
    exactly = FrameParser()
    data = b"x" * MAX_DATALEN
    assert exactly.feed(format_frame(1, "syslog", data)) == [Frame(1, "syslog", data)]


def test_large_frame_in_small_reads_is_not_reparsed_quadratically() -> None:
    data = bytes(range(256)) * 512  # 128 KiB, every byte value, LFs included
    stream = format_frame(1, "syslog", data)
    parser = FrameParser()
    frames = feed_all(parser, [stream[i : i + 1000] for i in range(0, len(stream), 1000)])
    assert frames == [Frame(1, "syslog", data)]


def test_txnr_wraps_after_999999999() -> None:
    parser = FrameParser(first_txnr=999_999_999)
    assert parser.feed(b"999999999 syslog 1 a\n1 syslog 1 b\n") == [
        Frame(999_999_999, "syslog", b"a"),
        Frame(1, "syslog", b"b"),
    ]
    assert parser.error is None


def test_format_frame() -> None:
    assert format_frame(7, "rsp", b"200 OK") == b"7 rsp 6 200 OK\n"
    assert format_frame(7, "rsp") == b"7 rsp 0\n"
    assert ack_frame(12) == b"12 rsp 6 200 OK\n"
    assert SERVERCLOSE == b"0 serverclose 0\n"


# hypothesis: random frame sequences over random read boundaries round-trip

_frame_st = st.tuples(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=32),
    st.binary(max_size=300) | st.sampled_from([b"", b"\n", b"\n\n", b"1 syslog 3 abc\n", b" "]),
)


@given(
    frames=st.lists(_frame_st, max_size=30),
    first=st.sampled_from([1, 2, 999_999_990, 999_999_999]),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=40),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_over_random_read_boundaries(frames, first, cuts) -> None:
    expected = []
    txnr = first
    for command, data in frames:
        expected.append(Frame(txnr, command, data))
        txnr = relp.next_txnr(txnr)
    stream = b"".join(format_frame(f.txnr, f.command, f.data) for f in expected)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reads = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    parser = FrameParser(commands=None, first_txnr=first)
    assert feed_all(parser, reads) == expected
    assert parser.error is None and parser.buffered == 0


@given(prefix=st.binary(max_size=80), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
@settings(max_examples=300)
def test_garbage_gives_the_same_result_at_any_split(prefix: bytes, cuts) -> None:
    whole = FrameParser()
    expected = whole.feed(prefix)
    bounds = sorted({c % (len(prefix) + 1) for c in cuts} | {0, len(prefix)})
    split = FrameParser()
    frames = feed_all(split, [prefix[a:b] for a, b in zip(bounds, bounds[1:])])
    assert frames == expected
    assert split.error == whole.error
    assert split.buffered <= relp.HEADER_MAX + MAX_DATALEN + 1 + len(prefix)


# ------------------------------------------------------------------ offers

def test_offers_of_librelp() -> None:
    offers = parse_offers(LIBRELP_OPEN)
    assert offers == {
        "relp_version": ["0"],
        "relp_software": ["librelp", "1.11.0", "http://librelp.adiscon.com"],
        "commands": ["syslog"],
    }
    assert check_offers(offers) is None


@pytest.mark.parametrize("data,problem", [
    (b"", "without a relp_version"),
    (b"commands=syslog", "without a relp_version"),
    (b"relp_version=\ncommands=syslog", "without a relp_version"),
    (b"relp_version=x\ncommands=syslog", "not a number"),
    (b"relp_version=0", "lacks syslog"),
    (b"relp_version=0\ncommands=eventlog", "lacks syslog"),
])
def test_unusable_offers(data: bytes, problem: str) -> None:
    assert problem in check_offers(parse_offers(data))


def test_higher_version_and_unknown_offers_are_accepted() -> None:
    assert check_offers(parse_offers(b"relp_version=1\ncommands=syslog,eventlog\nfancy=yes\n")) is None


# ------------------------------------------------------------------ the pure session

def test_session_open_answer_and_group_commit() -> None:
    session = RelpSession()
    got = session.feed(client_stream([line(1), line(2), b"cut at the size limit"]), now=5.0)
    assert got.error is None
    assert got.payload == line(1) + line(2) + b"cut at the size limit\n"
    assert got.counts == {"open": 1, "syslog": 3}
    assert session.take_output() == b"1 rsp %d %s\n" % (len(relp.OPEN_RESPONSE), relp.OPEN_RESPONSE)
    assert relp.OPEN_RESPONSE == b"200 OK\nrelp_version=0\nrelp_software=slsfwd\ncommands=syslog"
    assert session.unacked_frames == 3 and session.oldest_unacked_since == 5.0
    assert session.take_output() == b""  # nothing before durability
    session.durable(got.group)
    assert session.take_output() == ack_frame(2) + ack_frame(3) + ack_frame(4)
    assert session.unacked_frames == 0 and session.unacked_bytes == 0 and session.acked_frames == 3


def test_session_answers_in_order_whatever_the_durability_order() -> None:
    session = RelpSession()
    first = session.feed(client_stream([line(1)])).group
    second = session.feed(format_frame(3, "syslog", line(2)) + format_frame(4, "close")).group
    session.take_output()  # the open answer
    session.durable(second)
    assert session.take_output() == b""  # txnr 3 and the close wait for txnr 2
    session.durable(first)
    assert session.take_output() == ack_frame(2) + ack_frame(3) + b"4 rsp 0\n"
    assert session.close_answered


@pytest.mark.parametrize("stream,problem", [
    (format_frame(1, "syslog", b"x"), "syslog frame before open"),
    (client_stream([]) + format_frame(2, "open", LIBRELP_OPEN), "open on an open session"),
    (client_stream([], close=True) + format_frame(3, "syslog", b"x"), "frame after close"),
    (format_frame(1, "open", b"relp_version=0\ncommands=eventlog"), "lacks syslog"),
])
def test_session_protocol_errors(stream: bytes, problem: str) -> None:
    session = RelpSession()
    got = session.feed(stream)
    assert got.error is not None and problem in got.error
    assert got.group is None and got.payload == b""
    assert session.feed(b"anything").error == got.error


def test_session_unacked_hashes_for_duplicate_detection() -> None:
    session = RelpSession()
    group = session.feed(client_stream([line(1), line(2)])).group
    assert session.unacked_hashes() == [hash(line(1)), hash(line(2))]
    session.durable(group)
    session.take_output()
    assert session.unacked_hashes() == []


def test_duplicate_tracker() -> None:
    tracker = DuplicateTracker(window_s=10.0, max_per_peer=3)
    tracker.remember("10.0.0.1", [1, 2, 2, 3], now=0.0)  # 4 > max_per_peer: the oldest goes
    assert tracker.check("10.0.0.2", [1, 2, 3], now=1.0) == 0  # another peer
    assert tracker.check("10.0.0.1", [2, 2, 2, 9], now=1.0) == 2
    assert tracker.check("10.0.0.1", [2], now=1.0) == 0  # consumed
    tracker.remember("10.0.0.1", [5], now=2.0)
    assert tracker.check("10.0.0.1", [3, 5], now=11.0) == 1  # 3 expired at 10 s, 5 lives to 12 s


# ------------------------------------------------------------------ in-process receiver


class FakeQueue:
    """The ChunkQueue surface RelpReceiver uses; the test decides when chunks become durable."""

    def __init__(self) -> None:
        self.sync_requests = 0
        self.chunks: list[tuple[int, str, bytes]] = []
        self.waiters: dict[int, list] = collections.defaultdict(list)
        self.durable_upto = -1
        self._writable = True
        self._room = asyncio.Event()
        self._room.set()

    def append(self, received_at: int, peer: str, payload: bytes, lines: int | None = None) -> int:
        self.chunks.append((received_at, peer, payload))
        return len(self.chunks) - 1

    def request_sync(self) -> None:
        self.sync_requests += 1  # durability itself is the test's to grant

    def when_durable(self, seq: int, callback) -> None:
        if seq <= self.durable_upto:
            callback()
        else:
            self.waiters[seq].append(callback)

    def make_durable(self, *seqs: int) -> None:
        for seq in seqs:
            for callback in self.waiters.pop(seq, []):
                callback()

    def make_all_durable(self) -> None:
        self.durable_upto = len(self.chunks) - 1
        self.make_durable(*sorted(self.waiters))

    @property
    def writable(self) -> bool:
        return self._writable

    def set_writable(self, value: bool) -> None:
        self._writable = value
        if value:
            self._room.set()
        else:
            self._room.clear()

    async def wait_writable(self) -> None:
        await self._room.wait()

    @property
    def payload(self) -> bytes:
        return b"".join(c[2] for c in self.chunks)


class RawClient:
    """A RELP client on a plain socket, for sessions the server ends by aborting.

    The kernel hands over every byte that arrived before it reports a reset; asyncio's
    StreamReader raises the reset first and drops what it had buffered, so an answer sent just
    before an abort (a "500", say) would go unseen and "no answer" could not fail.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = FrameParser(commands=None, check_txnr=False)
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, port: int) -> "RawClient":
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _recv(self, timeout: float) -> bytes | None:
        """The next bytes; b"" at EOF, None at a reset."""
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        except ConnectionResetError:
            return None

    async def read(self, n: int, timeout: float = 3.0) -> list[Frame]:
        start = len(self.frames)
        while len(self.frames) < start + n:
            data = await self._recv(timeout)
            if not data:
                raise EOFError(f"closed after {self.frames[start:]}")
            self.frames.extend(self.parser.feed(data))
        return self.frames[start:]

    async def read_until_closed(self, timeout: float = 3.0) -> list[Frame]:
        """Every frame until the server closes the connection, with a FIN or a reset."""
        start = len(self.frames)
        while data := await self._recv(timeout):
            self.frames.extend(self.parser.feed(data))
        self.sock.close()
        return self.frames[start:]


@pytest.fixture
async def server():
    queue = FakeQueue()
    receivers = []

    async def make(**kwargs) -> tuple[RelpReceiver, int]:
        kwargs.setdefault("max_connections", 16)
        receiver = RelpReceiver(queue, **kwargs)
        await receiver.start("127.0.0.1", 0)
        receivers.append(receiver)
        return receiver, receiver.sockets[0].getsockname()[1]

    make.queue = queue
    yield make
    for receiver in receivers:
        await receiver.close()


def acks(frames: list[Frame]) -> list[int]:
    assert all(f.command == "rsp" and f.data == b"200 OK" for f in frames), frames
    return [f.txnr for f in frames]


async def test_open_then_ack_only_once_durable_and_in_order(server) -> None:
    receiver, port = await server()
    queue = server.queue
    client = await Client.connect(port)
    answer = await client.open()
    assert answer == Frame(1, "rsp", relp.OPEN_RESPONSE)
    first = await client.send_many([line(1), line(2)])
    await wait_until(lambda: len(queue.chunks) == 1)
    second = await client.send_many([line(3)])
    await wait_until(lambda: len(queue.chunks) == 2)
    assert queue.chunks[0][1] == "127.0.0.1" and queue.chunks[0][2] == line(1) + line(2)
    assert queue.sync_requests >= 2  # each read asks for a group commit now, not at the next tick
    await client.nothing_for(0.2)  # nothing is durable yet: no answer
    queue.make_durable(1)
    await client.nothing_for(0.2)  # the later chunk may not overtake the earlier one
    queue.make_durable(0)
    assert acks(await client.read(3)) == first + second
    assert receiver.lines == 3 and receiver.connection_count == 1
    close_txnr = await client.send("close")
    assert await client.read_until_eof() == [Frame(close_txnr, "rsp", b"")]
    await wait_until(lambda: receiver.connection_count == 0)


async def test_all_frames_of_one_read_are_one_chunk(server) -> None:
    receiver, port = await server()
    client = await Client.connect(port)
    await client.open()
    txnrs = await client.send_many([line(i) for i in range(200)])
    await wait_until(lambda: server.queue.payload.count(b"\n") == 200)
    assert len(server.queue.chunks) <= 3  # 200 frames in one write: one read (rarely a few)
    assert server.queue.payload == b"".join(line(i) for i in range(200))
    server.queue.make_all_durable()
    assert acks(await client.read(200)) == txnrs


async def test_close_is_answered_after_the_pending_acks(server) -> None:
    receiver, port = await server()
    client = await Client.connect(port)
    await client.open()
    client.writer.write(format_frame(2, "syslog", line(1)) + format_frame(3, "close"))
    await wait_until(lambda: len(server.queue.chunks) == 1)
    await client.nothing_for(0.2)
    server.queue.make_all_durable()
    assert await client.read_until_eof() == [Frame(2, "rsp", b"200 OK"), Frame(3, "rsp", b"")]


async def test_never_durable_means_no_ack_and_a_closed_session(server) -> None:
    receiver, port = await server(ack_timeout_s=0.3)
    client = await Client.connect(port)
    await client.open()
    await client.send_many([line(1), line(2)])
    before = metrics.RELP_ACK_TIMEOUTS._value.get()
    frames = await client.read_until_eof(timeout=3)
    assert frames == [Frame(0, "serverclose", b"")]  # no rsp at all, in particular no 500
    assert receiver.ack_timeouts == 1 and metrics.RELP_ACK_TIMEOUTS._value.get() == before + 1
    await wait_until(lambda: receiver.connection_count == 0)
    # Durability after the session closed changes nothing: no error in the callbacks it runs,
    # no second timeout, no session.
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        server.queue.make_all_durable()
        await asyncio.sleep(0.05)  # the answers it would schedule
    finally:
        loop.set_exception_handler(None)
    assert errors == []
    assert receiver.ack_timeouts == 1 and receiver.connection_count == 0 and receiver.lines == 2


async def test_timeout_counts_from_the_oldest_unacked_chunk(server) -> None:
    receiver, port = await server(ack_timeout_s=0.4)
    client = await Client.connect(port)
    await client.open()
    for i in range(4):  # keep the session busy with chunks that do become durable
        txnrs = await client.send_many([line(i)])
        await wait_until(lambda: len(server.queue.chunks) == i + 1)
        server.queue.make_all_durable()
        assert acks(await client.read(1)) == txnrs
        await asyncio.sleep(0.2)
    assert receiver.ack_timeouts == 0


async def test_serverclose_on_close(server) -> None:
    receiver, port = await server(close_grace_s=0.2)
    client = await Client.connect(port)
    await client.open()
    await client.send_many([line(1)])
    await wait_until(lambda: len(server.queue.chunks) == 1)
    await receiver.close()
    assert await client.read_until_eof() == [Frame(0, "serverclose", b"")]
    assert receiver.connection_count == 0


async def test_close_sends_acks_that_become_durable_in_the_grace_period(server) -> None:
    receiver, port = await server(close_grace_s=2.0)
    client = await Client.connect(port)
    await client.open()
    txnrs = await client.send_many([line(1)])
    await wait_until(lambda: len(server.queue.chunks) == 1)
    asyncio.get_running_loop().call_later(0.1, server.queue.make_all_durable)
    await receiver.close()
    assert await client.read_until_eof() == [Frame(txnrs[0], "rsp", b"200 OK"), Frame(0, "serverclose", b"")]


@pytest.mark.parametrize("stream", [
    b"1 open 0\n",  # no offers
    b"hello world\n",
    format_frame(1, "syslog", line(1)),  # before open
    b"1 syslog %d " % (MAX_DATALEN + 1),
])
async def test_framing_and_protocol_errors_abort_without_an_answer(server, stream: bytes) -> None:
    receiver, port = await server()
    before = metrics.RELP_FRAMING_ERRORS._value.get()
    client = await RawClient.connect(port)
    await client.send(stream)
    assert await client.read_until_closed() == []  # an abort: a FIN or, with unread bytes, a reset
    assert receiver.framing_errors == 1 and metrics.RELP_FRAMING_ERRORS._value.get() == before + 1
    assert server.queue.chunks == []


async def test_error_mid_session_keeps_nothing_of_that_read(server) -> None:
    receiver, port = await server()
    client = await RawClient.connect(port)
    await client.send(format_frame(1, "open", LIBRELP_OPEN))
    assert [f.data for f in await client.read(1)] == [relp.OPEN_RESPONSE]
    await client.send(format_frame(2, "syslog", line(1)) + format_frame(9, "syslog", line(2)))
    assert await client.read_until_closed() == []  # no ack for txnr 2 either
    assert server.queue.chunks == []  # unacknowledged: rsyslog resends txnr 2's message
    assert receiver.framing_errors == 1


async def test_missing_trailing_lf_is_added(server) -> None:
    receiver, port = await server()
    client = await Client.connect(port)
    await client.open()
    cut = line(1)[:30]
    await client.send_many([cut, b""])
    await wait_until(lambda: len(server.queue.chunks) == 1)
    assert server.queue.payload == cut + b"\n" + b"\n"


async def test_window_stops_reading_until_acks_go_out(server) -> None:
    receiver, port = await server(max_unacked_frames=10)
    client = await Client.connect(port)
    await client.open()
    for i in range(60):  # one frame per write, and a pause: one read each
        await client.send_many([line(i)])
        await asyncio.sleep(0.002)
    await wait_until(lambda: server.queue.payload.count(b"\n") >= 10)
    await asyncio.sleep(0.3)  # time to read on, were it still reading
    unacked = server.queue.payload.count(b"\n")
    assert unacked < 60  # stopped once 10 or more were waiting for durability
    server.queue.make_all_durable()
    await wait_until(lambda: server.queue.payload.count(b"\n") > unacked)
    while server.queue.payload.count(b"\n") < 60:
        server.queue.make_all_durable()
        await asyncio.sleep(0.01)
    server.queue.make_all_durable()
    assert len(await client.read(60, timeout=5)) == 60


async def test_unwritable_queue_pauses_every_session(server) -> None:
    receiver, port = await server()
    queue = server.queue
    a = await Client.connect(port)
    b = await Client.connect(port)
    await a.open()
    await b.open()
    queue.set_writable(False)
    await a.send_many([line(1)])  # read, appended, then everything pauses
    await wait_until(lambda: receiver.backpressured)
    await b.send_many([line(2)])
    c = await Client.connect(port)  # a new session while paused is not read either
    await c.send("open", LIBRELP_OPEN)
    await asyncio.sleep(0.2)
    assert queue.payload == line(1)
    queue.set_writable(True)
    await wait_until(lambda: queue.payload.count(b"\n") == 2)
    assert not receiver.backpressured
    assert (await c.read(1))[0].data == relp.OPEN_RESPONSE
    queue.make_all_durable()
    assert len(await a.read(1)) == 1 and len(await b.read(1)) == 1


async def test_resends_after_a_broken_session_are_counted(server) -> None:
    receiver, port = await server()
    queue = server.queue
    before = metrics.RELP_DUPLICATES._value.get()
    first = await Client.connect(port)
    await first.open()
    await first.send_many([line(1), line(2)])
    await wait_until(lambda: len(queue.chunks) == 1)
    first.writer.transport.abort()  # the session breaks before the acks
    await wait_until(lambda: receiver.connection_count == 0)
    second = await Client.connect(port)  # rsyslog reconnects and resends with new txnrs
    await second.open()
    txnrs = await second.send_many([line(1), line(2), line(3)])
    await wait_until(lambda: len(queue.chunks) == 2)
    assert receiver.duplicate_frames == 2 and metrics.RELP_DUPLICATES._value.get() == before + 2
    assert queue.chunks[1][2] == line(1) + line(2) + line(3)  # shipped again: at-least-once
    queue.make_all_durable()
    assert acks(await second.read(3)) == txnrs


async def test_connections_beyond_the_limit_are_closed(server) -> None:
    receiver, port = await server(max_connections=2)
    clients = [await Client.connect(port) for _ in range(2)]
    for client in clients:
        await client.open()
    extra = await RawClient.connect(port)
    assert await extra.read_until_closed() == []
    assert receiver.connection_count == 2


async def test_many_sessions_at_once(server) -> None:
    receiver, port = await server(max_connections=64)
    clients = [await Client.connect(port) for _ in range(50)]
    await asyncio.gather(*(c.open() for c in clients))
    sent = await asyncio.gather(*(c.send_many([line(i), line(i + 1000)]) for i, c in enumerate(clients)))
    await wait_until(lambda: server.queue.payload.count(b"\n") == 100)
    server.queue.make_all_durable()
    for client, txnrs in zip(clients, sent):
        assert acks(await client.read(2)) == txnrs
    assert metrics.RELP_SESSIONS._value.get() == 50


async def test_with_the_real_disk_spool_acks_follow_the_group_commit(tmp_path) -> None:
    from agent.spool import DiskSpool

    spool = DiskSpool(tmp_path / "spool", max_bytes=1 << 30, fsync_ms=50, full_policy="backpressure")
    spool.open()
    receiver = RelpReceiver(spool, max_connections=4)
    await receiver.start("127.0.0.1", 0)
    try:
        client = await Client.connect(receiver.sockets[0].getsockname()[1])
        await client.open()
        txnrs = await client.send_many([line(i) for i in range(100)])
        assert acks(await client.read(100, timeout=10)) == txnrs
        chunks = []
        while sum(c.payload.count(b"\n") for c in chunks) < 100:  # one chunk per read: usually one
            chunks.append(await asyncio.wait_for(spool.get(), 2))
        # Acknowledged means durable: the spool runs the callback at once for what is synced.
        durable = []
        for chunk in chunks:
            spool.when_durable(chunk.seq, lambda seq=chunk.seq: durable.append(seq))
        assert durable == [c.seq for c in chunks]
        assert {c.peer for c in chunks} == {"127.0.0.1"}
        assert b"".join(c.payload for c in chunks) == b"".join(line(i) for i in range(100))
    finally:
        await receiver.close()
        await spool.close()
