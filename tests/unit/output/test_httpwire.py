"""agent/httpwire.py: request heads and the incremental response parser, as tables.

Every response is also fed split at every byte, so framing never depends on how reads fall.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.output.http.wire import (
    HttpProtocolError,
    Response,
    ResponseParser,
    format_request,
)


def feed_all(data: bytes, eof: bool = False):
    parser = ResponseParser()
    response = parser.feed(data)
    if response is None and eof:
        response = parser.feed_eof()
    return response


def feed_split(data: bytes, at: int, eof: bool = False):
    parser = ResponseParser()
    response = parser.feed(data[:at])
    assert response is None or at == len(data)  # complete only once every byte is in
    if response is None:
        response = parser.feed(data[at:])
    if response is None and eof:
        response = parser.feed_eof()
    return response


OK_EMPTY = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 0\r\nx-log-requestid: 65A1\r\n\r\n"
ERROR_JSON = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 58\r\n"
              b"Date: Wed, 25 Nov 2026 13:00:00 GMT\r\n\r\n"
              b'{"errorCode":"SignatureNotMatch","errorMessage":"bad sig"}')
CHUNKED = (b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
CHUNKED_TRAILERS = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n")
CLOSE_FRAMED = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n<html>502</html>"
CONTINUE_THEN_OK = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HTTP10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
HTTP10_KEEP = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
CONN_CLOSE = b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
REPEATED = b"HTTP/1.1 200 OK\r\nVia: a\r\nvia: b\r\nContent-Length: 0, 0\r\n\r\n"


@pytest.mark.parametrize("data, eof, status, body, keep_alive, header", [
    (OK_EMPTY, False, 200, b"", True, ("x-log-requestid", "65A1")),
    (ERROR_JSON, False, 403, ERROR_JSON.split(b"\r\n\r\n")[1], True, ("date", "Wed, 25 Nov 2026 13:00:00 GMT")),
    (CHUNKED, False, 500, b"hello world", True, ("transfer-encoding", "chunked")),
    (CHUNKED_TRAILERS, False, 200, b"abc", True, ("transfer-encoding", "gzip, chunked")),
    (CLOSE_FRAMED, True, 502, b"<html>502</html>", False, ("content-type", "text/html")),
    (CONTINUE_THEN_OK, False, 200, b"ok", True, ("content-length", "2")),
    (HTTP10, False, 200, b"ok", False, ("content-length", "2")),
    (HTTP10_KEEP, False, 200, b"ok", True, ("connection", "keep-alive")),
    (CONN_CLOSE, False, 200, b"", False, ("connection", "Close")),
    (NO_CONTENT, False, 204, b"", True, ("x", None)),
    (REPEATED, False, 200, b"", True, ("via", "a, b")),
])
def test_responses(data, eof, status, body, keep_alive, header):
    for at in range(len(data) + 1):
        response = feed_split(data, at, eof)
        assert response is not None, at
        assert (response.status, response.body, response.keep_alive) == (status, body, keep_alive), at
        assert response.headers.get(header[0]) == header[1]


@pytest.mark.parametrize("data, error", [
    (b"HTTP/2 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
    (b"<html>not http</html>\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "content-length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "content-length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "content-length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "too large"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer-encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "CRLF"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", "after the response"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "too large"),
])
def test_malformed_responses_are_errors(data, error):
    with pytest.raises(HttpProtocolError, match=error):
        feed_all(data)


@pytest.mark.parametrize("data", [b"", b"HTTP/1.1 200 OK\r\n", OK_EMPTY[:-2], ERROR_JSON[:-5], CHUNKED[:-5]])
def test_a_close_before_the_end_is_an_error(data):
    parser = ResponseParser()
    assert parser.feed(data) is None
    assert parser.idle == (data == b"")
    with pytest.raises(HttpProtocolError, match="closed before"):
        parser.feed_eof()


def test_the_parser_is_reused_for_the_next_response_on_a_connection():
    parser = ResponseParser()
    for data in (OK_EMPTY, ERROR_JSON, CHUNKED, OK_EMPTY):
        response = parser.feed(data)
        assert response is not None and parser.idle


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_arbitrary_bytes_never_raise_anything_but_a_protocol_error(data, cuts):
    parser = ResponseParser()
    pieces = [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)])]
    outcome: list[Response | None | HttpProtocolError] = []
    try:
        for piece in pieces:
            outcome.append(parser.feed(piece))
        outcome.append(parser.feed_eof())
    except HttpProtocolError as error:  # the one way bad bytes may end
        outcome.append(error)
    # Anything else raised fails the test; what came back must be a response that is really
    # in the bytes: a three-digit status after "HTTP/1.x", a body no longer than the input.
    for result in outcome:
        if isinstance(result, Response):
            assert 100 <= result.status <= 999 and b"HTTP/1." in data
            assert len(result.body) <= len(data)
        else:
            assert result is None or isinstance(result, HttpProtocolError)


def test_request_head():
    head = format_request("POST", "/logstores/s/shards/lb", [("Host", "p.example"), ("Content-Length", "3")])
    assert head == b"POST /logstores/s/shards/lb HTTP/1.1\r\nHost: p.example\r\nContent-Length: 3\r\n\r\n"


@pytest.mark.parametrize("name, value", [("Host", "a\r\nX-Injected: 1"), ("Host", "a\nb"), ("Host", "a\0"),
                                         ("Bad Name", "v"), ("", "v"), ("X:", "v")])
def test_request_head_refuses_header_injection(name, value):
    with pytest.raises(ValueError):
        format_request("POST", "/", [(name, value)])
