"""Proves the PutLogs stand-in right against the official SDK.

Good requests come from ``aliyun.log.LogClient``. Bad ones are built by hand
but signed with the SDK's ``make_auth(...).sign_request``, so that only the
one thing under test is wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import lz4.block
import pytest
from aliyun.log import LogClient, LogException, LogItem, PutLogsRequest
from aliyun.log.auth import AuthV1, AuthV4, make_auth
from aliyun.log.credentials import StaticCredentialsProvider
from aliyun.log.proto import LogGroupRaw

from tests.support import REPO
from tests.support.standin import Fault, PutLogsStandin, Rejection

AKID = "test-akid"
SECRET = "test-secret"
PROJECT = "my-project"
LOGSTORE = "app-logs"
REPO_ROOT = REPO


@pytest.fixture
async def standin() -> AsyncIterator[PutLogsStandin]:
    async with PutLogsStandin(access_key_id=AKID, access_key_secret=SECRET) as server:
        yield server


# ---------------------------------------------------------------- SDK side


def sdk_client(endpoint: str, *, akid: str = AKID, secret: str = SECRET, **kwargs: Any) -> LogClient:
    client = LogClient(endpoint, akid, secret, source="10.0.0.9", **kwargs)
    client._isRowIp = True  # type: ignore[attr-defined]  # else the SDK puts the project in front of the IP
    return client


def sdk_put(client: LogClient, items: list[LogItem], **kwargs: Any) -> Any:
    request = PutLogsRequest(
        PROJECT,
        LOGSTORE,
        kwargs.pop("topic", "web"),
        kwargs.pop("source", "192.168.1.7"),
        items,
        logtags=kwargs.pop("logtags", [("__hostname__", "host-1")]),
        **kwargs,
    )
    return client.put_logs(request)


async def put_expecting_error(endpoint: str, items: list[LogItem], **client_kwargs: Any) -> LogException:
    client = sdk_client(endpoint, **client_kwargs)
    with pytest.raises(LogException) as caught:
        await asyncio.to_thread(sdk_put, client, items)
    return caught.value


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- hand-made requests


def log_group(
    logs: list[tuple[int, list[tuple[str, bytes]]]],
    *,
    topic: str = "",
    source: str = "10.0.0.9",
    tags: list[tuple[str, str]] | None = None,
) -> bytes:
    group = LogGroupRaw()
    group.Topic = topic
    group.Source = source
    for log_time, contents in logs:
        log = group.Logs.add()
        log.Time = log_time
        for key, value in contents:
            content = log.Contents.add()
            content.Key = key
            content.Value = value
    for tag_key, tag_value in tags or []:
        tag = group.LogTags.add()
        tag.Key = tag_key
        tag.Value = tag_value
    encoded: bytes = group.SerializeToString()
    return encoded


def one_log(value: bytes = b"hello", log_time: int | None = None) -> bytes:
    return log_group([(now() if log_time is None else log_time, [("msg", value)])])


def compress_body(raw: bytes, compress: str) -> bytes:
    if compress == "lz4":
        compressed: bytes = lz4.block.compress(raw, store_size=False)
        return compressed
    if compress == "deflate":
        return zlib.compress(raw)
    return raw


@dataclass
class Crafted:
    path: str
    headers: dict[str, str]
    body: bytes


def craft(
    standin: PutLogsStandin,
    raw: bytes,
    *,
    body: bytes | None = None,
    compress: str = "lz4",
    auth_version: str = "v1",
    region: str = "cn-hangzhou",
    akid: str = AKID,
    secret: str = SECRET,
    token: str = "",
    before_signing: Callable[[dict[str, str]], object] | None = None,
) -> Crafted:
    """A PutLogs request for `raw`, signed by the SDK after `before_signing` has edited the headers."""
    if body is None:
        body = compress_body(raw, compress)
    headers = {
        "x-log-bodyrawsize": str(len(raw)),
        "Content-Type": "application/x-protobuf",
        "x-log-apiversion": "0.6.0",
        "Host": f"{PROJECT}.{standin.endpoint}",
        "Content-Length": str(len(body)),
    }
    if compress:
        headers["x-log-compresstype"] = compress
    if before_signing:
        before_signing(headers)
    resource = f"/logstores/{LOGSTORE}/shards/lb"
    auth = make_auth(StaticCredentialsProvider(akid, secret, token), auth_version, region)
    auth.sign_request("POST", resource, {}, headers, body)
    return Crafted(resource, headers, body)


@dataclass
class Reply:
    status: int
    text: str
    headers: dict[str, str]

    @property
    def error_code(self) -> str:
        return str(json.loads(self.text)["errorCode"])


async def send(standin: PutLogsStandin, request: Crafted, timeout: float = 5.0) -> Reply:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.post(standin.url + request.path, data=request.body, headers=request.headers) as resp:
            return Reply(resp.status, await resp.text(), dict(resp.headers))


async def assert_refused(standin: PutLogsStandin, request: Crafted, status: int, error_code: str) -> Reply:
    reply = await send(standin, request)
    assert (reply.status, reply.error_code) == (status, error_code), reply.text
    assert reply.headers.get("x-log-requestid")
    assert json.loads(reply.text)["errorMessage"]
    assert standin.rejections[-1][:2] == (status, error_code)
    assert standin.log_count == 0 and standin.groups == []
    return reply


# ---------------------------------------------------------------- accepted by the SDK


@pytest.mark.parametrize("auth_version", ["v1", "v4"])
async def test_sdk_put_is_recorded_exactly(standin: PutLogsStandin, auth_version: str) -> None:
    t = now() - 30
    items = [
        LogItem(t, [("app-name", "todo-list"), ("msg", "héllo wörld 中文"), ("app-name", "dup")], time_nano_part=123),
        LogItem(t + 1, [("msg", "")], time_nano_part=999_999_999),
    ]
    client = sdk_client(standin.endpoint, auth_version=auth_version, region="cn-hangzhou")

    response = await asyncio.to_thread(sdk_put, client, items, logtags=[("__hostname__", "host-1"), ("env", "dev")])

    assert response.get_request_id()
    assert standin.requests == 1 and standin.rejections == []
    [group] = standin.groups
    assert (group.project, group.logstore, group.topic, group.source) == (PROJECT, LOGSTORE, "web", "192.168.1.7")
    assert group.tags == {"__hostname__": "host-1", "env": "dev"}
    assert (group.auth_version, group.compress_type, group.hash_key) == (auth_version, "lz4", None)
    assert group.raw_size > 0 and group.compressed_size > 0
    first, second = standin.logs
    assert (first.time, first.time_ns) == (t, 123)
    assert first.pairs == [("app-name", "todo-list"), ("msg", "héllo wörld 中文"), ("app-name", "dup")]
    assert first.contents == {"app-name": "dup", "msg": "héllo wörld 中文"}
    assert (second.time, second.time_ns, second.pairs) == (t + 1, 999_999_999, [("msg", "")])
    assert (first.project, first.logstore, first.topic, first.source, first.tags) == (
        PROJECT, LOGSTORE, "web", "192.168.1.7", group.tags,
    )
    assert standin.logs_with("app-name", "todo-list") == [first]
    assert standin.logs_with("app-name", "nope") == []
    assert standin.log_count == 2 and standin.group_count == 1


@pytest.mark.parametrize("auth_version", ["v1", "v4"])
async def test_sdk_hash_key_route_is_accepted(standin: PutLogsStandin, auth_version: str) -> None:
    # The key is a query parameter, so this also proves query strings are signed and checked.
    client = sdk_client(standin.endpoint, auth_version=auth_version, region="cn-hangzhou")
    await asyncio.to_thread(sdk_put, client, [LogItem(now(), [("a", "b")])], hashKey="0" * 32)
    assert standin.groups[0].hash_key == "0" * 32


@pytest.mark.parametrize("compress", ["deflate", ""])
async def test_deflate_and_uncompressed_bodies_are_accepted(standin: PutLogsStandin, compress: str) -> None:
    reply = await send(standin, craft(standin, one_log(b"plain"), compress=compress))
    assert (reply.status, reply.text) == (200, ""), reply.text
    assert standin.logs[0].contents == {"msg": "plain"}
    assert standin.groups[0].compress_type == compress


@pytest.mark.parametrize("with_port", [True, False])
async def test_host_with_or_without_port_is_accepted(standin: PutLogsStandin, with_port: bool) -> None:
    # The SDK sends Host without the port for an IP endpoint; our agent may send it with the port.
    host = f"{PROJECT}.{standin.endpoint}" if with_port else f"{PROJECT}.127.0.0.1"
    reply = await send(standin, craft(standin, one_log(), before_signing=lambda h: h.update(Host=host)))
    assert reply.status == 200, reply.text
    assert standin.groups[0].project == PROJECT


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize("auth_version", ["v1", "v4"])
async def test_wrong_secret_is_signature_not_match(standin: PutLogsStandin, auth_version: str) -> None:
    error = await put_expecting_error(
        standin.endpoint, [LogItem(now(), [("a", "b")])], secret="wrong", auth_version=auth_version, region="cn-hangzhou"
    )
    assert (error.get_resp_status(), error.get_error_code()) == (401, "SignatureNotMatch")
    assert standin.log_count == 0


async def test_wrong_v4_region_is_signature_not_match(standin: PutLogsStandin) -> None:
    error = await put_expecting_error(standin.endpoint, [LogItem(now(), [("a", "b")])], auth_version="v4", region="cn-beijing")
    assert (error.get_resp_status(), error.get_error_code()) == (401, "SignatureNotMatch")


@pytest.mark.parametrize("auth_version", ["v1", "v4"])
async def test_unknown_access_key_is_unauthorized(standin: PutLogsStandin, auth_version: str) -> None:
    error = await put_expecting_error(
        standin.endpoint, [LogItem(now(), [("a", "b")])], akid="someone-else", auth_version=auth_version, region="cn-hangzhou"
    )
    assert (error.get_resp_status(), error.get_error_code()) == (401, "Unauthorized")


async def test_missing_authorization_is_unauthorized(standin: PutLogsStandin) -> None:
    request = craft(standin, one_log())
    del request.headers["Authorization"]
    await assert_refused(standin, request, 401, "Unauthorized")


@pytest.mark.parametrize("auth_version", ["v1", "v4"])
async def test_security_token_is_honoured(auth_version: str) -> None:
    async with PutLogsStandin(access_key_id=AKID, access_key_secret=SECRET, security_token="sts-token") as server:
        common = {"auth_version": auth_version, "region": "cn-hangzhou"}
        client = sdk_client(server.endpoint, securityToken="sts-token", **common)
        await asyncio.to_thread(sdk_put, client, [LogItem(now(), [("a", "b")])])
        assert server.log_count == 1

        for token in (None, "stale-token"):
            error = await put_expecting_error(server.endpoint, [LogItem(now(), [("a", "b")])], securityToken=token, **common)
            assert (error.get_resp_status(), error.get_error_code()) == (401, "Unauthorized")
        assert server.log_count == 1


async def test_token_where_none_is_configured_is_unauthorized(standin: PutLogsStandin) -> None:
    error = await put_expecting_error(standin.endpoint, [LogItem(now(), [("a", "b")])], securityToken="unexpected")
    assert (error.get_resp_status(), error.get_error_code()) == (401, "Unauthorized")


async def test_v1_request_time_too_old_is_expired(standin: PutLogsStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    old = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 20 * 60))
    monkeypatch.setattr(AuthV1, "_getGMT", staticmethod(lambda: old))
    await assert_refused(standin, craft(standin, one_log()), 400, "RequestTimeExpired")


async def test_v4_request_time_too_old_is_expired(standin: PutLogsStandin) -> None:
    request = craft(standin, one_log(), auth_version="v4")
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 20 * 60))
    auth = AuthV4(StaticCredentialsProvider(AKID, SECRET, ""), "cn-hangzhou")
    request.headers["Authorization"] = auth._do_sign_request(
        "POST", request.path, {}, request.headers, request.body, old
    )
    await assert_refused(standin, request, 400, "RequestTimeExpired")


# ---------------------------------------------------------------- log contents


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-8 * 86400, False), (-6 * 86400, True), (14 * 60, True), (20 * 60, False)],
    ids=["8-days-old", "6-days-old", "14-min-ahead", "20-min-ahead"],
)
async def test_log_time_window(standin: PutLogsStandin, offset: int, accepted: bool) -> None:
    items = [LogItem(now(), [("a", "fine")]), LogItem(now() + offset, [("a", "edge")])]
    if accepted:
        await asyncio.to_thread(sdk_put, sdk_client(standin.endpoint), items)
        assert standin.log_count == 2
    else:
        error = await put_expecting_error(standin.endpoint, items)
        assert (error.get_resp_status(), error.get_error_code()) == (400, "InvalidTimestamp")
        assert standin.log_count == 0  # the good log in the same request is not kept either


def _corrupt(raw: bytes, field: bytes, replacement: bytes) -> bytes:
    # The SDK's message classes refuse invalid UTF-8 in string fields, so patch the encoded bytes.
    assert raw.count(field) == 1 and len(field) == len(replacement)
    return raw.replace(field, replacement)


@pytest.mark.parametrize(
    "build",
    [
        lambda: log_group([(now(), [("msg", b"ok"), ("msg", b"bad \xc3\x28 value")])]),
        lambda: _corrupt(log_group([(now(), [("KEYKEY", b"v")])]), b"KEYKEY", b"KEYKE\xff"),
        lambda: _corrupt(log_group([(now(), [("k", b"v")])], tags=[("TAGKEY", "h")]), b"TAGKEY", b"TAGKE\xe9"),
        lambda: _corrupt(log_group([(now(), [("k", b"v")])], topic="TOPIC"), b"TOPIC", b"TO\xed\xa0\x80"),
    ],
    ids=["value", "key", "tag-key", "topic-surrogate"],
)
async def test_invalid_utf8_is_invalid_encoding(standin: PutLogsStandin, build: Callable[[], bytes]) -> None:
    await assert_refused(standin, craft(standin, build()), 400, "InvalidEncoding")


async def test_empty_key_is_invalid_key(standin: PutLogsStandin) -> None:
    await assert_refused(standin, craft(standin, log_group([(now(), [("", b"v")])])), 400, "InvalidKey")


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff not protobuf", LogGroupRaw(Logs=[{"Contents": [{"Key": "a", "Value": b"b"}]}]).SerializePartialToString()],
    ids=["garbage", "log-without-time"],
)
async def test_bad_protobuf_is_post_body_invalid(standin: PutLogsStandin, raw: bytes) -> None:
    await assert_refused(standin, craft(standin, raw), 400, "PostBodyInvalid")


# ---------------------------------------------------------------- framing and integrity


async def test_tampered_v1_body_fails_content_md5(standin: PutLogsStandin) -> None:
    request = craft(standin, one_log(b"x" * 64), compress="")
    request.body = request.body.replace(b"x" * 64, b"y" * 64)  # same length, signed MD5 no longer matches
    reply = await assert_refused(standin, request, 400, "PostBodyInvalid")
    assert "Content-MD5" in reply.text


async def test_tampered_v4_body_fails_signature(standin: PutLogsStandin) -> None:
    request = craft(standin, one_log(b"x" * 64), compress="", auth_version="v4")
    request.body = request.body.replace(b"x" * 64, b"y" * 64)  # v4 signs the body's SHA-256
    await assert_refused(standin, request, 401, "SignatureNotMatch")


async def test_wrong_content_md5_is_post_body_invalid(standin: PutLogsStandin) -> None:
    # v4 does not sign Content-MD5, so a wrong one is the only thing wrong here.
    request = craft(standin, one_log(), auth_version="v4", before_signing=lambda h: h.update({"Content-MD5": "0" * 32}))
    await assert_refused(standin, request, 400, "PostBodyInvalid")


async def test_lower_case_content_md5_is_refused(standin: PutLogsStandin) -> None:
    raw = one_log()
    body = lz4.block.compress(raw, store_size=False)
    request = craft(
        standin, raw, auth_version="v4", before_signing=lambda h: h.update({"Content-MD5": hashlib.md5(body).hexdigest()})
    )
    await assert_refused(standin, request, 400, "PostBodyInvalid")


@pytest.mark.parametrize("delta", [+10, -10])
async def test_wrong_body_raw_size(standin: PutLogsStandin, delta: int) -> None:
    raw = one_log(b"some value " * 20)
    request = craft(standin, raw, before_signing=lambda h: h.update({"x-log-bodyrawsize": str(len(raw) + delta)}))
    await assert_refused(standin, request, 400, "InvalidBodyRawSize")


async def test_body_that_is_not_lz4_is_uncompress_error(standin: PutLogsStandin) -> None:
    raw = one_log()
    request = craft(standin, raw, body=b"\xf0" + bytes(40))  # 15 literals, then match offset 0: never valid
    await assert_refused(standin, request, 400, "PostBodyUncompressError")


async def test_raw_size_over_10_mib_is_too_large(standin: PutLogsStandin) -> None:
    request = craft(standin, one_log(), before_signing=lambda h: h.update({"x-log-bodyrawsize": str(10 * 1024 * 1024 + 1)}))
    await assert_refused(standin, request, 400, "PostBodyTooLarge")


async def test_body_over_10_mib_is_too_large(standin: PutLogsStandin) -> None:
    big = b"\0" * (10 * 1024 * 1024 + 1)
    await assert_refused(standin, craft(standin, big, compress=""), 400, "PostBodyTooLarge")


@pytest.mark.parametrize(
    ("edit", "status", "error_code"),
    [
        (lambda h: h.pop("x-log-apiversion"), 400, "MissingAPIVersion"),
        (lambda h: h.update({"x-log-apiversion": "0.5.0"}), 400, "InvalidAPIVersion"),
        (lambda h: h.update({"x-log-compresstype": "snappy"}), 400, "InvalidCompressType"),
        (lambda h: h.pop("x-log-bodyrawsize"), 400, "MissingBodyRawSize"),
        (lambda h: h.update({"x-log-bodyrawsize": "12a"}), 400, "InvalidBodyRawSize"),
        (lambda h: h.update({"Content-Type": "application/json"}), 415, "InvalidContentType"),
        (lambda h: h.update({"Host": "my-project.example.com"}), 400, "InvalidHost"),
        (lambda h: h.update({"Host": "127.0.0.1"}), 400, "InvalidHost"),
        (lambda h: h.update({"Host": "my-project.127.0.0.1:1"}), 400, "InvalidHost"),
        (lambda h: h.update({"Host": "Bad_Project.127.0.0.1"}), 400, "InvalidHost"),
    ],
    ids=["no-apiversion", "old-apiversion", "snappy", "no-rawsize", "bad-rawsize", "json", "other-host", "no-project", "wrong-port", "bad-project"],
)
async def test_bad_headers_are_refused(
    standin: PutLogsStandin, edit: Callable[[dict[str, str]], object], status: int, error_code: str
) -> None:
    await assert_refused(standin, craft(standin, one_log(), before_signing=edit), status, error_code)


async def test_invalid_logstore_name_does_not_exist(standin: PutLogsStandin) -> None:
    request = craft(standin, one_log())
    request.path = request.path.replace(LOGSTORE, "Bad.Store")
    await assert_refused(standin, request, 404, "LogStoreNotExist")


async def test_unknown_path_gets_json_error(standin: PutLogsStandin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(standin.url + "/logstores/x/shards/lb") as resp:
            body = await resp.json()
            assert (resp.status, body["errorCode"]) == (404, "RequestNotSupported")
            assert resp.headers["x-log-requestid"]
    assert standin.requests == 0


# ---------------------------------------------------------------- faults


async def test_fault_status_and_code(standin: PutLogsStandin) -> None:
    standin.faults.at(0, Fault.error(403, "WriteQuotaExceed"))
    standin.faults.at({2, 3}, Fault.error(503, "ServerBusy"))
    replies = [await send(standin, craft(standin, one_log(str(i).encode()))) for i in range(5)]

    assert [r.status for r in replies] == [403, 200, 503, 503, 200]
    assert [r.error_code for r in replies if r.status != 200] == ["WriteQuotaExceed", "ServerBusy", "ServerBusy"]
    assert all(r.headers.get("x-log-requestid") for r in replies)
    assert [log.contents["msg"] for log in standin.logs] == ["1", "4"]  # faulted requests are not recorded
    assert (standin.requests, standin.faulted, standin.rejections) == (5, 3, [])


async def test_fault_seen_by_the_sdk(standin: PutLogsStandin) -> None:
    standin.faults.next(1, Fault.error(403, "ShardWriteQuotaExceed"))
    error = await put_expecting_error(standin.endpoint, [LogItem(now(), [("a", "b")])])
    assert (error.get_resp_status(), error.get_error_code()) == (403, "ShardWriteQuotaExceed")
    await asyncio.to_thread(sdk_put, sdk_client(standin.endpoint), [LogItem(now(), [("a", "b")])])
    assert standin.log_count == 1


async def test_fault_next_n_and_callable_and_clear(standin: PutLogsStandin) -> None:
    standin.faults.next(2, Fault.error(500, "InternalServerError"))
    standin.faults.add(lambda index: Fault.error(503, "ServerBusy") if index % 2 else None)
    statuses = [(await send(standin, craft(standin, one_log()))).status for _ in range(5)]
    assert statuses == [500, 500, 200, 503, 200]

    standin.faults.clear()
    assert (await send(standin, craft(standin, one_log()))).status == 200


async def test_fault_delay_then_processes(standin: PutLogsStandin) -> None:
    standin.faults.at(0, Fault.delay(0.4))
    started = time.monotonic()
    reply = await send(standin, craft(standin, one_log()))
    assert reply.status == 200
    assert time.monotonic() - started >= 0.4
    assert standin.log_count == 1 and standin.faulted == 0 and standin.delayed == 1


async def test_fault_reset_drops_the_connection(standin: PutLogsStandin) -> None:
    standin.faults.at(0, Fault.reset())
    with pytest.raises(aiohttp.ClientError):
        await send(standin, craft(standin, one_log()))
    assert standin.faulted == 1 and standin.log_count == 0
    assert (await send(standin, craft(standin, one_log()))).status == 200


async def test_fault_hang_until_client_gives_up_and_close_is_prompt() -> None:
    server = PutLogsStandin(access_key_id=AKID, access_key_secret=SECRET)
    async with server:
        server.faults.at(0, Fault.hang())
        with pytest.raises(asyncio.TimeoutError):
            await send(server, craft(server, one_log()), timeout=0.3)
        assert server.faulted == 1 and server.log_count == 0
        closing = time.monotonic()
    # The hung handler is released by the close itself, not cut off by the server's 1 s shutdown timeout.
    assert time.monotonic() - closing < server.handler_shutdown_timeout_s * 0.8


async def test_fault_garbage_body(standin: PutLogsStandin) -> None:
    standin.faults.at(0, Fault.garbage(502))
    reply = await send(standin, craft(standin, one_log()))
    assert reply.status == 502
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.text)
    assert standin.log_count == 0


# ---------------------------------------------------------------- helpers and modes


async def test_wait_for_logs(standin: PutLogsStandin) -> None:
    async def put_later() -> None:
        await asyncio.sleep(0.1)
        await send(standin, craft(standin, log_group([(now(), [("a", b"1")]), (now(), [("a", b"2")])])))

    task = asyncio.create_task(put_later())
    await standin.wait_for_logs(2, timeout=5)
    await task

    await send(standin, craft(standin, one_log(log_time=1)))  # refused: too old
    with pytest.raises(AssertionError, match=r"expected at least 3 logs.*got 2 logs.*InvalidTimestamp"):
        await standin.wait_for_logs(3, timeout=0.2)


async def test_count_only_keeps_counts_and_still_verifies() -> None:
    async with PutLogsStandin(access_key_id=AKID, access_key_secret=SECRET, count_only=True) as server:
        items = [LogItem(now(), [("a", str(i))]) for i in range(3)]
        await asyncio.to_thread(sdk_put, sdk_client(server.endpoint), items)
        error = await put_expecting_error(server.endpoint, items, secret="wrong")
        assert error.get_error_code() == "SignatureNotMatch"
        assert (server.log_count, server.group_count) == (3, 1)
        assert server.logs == [] and server.groups == []
        assert server.rejections == [Rejection(401, "SignatureNotMatch", server.rejections[0].message)]


@pytest.mark.parametrize(
    ("build", "error_code"),
    [
        (lambda: log_group([(now(), [("a", b"ok"), ("b", b"\xc3\x28")])]), "InvalidEncoding"),
        (lambda: _corrupt(log_group([(now(), [("KEYKEY", b"v")])]), b"KEYKEY", b"KEYKE\xff"), "InvalidEncoding"),
        (lambda: log_group([(now(), [("", b"v")])]), "InvalidKey"),
        (lambda: log_group([(now(), [("a", b"v")]), (now() - 8 * 86400, [("a", b"v")])]), "InvalidTimestamp"),
    ],
    ids=["value", "key", "empty-key", "old"],
)
async def test_count_only_checks_contents_too(build: Callable[[], bytes], error_code: str) -> None:
    async with PutLogsStandin(access_key_id=AKID, access_key_secret=SECRET, count_only=True) as server:
        await assert_refused(server, craft(server, build()), 400, error_code)


async def test_stats_endpoint(standin: PutLogsStandin) -> None:
    await send(standin, craft(standin, one_log()))
    await send(standin, craft(standin, one_log(), secret="wrong"))
    async with aiohttp.ClientSession() as session:
        async with session.get(standin.url + "/_standin/stats") as resp:
            stats = await resp.json()
    assert stats["logs"] == 1 and stats["groups"] == 1 and stats["requests"] == 2
    assert stats["rejections"] == {"SignatureNotMatch": 1}


async def test_cli_serves_the_sdk_and_prints_a_summary_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.standin", "--port", "0", "--akid", "cli-akid", "--secret", "cli-secret", "--count-only",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert first.startswith("listening 127.0.0.1:"), first
        endpoint = first.split()[1]

        client = sdk_client(endpoint, akid="cli-akid", secret="cli-secret")
        await asyncio.to_thread(sdk_put, client, [LogItem(now(), [("a", "b")]), LogItem(now(), [("a", "c")])])
        error = await put_expecting_error(endpoint, [LogItem(now(), [("a", "b")])], akid="cli-akid", secret="nope")
        assert error.get_error_code() == "SignatureNotMatch"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{endpoint}/_standin/stats") as resp:
                assert (await resp.json())["logs"] == 2

        proc.send_signal(signal.SIGTERM)
        out, _err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["logs"] == 2 and summary["groups"] == 1
        assert summary["rejections"] == {"SignatureNotMatch": 1}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
