"""The error table, backoff, rate-limited self-logging, endpoint parsing, the
clock-offset signer, the in-memory queue and the dead-letter store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from email.utils import formatdate, parsedate_to_datetime

import pytest
from aliyun.log.credentials import StaticCredentialsProvider
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ops.selflog import RateLimitedLog
from agent.output.backoff import QUOTA, TRANSIENT, Backoff
from agent.output.deadletter import DeadLetters, directory_bytes
from agent.output.errors import (
    BAD_RESPONSE,
    ERROR_CODES,
    NETWORK_ERROR,
    Action,
    ShipError,
    classify,
)
from agent.output.putlogs import ClockOffsetSigner, Endpoint
from agent.pipeline.batch import Destination
from agent.pipeline.encode import encode_log
from agent.spool.queue import MemoryQueue

# ---------------------------------------------------------------- error table

R, T, H, RS, S, RP, B = Action.RETRY, Action.THROTTLE, Action.HOLD, Action.RESIGN, Action.SPLIT, Action.REPAIR, Action.BISECT

ERROR_TABLE = [
    # status, errorCode, action, retriable
    (400, "PostBodyInvalid", B, False),
    (400, "InvalidTimestamp", RP, False),
    (400, "InvalidEncoding", RP, False),
    (400, "InvalidKey", B, False),
    (400, "PostBodyTooLarge", S, False),
    (413, "PostBodyTooLarge", S, False),
    (400, "PostBodyUncompressError", B, False),
    (400, "InvalidBodyRawSize", B, False),
    (400, "InvalidCompressType", B, False),
    (400, "SomeFutureRejection", B, False),
    (400, "RequestTimeExpired", RS, True),
    (401, "SignatureNotMatch", H, True),
    (401, "Unauthorized", H, True),
    (401, "InvalidAccessKeyId", H, True),
    (401, "SecurityTokenExpired", H, True),
    (403, "Unauthorized", H, True),  # the code decides, not the status
    (401, "SomethingElse", H, True),
    (403, "WriteQuotaExceed", T, True),
    (403, "ShardWriteQuotaExceed", T, True),
    (403, "ProjectQuotaExceed", T, True),
    (403, "SomethingElse", T, True),
    (429, None, T, True),
    (404, "ProjectNotExist", H, True),
    (404, "LogStoreNotExist", H, True),
    (500, "InternalServerError", R, True),
    (503, "ServerBusy", R, True),
    (502, None, R, True),
    (500, "SomethingElse", R, True),
    (408, "RequestTimeout", R, True),
    (None, None, R, True),  # no response at all: network
    (400, None, R, True),  # a 4xx without a readable code is no proof the data is bad
    (400, "", R, True),
]


@pytest.mark.parametrize("status, code, action, retriable", ERROR_TABLE, ids=[f"{s}-{c}" for s, c, _, _ in ERROR_TABLE])
def test_error_table(status, code, action, retriable):
    assert classify(status, code) is action
    assert action.retriable is retriable


@pytest.mark.parametrize(
    "action, retriable",
    [(R, True), (T, True), (H, True), (RS, True), (S, False), (RP, False), (B, False)],
)
def test_action_retriable(action, retriable):
    assert action.retriable is retriable


@pytest.mark.parametrize(
    "code, status, action, label",
    [
        (NETWORK_ERROR, None, R, "NetworkError"),
        (BAD_RESPONSE, 502, R, "BadResponse"),
        (BAD_RESPONSE, 400, R, "BadResponse"),  # unreadable 4xx body: retry, not dead-letter
        (BAD_RESPONSE, 401, H, "BadResponse"),
        ("WriteQuotaExceed", 403, T, "WriteQuotaExceed"),
        ("InvalidTimestamp", 400, RP, "InvalidTimestamp"),
        ("InvalidKey", 400, B, "http_4xx"),  # not in the table: status class
        ("Weird-Code-1234", 400, B, "http_4xx"),
        ("Weird-Code-5678", 503, R, "http_5xx"),
        ("Weird", None, R, "error"),
    ],
)
def test_ship_error(code, status, action, label):
    error = ShipError(code, "details", status=status, request_id="req-1")
    assert error.action is action
    assert error.retriable is action.retriable
    assert error.metric_label == label
    assert str(error) == f"{code}: details"
    assert error.request_id == "req-1"


@settings(max_examples=100, deadline=None)
@given(code=st.text(max_size=30), status=st.none() | st.integers(min_value=100, max_value=599))
def test_metric_label_is_low_cardinality(code, status):
    allowed = set(ERROR_CODES) | {NETWORK_ERROR, BAD_RESPONSE, "error"} | {f"http_{n}xx" for n in range(1, 6)}
    assert ShipError(code, "m", status=status).metric_label in allowed


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    "policy, ceilings",
    [
        (TRANSIENT, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]),
        (QUOTA, [3.0, 6.0, 12.0, 24.0, 48.0, 60.0, 60.0]),
        (Backoff(base=1.0, cap=5.0), [1.0, 2.0, 4.0, 5.0, 5.0]),
    ],
)
def test_backoff_ceiling_doubles_and_is_capped(policy, ceilings):
    assert [policy.ceiling(n) for n in range(len(ceilings))] == pytest.approx(ceilings)
    assert policy.ceiling(10_000) == policy.cap  # no overflow for huge attempt numbers


@pytest.mark.parametrize("policy", [TRANSIENT, QUOTA, Backoff(base=0.5, cap=8.0, floor=0.25)])
@pytest.mark.parametrize("attempt", [0, 1, 3, 50])
def test_backoff_delay_bounds_with_injected_rand(policy, attempt):
    ceiling = policy.ceiling(attempt)
    assert policy.delay(attempt, rand=lambda: 0.0) == pytest.approx(policy.floor * ceiling)
    assert policy.delay(attempt, rand=lambda: 1.0) == pytest.approx(ceiling)
    mid = policy.delay(attempt, rand=lambda: 0.5)
    assert policy.floor * ceiling <= mid <= ceiling


def test_quota_backoff_is_never_a_tight_loop():
    assert QUOTA.floor > 0
    assert QUOTA.delay(0, rand=lambda: 0.0) >= 1.0
    assert TRANSIENT.delay(0, rand=lambda: 0.0) == 0.0  # full jitter


@settings(max_examples=100, deadline=None)
@given(
    attempt=st.integers(min_value=0, max_value=200),
    r=st.floats(min_value=0.0, max_value=1.0),
    floor=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_delay_always_within_floor_and_ceiling(attempt, r, floor):
    policy = Backoff(base=0.1, cap=30.0, floor=floor)
    ceiling = policy.ceiling(attempt)
    delay = policy.delay(attempt, rand=lambda: r)
    assert floor * ceiling - 1e-9 <= delay <= ceiling + 1e-9


# ---------------------------------------------------------------- rate-limited self-log


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@pytest.fixture
def captured():
    logger = logging.getLogger(f"test.selflog.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    yield logger, handler.messages
    logger.removeHandler(handler)


def test_rate_limited_log(captured):
    logger, messages = captured
    now = [1000.0]
    rl = RateLimitedLog(logger, interval_s=60.0, clock=lambda: now[0])
    assert rl.warning("peer %s sent junk", "a") is True
    now[0] += 1
    assert rl.warning("peer %s sent junk", "b") is False  # within the interval: suppressed
    now[0] += 58
    assert rl.warning("peer %s sent junk", "c") is False
    assert messages == [(logging.WARNING, "peer a sent junk")]
    now[0] += 1  # 60 s after the first
    assert rl.warning("peer %s sent junk", "d") is True
    assert messages[-1] == (logging.WARNING, "peer d sent junk (2 similar messages suppressed)")
    now[0] += 61
    assert rl.error("peer %s sent junk", "e") is True  # nothing suppressed since: plain message
    assert messages[-1] == (logging.ERROR, "peer e sent junk")
    assert len(messages) == 3


def test_rate_limited_log_levels(captured):
    logger, messages = captured
    now = [0.0]
    rl = RateLimitedLog(logger, interval_s=10.0, clock=lambda: now[0])
    rl.info("i")
    now[0] += 10
    rl.error("e")
    now[0] += 10
    rl.warning("w")
    assert messages == [(logging.INFO, "i"), (logging.ERROR, "e"), (logging.WARNING, "w")]


# ---------------------------------------------------------------- endpoint


@pytest.mark.parametrize(
    "text, scheme, port, connect_host, host_header",
    [
        ("cn-hangzhou-intranet.log.aliyuncs.com", "http", 80,
         "proj.cn-hangzhou-intranet.log.aliyuncs.com", "proj.cn-hangzhou-intranet.log.aliyuncs.com"),
        ("https://cn-hangzhou.log.aliyuncs.com", "https", 443,
         "proj.cn-hangzhou.log.aliyuncs.com", "proj.cn-hangzhou.log.aliyuncs.com"),
        ("http://cn-hangzhou.log.aliyuncs.com/", "http", 80,
         "proj.cn-hangzhou.log.aliyuncs.com", "proj.cn-hangzhou.log.aliyuncs.com"),
        ("http://127.0.0.1:8080", "http", 8080, "127.0.0.1", "proj.127.0.0.1:8080"),
        ("127.0.0.1:8080", "http", 8080, "127.0.0.1", "proj.127.0.0.1:8080"),
        ("https://10.0.0.9", "https", 443, "10.0.0.9", "proj.10.0.0.9"),
        ("http://[::1]:8080", "http", 8080, "::1", "proj.[::1]:8080"),
        ("sls.example.com:8443", "http", 8443, "proj.sls.example.com", "proj.sls.example.com:8443"),
    ],
)
def test_endpoint_parse(text, scheme, port, connect_host, host_header):
    endpoint = Endpoint.parse(text)
    assert (endpoint.scheme, endpoint.port) == (scheme, port)
    assert endpoint.connect_host("proj") == connect_host
    assert endpoint.host_header("proj") == host_header


@pytest.mark.parametrize(
    "text",
    [
        "ftp://cn-hangzhou.log.aliyuncs.com",
        "http://cn-hangzhou.log.aliyuncs.com/logstores",
        "https://example.com/a/b",
        "",
        "http://",
        "http://example.com:99999",
        "http://example.com:port",
    ],
)
def test_endpoint_parse_rejects(text):
    with pytest.raises(ValueError):
        Endpoint.parse(text)


def test_endpoint_port_zero_is_rejected():
    with pytest.raises(ValueError):
        Endpoint.parse("http://127.0.0.1:0")


# ---------------------------------------------------------------- clock-offset signer


def _provider():
    return StaticCredentialsProvider("test-akid", "test-secret")


def _sign(signer: ClockOffsetSigner) -> dict[str, str]:
    headers = {
        "Content-Type": "application/x-protobuf",
        "x-log-apiversion": "0.6.0",
        "x-log-bodyrawsize": "3",
        "x-log-compresstype": "lz4",
        "Host": "proj.cn-hangzhou.log.aliyuncs.com",
    }
    signer.sign("POST", "/logstores/ls/shards/lb", headers, b"abc")
    return headers


def test_signer_without_offset_uses_the_current_time():
    headers = _sign(ClockOffsetSigner(_provider(), "v1", ""))
    assert abs(parsedate_to_datetime(headers["Date"]).timestamp() - time.time()) < 5
    assert headers["Date"].endswith(" GMT")
    assert headers["Authorization"].startswith("LOG test-akid:")
    assert headers["Content-MD5"] == "900150983CD24FB0D6963F7D28E17F72"  # md5("abc"), upper-case hex


def test_correct_from_adopts_the_service_clock_v1():
    signer = ClockOffsetSigner(_provider(), "v1", "")
    ahead = formatdate(time.time() + 3600, usegmt=True)  # RFC 1123, one hour ahead
    assert signer.correct_from(ahead) is True
    assert signer.offset_s == pytest.approx(3600, abs=3)
    headers = _sign(signer)
    signed = parsedate_to_datetime(headers["Date"]).timestamp()
    assert signed - time.time() == pytest.approx(3600, abs=5)
    before = headers["Authorization"]
    signer.offset_s = 0.0
    assert _sign(signer)["Authorization"] != before  # the date is part of the signature


def test_correct_from_adopts_the_service_clock_v4():
    signer = ClockOffsetSigner(_provider(), "v4", "cn-hangzhou")
    assert signer.correct_from(formatdate(time.time() + 3600, usegmt=True)) is True
    headers = _sign(signer)
    stamp = datetime.strptime(headers["x-log-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    assert stamp - time.time() == pytest.approx(3600, abs=5)
    assert headers["Authorization"].startswith("SLS4-HMAC-SHA256 Credential=test-akid/")


@pytest.mark.parametrize("date", [None, "", "not a date", "Mon, 99 Foo 2025 99:99:99 GMT"])
def test_correct_from_ignores_unusable_dates(date):
    signer = ClockOffsetSigner(_provider(), "v1", "")
    signer.offset_s = 12.0
    assert signer.correct_from(date) is False
    assert signer.offset_s == 12.0


def test_correct_from_behind():
    signer = ClockOffsetSigner(_provider(), "v1", "")
    assert signer.correct_from(formatdate(time.time() - 1800, usegmt=True)) is True
    assert signer.offset_s == pytest.approx(-1800, abs=3)


# ---------------------------------------------------------------- MemoryQueue


async def test_memory_queue_append_get_ack():
    q = MemoryQueue(max_bytes=1000)
    q.append(100, "127.0.0.1", b"a\nb\n")
    q.append(101, "10.0.0.7", b"c\n")
    assert (q.backlog_bytes, q.backlog_chunks, q.unread, q.unacked_lines()) == (6, 2, 2, 3)
    first = await q.get()
    second = await q.get()
    assert (first.seq, first.received_at, first.peer, first.payload) == (0, 100, "127.0.0.1", b"a\nb\n")
    assert (second.seq, second.payload, second.size) == (1, b"c\n", 2)
    assert q.unread == 0
    assert q.backlog_bytes == 6  # taken is not acknowledged
    q.ack(second.seq)  # acknowledgement may come out of order
    assert (q.backlog_bytes, q.backlog_chunks, q.unacked_lines()) == (4, 1, 2)
    q.ack(first.seq)
    assert (q.backlog_bytes, q.backlog_chunks, q.unacked_lines()) == (0, 0, 0)
    q.ack(first.seq)  # twice: ignored
    q.ack(99)  # unknown: ignored
    assert (q.backlog_bytes, q.backlog_chunks, q.unacked_lines()) == (0, 0, 0)


async def test_memory_queue_get_waits_for_data():
    q = MemoryQueue(max_bytes=1000)
    task = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done()
    q.append(1, "", b"x\n")
    chunk = await asyncio.wait_for(task, 1)
    assert chunk.payload == b"x\n"


async def test_memory_queue_writable_flips_at_max_bytes():
    q = MemoryQueue(max_bytes=10)
    q.append(1, "", b"12345\n")  # 6 bytes
    assert q.writable
    await asyncio.wait_for(q.wait_writable(), 1)  # returns at once while writable
    q.append(1, "", b"123\n")  # 10 bytes: full
    assert not q.writable
    waiter = asyncio.create_task(q.wait_writable())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiter.done()
    q.append(1, "", b"more\n")  # appending never fails, even when full
    assert q.backlog_bytes == 15
    chunks = [await q.get() for _ in range(3)]
    q.ack(chunks[2].seq)  # 10 bytes left: still full
    await asyncio.sleep(0)
    assert not q.writable and not waiter.done()
    q.ack(chunks[0].seq)  # 4 bytes
    assert q.writable
    await asyncio.wait_for(waiter, 1)
    await q.flush()
    await q.close()


# ---------------------------------------------------------------- dead letters

DEST = Destination("proj", "store", "topic-a")


def _logs():
    return [
        encode_log(1795591573, [("msg", "héllo 😀".encode()), ("app-name", b"todo-list")]),
        encode_log(1795591574, [("msg", b"bad \xff byte")]),
    ]


async def test_dead_letters_written_as_json_lines(tmp_path):
    directory = tmp_path / "dead-letter"
    dead = DeadLetters(directory, max_bytes=100_000)
    before = int(time.time())
    assert await dead.write(DEST, "10.0.0.1", _logs(), "InvalidKey", "key is invalid") == 2
    (path,) = list(directory.glob("dead-letter-*.jsonl"))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2
    first, second = records
    assert {k: v for k, v in first.items() if k != "dead_lettered_at"} == {
        "reason": "InvalidKey",
        "message": "key is invalid",
        "project": "proj",
        "logstore": "store",
        "topic": "topic-a",
        "source": "10.0.0.1",
        "time": 1795591573,
        "contents": [["msg", "héllo 😀"], ["app-name", "todo-list"]],
    }
    assert before <= first["dead_lettered_at"] <= int(time.time()) + 1
    assert second["contents"] == [["msg", "bad \\xff byte"]]
    assert dead.written_logs == 2 and dead.over_cap_logs == 0
    assert directory_bytes(directory) == path.stat().st_size


async def test_dead_letters_append_to_the_same_file(tmp_path):
    dead = DeadLetters(tmp_path, max_bytes=100_000)
    await dead.write(DEST, "s", _logs()[:1], "A", "")
    await dead.write(DEST, "s", _logs()[1:], "B", "")
    (path,) = list(tmp_path.glob("dead-letter-*.jsonl"))
    assert [json.loads(line)["reason"] for line in path.read_text().splitlines()] == ["A", "B"]
    assert dead.written_logs == 2


async def test_dead_letters_over_the_cap_are_counted_not_written(tmp_path, caplog):
    directory = tmp_path / "dead-letter"
    dead = DeadLetters(directory, max_bytes=50)
    with caplog.at_level(logging.ERROR, logger="slsfwd.deadletter"):
        assert await dead.write(DEST, "10.0.0.1", _logs(), "InvalidKey", "m") == 0
    assert dead.over_cap_logs == 2 and dead.written_logs == 0
    assert not directory.exists() or not any(directory.iterdir())
    assert any("full" in r.getMessage() for r in caplog.records)


async def test_dead_letters_cap_counts_what_is_already_there(tmp_path):
    dead = DeadLetters(tmp_path, max_bytes=600)
    assert await dead.write(DEST, "s", _logs()[:1], "A", "") == 1
    (path,) = list(tmp_path.glob("dead-letter-*.jsonl"))
    size = path.stat().st_size
    assert size < 600
    # a second batch that would take the directory over the cap is not written at all
    assert await dead.write(DEST, "s", _logs() * 3, "B", "") == 0
    assert path.stat().st_size == size
    assert dead.over_cap_logs == 6 and dead.written_logs == 1


async def test_dead_letters_cap_sees_what_a_replay_removed(tmp_path):
    dead = DeadLetters(tmp_path, max_bytes=600)
    assert await dead.write(DEST, "s", _logs()[:1], "A", "") == 1
    (path,) = list(tmp_path.glob("dead-letter-*.jsonl"))
    assert await dead.write(DEST, "s", _logs(), "B", "") == 0  # 223 + 422 bytes would pass the cap
    path.write_bytes(b"")  # `slsfwd dead-letter replay` shipped them meanwhile
    assert await dead.write(DEST, "s", _logs(), "B", "") == 2


async def test_a_dead_letter_write_that_fails_raises_and_stores_nothing(tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    dead = DeadLetters(blocked / "dead-letter", max_bytes=100_000)
    with pytest.raises(OSError):
        await dead.write(DEST, "s", _logs(), "A", "")
    assert dead.written_logs == 0 and dead.over_cap_logs == 0
