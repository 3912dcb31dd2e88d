"""agent/ops/httphead.py: the status listener's request reader and the shared header grammar, as tables."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

import agent.ops.metrics  # noqa: F401  (the agent's metrics in the registry)
from agent.ops.httphead import (
    HttpProtocolError,
    Request,
    content_length,
    format_head,
    format_response,
    parse_header_lines,
    parse_request,
)
from agent.ops.status import metrics_answer

# What Prometheus sends (Debian bookworm's 2.42, then 3.x with UTF-8 names), as captured from its scrapes.
PROMETHEUS_2_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                       "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
PROMETHEUS_3_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                       "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
                       "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
PROMETHEUS_SCRAPE = (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9469\r\nUser-Agent: Prometheus/2.42.0\r\n"
                     b"Accept: " + PROMETHEUS_2_ACCEPT.encode() + b"\r\nAccept-Encoding: gzip\r\n"
                     b"X-Prometheus-Scrape-Timeout-Seconds: 10")  # a head, as the reader hands it: no blank line

GOOD = {
    "get": (b"GET /metrics HTTP/1.1\r\nHost: x", Request("GET", "/metrics", {"host": "x"}, True)),
    "head": (b"HEAD /healthz HTTP/1.1\r\nHost: x", Request("HEAD", "/healthz", {"host": "x"}, True)),
    "query-dropped": (b"GET /metrics?name[]=up HTTP/1.1\r\nHost: x", Request("GET", "/metrics", {"host": "x"}, True)),
    "absolute-form": (b"GET http://127.0.0.1:9469/healthz?x HTTP/1.1\r\nHost: 127.0.0.1:9469",
                      Request("GET", "/healthz", {"host": "127.0.0.1:9469"}, True)),
    "absolute-form-no-path": (b"GET HTTP://h HTTP/1.1\r\nHost: h", Request("GET", "/", {"host": "h"}, True)),
    "other-method-is-parsed": (b"DELETE /metrics HTTP/1.1\r\nHost: x", Request("DELETE", "/metrics", {"host": "x"}, True)),
    "connection-close": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close",
                         Request("GET", "/", {"host": "x", "connection": "close"}, False)),
    "connection-close-in-a-list": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close",
                                   Request("GET", "/", {"host": "x", "connection": "TE, Close"}, False)),
    "http10-closes": (b"GET / HTTP/1.0", Request("GET", "/", {}, False)),
    "http10-keep-alive": (b"GET / HTTP/1.0\r\nConnection: keep-alive",
                          Request("GET", "/", {"connection": "keep-alive"}, True)),
    "empty-body-keeps": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0",
                         Request("GET", "/", {"host": "x", "content-length": "0"}, True)),
    "body-closes": (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5",
                    Request("POST", "/metrics", {"host": "x", "content-length": "5"}, False)),
    "chunked-body-closes": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
                            Request("POST", "/", {"host": "x", "transfer-encoding": "chunked"}, False)),
    "header-names-folded-to-lower-case": (b"GET / HTTP/1.1\r\nHOST:  x \t\r\nX-A: 1\r\nx-a: 2",
                                          Request("GET", "/", {"host": "x", "x-a": "1, 2"}, True)),
    "empty-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Empty:", Request("GET", "/", {"host": "x", "x-empty": ""}, True)),
}


@pytest.mark.parametrize("head,expected", GOOD.values(), ids=GOOD.keys())
def test_good_requests(head: bytes, expected: Request) -> None:
    assert parse_request(head) == expected


def test_prometheus_scrape_request() -> None:
    request = parse_request(PROMETHEUS_SCRAPE)
    assert (request.method, request.path, request.keep_alive) == ("GET", "/metrics", True)
    assert request.headers["accept"] == PROMETHEUS_2_ACCEPT
    assert request.headers["x-prometheus-scrape-timeout-seconds"] == "10"


BAD = {
    "empty": b"",
    "no-host-in-1.1": b"GET / HTTP/1.1",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b",
    "http2": b"GET / HTTP/2.0\r\nHost: x",
    "lower-case-version": b"GET / http/1.1\r\nHost: x",
    "no-version": b"GET /\r\nHost: x",
    "two-spaces": b"GET  / HTTP/1.1\r\nHost: x",
    "tab-separated": b"GET\t/ HTTP/1.1\r\nHost: x",
    "trailing-space": b"GET / HTTP/1.1 \r\nHost: x",
    "no-target": b"GET HTTP/1.1\r\nHost: x",
    "relative-target": b"GET metrics HTTP/1.1\r\nHost: x",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: x",
    "non-ascii-target": b"GET /m\xc3\xa9trics HTTP/1.1\r\nHost: x",
    "control-in-target": b"GET /a\x01b HTTP/1.1\r\nHost: x",
    "bad-method-token": b"G(ET / HTTP/1.1\r\nHost: x",
    "leading-blank-line": b"\r\nGET / HTTP/1.1\r\nHost: x",
    "folded-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x",
    "nameless-header": b"GET / HTTP/1.1\r\nHost: x\r\n: v",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: x\r\nnonsense",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b",
    "bare-lf-in-value": b"GET / HTTP/1.1\r\nHost: x\nX-Smuggled: y",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: x\rX-Smuggled: y",
    "bad-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: five",
    "negative-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1",
    "conflicting-content-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2",
}


@pytest.mark.parametrize("head", BAD.values(), ids=BAD.keys())
def test_bad_requests_are_refused(head: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        parse_request(head)


def test_header_lines_and_content_length_are_the_shared_grammar() -> None:
    assert parse_header_lines([b"Content-Length: 10", b"content-length: 10"]) == {"content-length": "10, 10"}
    assert content_length("10, 10") == 10  # the same value twice is one value
    for bad in ("", " ", "1.0", "0x10", "\u0661"):  # ARABIC-INDIC DIGIT ONE is a digit to str.isdigit
        with pytest.raises(HttpProtocolError):
            content_length(bad)


def test_format_response() -> None:
    head = format_response(404, [("Content-Type", "text/plain"), ("Content-Length", "10")], keep_alive=True)
    assert head == (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
                    b"Connection: keep-alive\r\n\r\n")
    assert format_response(400, [], keep_alive=False) == b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("name,value", [("X-A", "a\r\nX-B: b"), ("X-A", "a\nb"), ("X-A", "a\0"), ("X A", "v"), ("", "v")])
def test_format_head_refuses_what_cannot_be_sent(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        format_head("HTTP/1.1 200 OK", [(name, value)])


# ---------------------------------------------------------------- /metrics content negotiation

TEXT_004 = "text/plain; version=0.0.4; charset=utf-8"
NEGOTIATION = {
    "no-accept": ("", TEXT_004),
    "curl": ("*/*", TEXT_004),
    "prometheus-2": (PROMETHEUS_2_ACCEPT, TEXT_004),
    "prometheus-3": (PROMETHEUS_3_ACCEPT, "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    "openmetrics-only-gets-text": ("application/openmetrics-text;version=1.0.0", TEXT_004),
    "text-1.0.0": ("text/plain;version=1.0.0", "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"),
}


@pytest.mark.parametrize("accept,content_type", NEGOTIATION.values(), ids=NEGOTIATION.keys())
def test_metrics_are_the_text_format_with_the_version_asked_for(accept: str, content_type: str) -> None:
    body, got = metrics_answer(accept)
    assert got == content_type
    assert b"# EOF" not in body  # never OpenMetrics
    assert b"# TYPE slsfwd_input_lines_total counter\n" in body  # the text format's family line
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert families["slsfwd_input_lines"] == "counter"
