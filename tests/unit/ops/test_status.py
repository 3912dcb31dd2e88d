"""agent/ops/status.py: the /metrics and /healthz listener on loopback, spoken to byte by byte.

Every answer is read with the agent's own header grammar; the timeouts and the connection cap are
made small so that slow and hostile clients are seen to be dropped within a test's time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import agent.ops.metrics  # noqa: F401  (the agent's metrics in the registry)
from agent.ops import status
from agent.ops.httphead import parse_header_lines
from agent.ops.status import StatusServer
from agent.output.http.client import Http1Client
from tests.unit.ops.test_httphead import PROMETHEUS_2_ACCEPT

PROMETHEUS_HEADERS = (f"Host: 127.0.0.1\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: {PROMETHEUS_2_ACCEPT}\r\n"
                      "Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n")


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class Listener:
    def __init__(self, server: StatusServer, port: int) -> None:
        self.server, self.port = server, port
        self.problems: list[str] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def ask(self, raw: bytes, *, head_only: bool = False) -> Answer:
        """One request on a fresh connection; the answer."""
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            return await read_answer(reader, head_only=head_only)
        finally:
            writer.close()


async def read_answer(reader: asyncio.StreamReader, *, head_only: bool = False) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head[:-4].split(b"\r\n")
    version, code, _reason = lines[0].split(b" ", 2)
    assert version == b"HTTP/1.1"
    headers = parse_header_lines(lines[1:])
    assert "date" in headers and headers["connection"] in ("keep-alive", "close")
    body = b"" if head_only else await reader.readexactly(int(headers["content-length"]))
    return Answer(int(code), headers, body)


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """The server closed the connection (EOF or reset) within the time, with nothing more sent."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionResetError:
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def listener(monkeypatch) -> AsyncIterator[Listener]:
    monkeypatch.setattr(status, "HEAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(status, "IDLE_TIMEOUT_S", 0.6)
    monkeypatch.setattr(status, "MAX_CONNECTIONS", 4)
    holder: list[Listener] = []
    server = StatusServer(lambda: holder[0].problems)
    port = free_port()
    await server.start("127.0.0.1", port)
    holder.append(Listener(server, port))
    yield holder[0]
    await server.close()


def get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


# ---------------------------------------------------------------- answers


async def test_prometheus_scrape_gets_the_text_format(listener: Listener) -> None:
    answer = await listener.ask(f"GET /metrics HTTP/1.1\r\n{PROMETHEUS_HEADERS}\r\n".encode())
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "content-encoding" not in answer.headers  # gzip is offered, identity is always acceptable
    names = {f.name for f in text_string_to_metric_families(answer.body.decode())}
    assert {"slsfwd_input_lines", "slsfwd_build_info"} <= names


async def test_head_has_the_headers_of_get_and_no_body(listener: Listener) -> None:
    reader, writer = await listener.connect()
    writer.write(get("/healthz", method="HEAD") + get("/healthz"))  # pipelined: the GET answer follows at once
    head = await read_answer(reader, head_only=True)
    after = await read_answer(reader)
    writer.close()
    assert head.status == 200 and head.headers["content-length"] == "3" and head.body == b""
    assert after.status == 200 and after.body == b"ok\n"


async def test_healthz_says_ok_or_the_problems(listener: Listener) -> None:
    ok = await listener.ask(get("/healthz"))
    assert (ok.status, ok.body, ok.headers["content-type"]) == (200, b"ok\n", "text/plain; charset=utf-8")
    listener.problems = ["spool: cannot write", "shipping refused: Unauthorized"]
    sick = await listener.ask(get("/healthz"))
    assert (sick.status, sick.body) == (503, b"spool: cannot write\nshipping refused: Unauthorized\n")


REFUSALS = {
    "unknown-path": (get("/"), 404, "keep-alive"),
    "path-with-suffix": (get("/metrics/"), 404, "keep-alive"),
    "post": (get("/metrics", method="POST"), 405, "keep-alive"),
    "post-with-body": (get("/metrics", "Content-Length: 4\r\n", method="POST") + b"ping", 405, "close"),
    "lower-case-method": (get("/metrics", method="get"), 405, "keep-alive"),
    "no-host": (b"GET /metrics HTTP/1.1\r\n\r\n", 400, "close"),
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "close"),  # a TLS hello
    "folded-header": (get("/metrics", "X-A: 1\r\n continued\r\n"), 400, "close"),
    "oversized-head": (get("/metrics", "X-Pad: " + "a" * 9000 + "\r\n"), 431, "close"),
    "endless-header": (b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 100_000, 431, "close"),
}


@pytest.mark.parametrize("raw,code,connection", REFUSALS.values(), ids=REFUSALS.keys())
async def test_refusals(listener: Listener, raw: bytes, code: int, connection: str) -> None:
    reader, writer = await listener.connect()
    writer.write(raw)
    answer = await read_answer(reader)
    assert (answer.status, answer.headers["connection"]) == (code, connection)
    if code == 405:
        assert answer.headers["allow"] == "GET, HEAD"
    if connection == "close":
        assert await closed(reader)
    else:  # the connection still serves
        writer.write(get("/healthz"))
        assert (await read_answer(reader)).body == b"ok\n"
    writer.close()


async def test_a_broken_renderer_is_a_500_and_the_listener_lives(listener: Listener) -> None:
    listener.problems = ["spool: cannot write", None]  # type: ignore[list-item]  (joining them fails)
    broken = await listener.ask(get("/healthz"))
    assert (broken.status, broken.headers["connection"]) == (500, "close")
    listener.problems = []
    assert (await listener.ask(get("/healthz"))).status == 200


# ---------------------------------------------------------------- connections


async def test_keep_alive_serves_two_requests_on_one_connection(listener: Listener) -> None:
    reader, writer = await listener.connect()
    for path in ("/metrics", "/healthz"):
        writer.write(get(path))
        answer = await read_answer(reader)
        assert answer.status == 200 and answer.headers["connection"] == "keep-alive"
    writer.close()


async def test_the_agents_own_client_reuses_one_connection(listener: Listener) -> None:
    client = Http1Client(ssl_context=None, connect_timeout_s=2, request_timeout_s=2)
    try:
        for _ in range(3):
            response = await client.request("127.0.0.1", listener.port, "GET", "/healthz", [("Host", "127.0.0.1")], b"")
            assert (response.status, response.body, response.keep_alive) == (200, b"ok\n", True)
        assert listener.server.connections == 1
    finally:
        await client.close()


@pytest.mark.parametrize("request_bytes", [get("/healthz", "Connection: close\r\n"), b"GET /healthz HTTP/1.0\r\n\r\n"],
                         ids=["connection-close", "http10"])
async def test_close_is_honoured(listener: Listener, request_bytes: bytes) -> None:
    reader, writer = await listener.connect()
    writer.write(request_bytes)
    answer = await read_answer(reader)
    assert (answer.body, answer.headers["connection"]) == (b"ok\n", "close")
    assert await closed(reader, within=0.5)
    writer.close()


async def test_http10_keep_alive_is_honoured(listener: Listener) -> None:
    reader, writer = await listener.connect()
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await read_answer(reader)).headers["connection"] == "keep-alive"
    writer.close()


async def test_slowloris_is_answered_408_and_dropped(listener: Listener) -> None:
    reader, writer = await listener.connect()
    started = time.monotonic()
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    answering = asyncio.create_task(read_answer(reader))
    for _ in range(40):  # a header byte every 50 ms: never a whole head
        if answering.done():
            break
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    answer = await answering
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert time.monotonic() - started < status.HEAD_TIMEOUT_S + 1.5
    assert await closed(reader)
    writer.close()


async def test_a_silent_or_idle_connection_is_closed(listener: Listener) -> None:
    reader, writer = await listener.connect()
    started = time.monotonic()
    assert await closed(reader)  # silent from the start: closed after HEAD_TIMEOUT_S
    assert status.HEAD_TIMEOUT_S - 0.1 < time.monotonic() - started < status.HEAD_TIMEOUT_S + 1.5
    writer.close()
    reader, writer = await listener.connect()
    writer.write(get("/healthz"))
    await read_answer(reader)
    started = time.monotonic()
    assert await closed(reader)  # kept alive, then idle: closed after IDLE_TIMEOUT_S
    assert status.IDLE_TIMEOUT_S - 0.1 < time.monotonic() - started < status.IDLE_TIMEOUT_S + 1.5
    writer.close()
    assert listener.server.connections == 0


async def test_connections_are_capped_and_the_longest_waiting_gives_way(listener: Listener) -> None:
    held = [await listener.connect() for _ in range(status.MAX_CONNECTIONS)]
    for reader, writer in held:  # each served once, then idle
        writer.write(get("/healthz"))
        await read_answer(reader)
    assert listener.server.connections == status.MAX_CONNECTIONS
    newcomer = await listener.ask(get("/healthz"))  # still served
    assert newcomer.status == 200
    assert await closed(held[0][0], within=1.0)  # the oldest idle one made room
    assert listener.server.connections <= status.MAX_CONNECTIONS
    reader, writer = held[1]
    writer.write(get("/healthz"))  # the others still serve
    assert (await read_answer(reader)).status == 200
    for _, writer in held:
        writer.close()


async def test_a_flood_of_connections_never_exceeds_the_cap(listener: Listener) -> None:
    opened = [await listener.connect() for _ in range(4 * status.MAX_CONNECTIONS)]
    await asyncio.sleep(0.1)
    assert listener.server.connections <= status.MAX_CONNECTIONS
    assert (await listener.ask(get("/healthz"))).status == 200  # and a scraper still gets in
    for _, writer in opened:
        writer.close()


async def test_close_drops_every_connection_and_stops_listening(listener: Listener) -> None:
    reader, writer = await listener.connect()
    writer.write(get("/healthz"))
    await read_answer(reader)
    await listener.server.close()
    assert await closed(reader, within=1.0)
    with pytest.raises(OSError):
        await listener.connect()
    writer.close()
