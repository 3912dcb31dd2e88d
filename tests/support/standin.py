"""A local stand-in for Alibaba Cloud Log Service's PutLogs API.

It checks what the real service checks, so a test that passes against it
proves the wire format and the signature, not just that bytes arrived:

1. ``Host`` is ``{project}.{endpoint}``.
2. Framing headers: API version, Content-Type, Content-Length, body raw size,
   compression, and the 10 MiB limits. These come from headers alone, so they
   are checked before the body is read, as a front end would.
3. Signature v1 (``LOG akid:sig``) or v4 (``SLS4-HMAC-SHA256``), recomputed
   with the SDK's own code (``aliyun.log.auth``, ``aliyun.log.util``). Also the
   request date (15 minutes) and the STS security token.
4. ``Content-MD5`` against the body as sent.
5. Decompression to exactly ``x-log-bodyrawsize`` bytes.
6. Protobuf decoding with the SDK's ``LogGroupRaw``, required fields included.
7. Every log time in [now - 7 days, now + 15 min]; every string valid UTF-8;
   every content key non-empty. One bad log fails the whole request.

Only a request that passes everything is recorded and answered 200 with an
empty body. Every response has an ``x-log-requestid`` header; every refusal
has the service's JSON body ``{"errorCode": ..., "errorMessage": ...}``.

Error codes. Where Alibaba documents a code (the "common error codes" page,
help doc 29013, and the notes in /work/shared/notes) it is used as documented:
MissingHost, InvalidHost, MissingAPIVersion, InvalidAPIVersion,
MissingContentType, InvalidContentType (415), MissingContentLength (411),
MissingBodyRawSize, InvalidBodyRawSize, InvalidCompressType, MissingDate,
InvalidDateFormat, RequestTimeExpired, Unauthorized, SignatureNotMatch,
PostBodyTooLarge, PostBodyUncompressError, PostBodyInvalid, InvalidTimestamp,
InvalidEncoding, InvalidKey. Where the real code is not documented, this
stand-in chooses:

- Host is not ``<project>.<our endpoint>``, or the project name is invalid:
  400 ``InvalidHost``.
- Logstore name is invalid: 404 ``LogStoreNotExist``. Any valid name is
  accepted; no logstore has to be created first.
- ``x-log-signaturemethod`` missing or not ``hmac-sha1`` on a v1 request:
  400 ``MissingSignatureMethod`` / ``InvalidSignatureMethod``.
- Authorization missing or malformed, unknown AccessKeyId, wrong or missing
  security token, or a token sent where none is configured:
  401 ``Unauthorized``.
- Content-MD5 does not match the body, or Content-Length does not match the
  body: 400 ``PostBodyInvalid`` (with a message saying which).
- Body over 10 MiB: 400 ``PostBodyTooLarge``. Raw size over 10 MiB: the
  same.
- Unknown path or method: 404 ``RequestNotSupported``.
- ``zstd`` is not supported by this stand-in: 400 ``InvalidCompressType``.

What the stand-in does not check: value sizes (the real service's handling
of values over 1 MB is not documented), quotas and shards.

``Date`` versus ``x-log-date`` on v1 requests: the SDK signs with ``Date`` and
then adds ``x-log-date`` (the same value) after signing. Alibaba's C# SDK
documents ``x-log-date`` as optional, unsigned, and taking the place of
``Date`` in the server's time check. So for v1 ``Date`` is required and
signed, ``x-log-date`` is left out of the signed headers, and the time check
uses ``x-log-date`` when present. For v4, ``x-log-date`` is signed and is the
request time.

Host and the SDK: for an IP endpoint, the SDK sends ``Host: {project}.{IP}``
without the port. So ``{project}.127.0.0.1`` is accepted as well as
``{project}.127.0.0.1:PORT``.

Run by hand or from a benchmark::

    python -m tests.support.standin --port 18080 --akid X --secret Y [--count-only] [--print-every N]

This prints ``listening 127.0.0.1:PORT`` when ready. On SIGTERM or SIGINT it
prints a JSON summary line and exits 0. ``GET /_standin/stats`` returns the
same JSON while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email.utils
import hmac
import json
import re
import secrets
import signal
import socket
import ssl
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal, NamedTuple

import lz4.block
from aiohttp import web
from aliyun.log.auth import AuthV4
from aliyun.log.credentials import StaticCredentialsProvider
from aliyun.log.proto import LogGroupRaw
from aliyun.log.util import Util
from google.protobuf.message import DecodeError

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RAW_BYTES = 10 * 1024 * 1024
MAX_CLOCK_SKEW_S = 15 * 60
MAX_LOG_AGE_S = 7 * 24 * 3600
MAX_LOG_FUTURE_S = 15 * 60
API_VERSION = "0.6.0"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"

_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_LOGSTORE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]")
_V4_AUTH_RE = re.compile(r"SLS4-HMAC-SHA256 Credential=([^/,\s]+)/[^,\s]*,\s*Signature=[0-9a-fA-F]+")
_V4_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


# ---------------------------------------------------------------- records


@dataclass
class AcceptedLog:
    time: int
    time_ns: int | None
    contents: dict[str, str]
    pairs: list[tuple[str, str]]  # every (key, value) in wire order, duplicates kept
    project: str
    logstore: str
    topic: str
    source: str
    tags: dict[str, str]


@dataclass
class AcceptedGroup:
    project: str
    logstore: str
    topic: str
    source: str
    tags: dict[str, str]
    logs: list[AcceptedLog]
    raw_size: int
    compressed_size: int
    auth_version: str  # "v1" or "v4"
    compress_type: str = ""  # "lz4", "deflate" or "" (uncompressed)
    hash_key: str | None = None  # set for /shards/route?key=...
    tag_pairs: list[tuple[str, str]] = field(default_factory=list)


class Rejection(NamedTuple):
    status: int
    error_code: str
    message: str


class ApiError(Exception):
    """A refusal, carrying what the service would answer."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message

    def response(self) -> web.Response:
        return error_response(self.status, self.error_code, self.message)


def error_response(status: int, error_code: str, message: str) -> web.Response:
    return web.json_response({"errorCode": error_code, "errorMessage": message}, status=status)


def new_request_id() -> str:
    # Real ids are 24 upper-case hex digits.
    return secrets.token_hex(12).upper()


# ---------------------------------------------------------------- faults

FaultKind = Literal["error", "delay", "reset", "hang", "garbage"]


@dataclass(frozen=True)
class Fault:
    """What to do to one PutLogs request instead of (or before) serving it."""

    kind: FaultKind
    status: int = 0
    error_code: str = ""
    message: str = ""
    seconds: float = 0.0
    body: bytes = b""

    @classmethod
    def error(cls, status: int, error_code: str, message: str = "") -> Fault:
        """Answer with the service's JSON error, e.g. (403, "WriteQuotaExceed")."""
        return cls("error", status=status, error_code=error_code, message=message or f"injected {error_code}")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait, then process the request normally (it may still be accepted)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def reset(cls) -> Fault:
        """Abort the connection with a TCP RST and no response."""
        return cls("reset")

    @classmethod
    def hang(cls) -> Fault:
        """Never answer; the connection is dropped when the stand-in closes."""
        return cls("hang")

    @classmethod
    def garbage(cls, status: int = 502, body: bytes = b"<html><body>502 Bad Gateway</body></html>") -> Fault:
        """Answer with a non-JSON body, as a proxy in front of the service might."""
        return cls("garbage", status=status, body=body)


FaultPicker = Callable[[int], "Fault | None"]


@dataclass
class FaultRule:
    """``pick(index)`` says which fault, if any, applies to the request with that index.

    ``remaining`` limits how many requests the rule may fault (None: no limit).
    """

    pick: FaultPicker
    remaining: int | None = None


class FaultScript:
    """Scripted faults, looked up per PutLogs request by its 0-based arrival index.

    Rules are tried in the order they were added; the first that yields a fault wins.
    """

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule | FaultPicker) -> FaultRule:
        if not isinstance(rule, FaultRule):
            rule = FaultRule(rule)
        self._rules.append(rule)
        return rule

    def at(self, indices: int | set[int] | range, fault: Fault) -> FaultRule:
        """Fault the requests with these indices."""
        wanted = {indices} if isinstance(indices, int) else set(indices)
        return self.add(FaultRule(lambda index: fault if index in wanted else None))

    def next(self, n: int, fault: Fault) -> FaultRule:
        """Fault the next ``n`` requests, whatever their index."""
        return self.add(FaultRule(lambda _index: fault, remaining=n))

    def when(self, predicate: Callable[[int], bool], fault: Fault) -> FaultRule:
        return self.add(FaultRule(lambda index: fault if predicate(index) else None))

    def clear(self) -> None:
        self._rules.clear()

    def pick(self, index: int) -> Fault | None:
        for rule in self._rules:
            if rule.remaining is not None and rule.remaining <= 0:
                continue
            fault = rule.pick(index)
            if fault is not None:
                if rule.remaining is not None:
                    rule.remaining -= 1
                return fault
        return None


# ---------------------------------------------------------------- request checks


@dataclass(frozen=True)
class _Framing:
    compress_type: str  # "", "lz4" or "deflate"
    raw_size: int | None  # None only for an uncompressed body without the header
    content_length: int


def _check_framing(headers: dict[str, str]) -> _Framing:
    """Headers that describe the body; all of these can be refused before reading it."""
    version = headers.get("x-log-apiversion")
    if version is None:
        raise ApiError(400, "MissingAPIVersion", "x-log-apiversion does not exist in http header.")
    if version != API_VERSION:
        raise ApiError(400, "InvalidAPIVersion", f"x-log-apiversion {version} is unsupported.")

    content_type = headers.get("content-type")
    if content_type is None:
        raise ApiError(400, "MissingContentType", "Content-Type does not exist in http header when body is not empty.")
    if content_type.split(";")[0].strip().lower() != PROTOBUF_CONTENT_TYPE:
        raise ApiError(415, "InvalidContentType", f"Content-Type {content_type} is unsupported.")

    length_text = headers.get("content-length")
    if length_text is None:
        raise ApiError(411, "MissingContentLength", "Content-Length does not exist in http header when it is necessary.")
    content_length = _parse_size(length_text, "PostBodyInvalid", "Content-Length")

    compress_type = headers.get("x-log-compresstype", "").strip().lower()
    if compress_type not in ("", "lz4", "deflate"):
        raise ApiError(400, "InvalidCompressType", f"x-log-compresstype {compress_type} is unsupported.")

    raw_text = headers.get("x-log-bodyrawsize")
    if raw_text is None and compress_type:
        raise ApiError(400, "MissingBodyRawSize", "x-log-bodyrawsize does not exist in header when it is necessary.")
    raw_size = None if raw_text is None else _parse_size(raw_text, "InvalidBodyRawSize", "x-log-bodyrawsize")

    if content_length > MAX_BODY_BYTES:
        raise ApiError(400, "PostBodyTooLarge", f"body size {content_length} is larger than {MAX_BODY_BYTES} bytes")
    if raw_size is not None and raw_size > MAX_RAW_BYTES:
        raise ApiError(400, "PostBodyTooLarge", f"body raw size {raw_size} is larger than {MAX_RAW_BYTES} bytes")
    return _Framing(compress_type, raw_size, content_length)


def _parse_size(text: str, error_code: str, name: str) -> int:
    # int() would also take "+5", " 5" and "5_0"; a header value must be plain digits.
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, error_code, f"{name} is invalid: {text!r}")
    return int(text)


def _check_body_against_headers(headers: dict[str, str], body: bytes, framing: _Framing) -> None:
    if len(body) != framing.content_length:
        raise ApiError(400, "PostBodyInvalid", f"Content-Length {framing.content_length} but the body has {len(body)} bytes")
    content_md5 = headers.get("content-md5")
    if content_md5 is not None:
        actual = Util.cal_md5(body)  # upper-case hex, as the SDK computes it
        if content_md5 != actual:
            raise ApiError(400, "PostBodyInvalid", f"Content-MD5 {content_md5} does not match the body (MD5 {actual})")


def _decompress(body: bytes, framing: _Framing) -> bytes:
    if framing.compress_type == "lz4":
        raw = _lz4_decompress(body, framing.raw_size or 0)
    elif framing.compress_type == "deflate":
        raw = _deflate_decompress(body)
    else:
        raw = body
    if framing.raw_size is not None and len(raw) != framing.raw_size:
        raise ApiError(400, "InvalidBodyRawSize", f"x-log-bodyrawsize is {framing.raw_size} but the body decompresses to {len(raw)} bytes")
    return raw


def _lz4_decompress(body: bytes, raw_size: int) -> bytes:
    try:
        raw: bytes = lz4.block.decompress(body, uncompressed_size=raw_size)
        return raw
    except lz4.block.LZ4BlockError:
        pass
    # The block may be valid LZ4 that is simply larger than the declared raw
    # size; then the header is what is wrong, not the compression.
    try:
        actual = lz4.block.decompress(body, uncompressed_size=MAX_RAW_BYTES)
    except lz4.block.LZ4BlockError:
        raise ApiError(400, "PostBodyUncompressError", "body is not a valid LZ4 block of the declared raw size") from None
    raise ApiError(400, "InvalidBodyRawSize", f"x-log-bodyrawsize is {raw_size} but the body decompresses to {len(actual)} bytes")


def _deflate_decompress(body: bytes) -> bytes:
    # Bounded, so a small body cannot expand without limit.
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, MAX_RAW_BYTES + 1)
    except zlib.error as exc:
        raise ApiError(400, "PostBodyUncompressError", f"body is not valid deflate (zlib) data: {exc}") from None
    if not inflater.eof:
        raise ApiError(400, "PostBodyUncompressError", "deflate body is truncated or larger than 10 MiB")
    return raw


def _decode_group(raw: bytes) -> LogGroupRaw:
    group = LogGroupRaw()
    try:
        group.ParseFromString(raw)
    except UnicodeDecodeError as exc:
        # The pure-Python protobuf runtime refuses invalid UTF-8 in string fields while parsing.
        raise ApiError(400, "InvalidEncoding", f"string field is not valid UTF-8: {exc}") from None
    except DecodeError as exc:
        raise ApiError(400, "PostBodyInvalid", f"body is not a valid LogGroup protobuf: {exc}") from None
    if not group.IsInitialized():
        missing = ", ".join(group.FindInitializationErrors())
        raise ApiError(400, "PostBodyInvalid", f"LogGroup is missing required fields: {missing}")
    return group


def _text(value: str | bytes, what: str) -> str:
    # Content.Value is bytes in LogGroupRaw. The upb runtime also hands back
    # bytes for a proto2 string field that is not valid UTF-8.
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "InvalidEncoding", f"{what} is not valid UTF-8: {value[:64]!r}") from None


def _check_time(log_time: int, now: int) -> None:
    if not now - MAX_LOG_AGE_S <= log_time <= now + MAX_LOG_FUTURE_S:
        raise ApiError(
            400,
            "InvalidTimestamp",
            f"log time {log_time} is outside [now - 7 days, now + 15 minutes] (server time {now})",
        )


@dataclass
class _Decoded:
    topic: str
    source: str
    tag_pairs: list[tuple[str, str]]
    log_count: int
    logs: list[tuple[int, int | None, list[tuple[str, str]]]]  # empty when not kept


COUNT_ONLY_FULL_CHECK_EVERY = 32


def _extract(group: LogGroupRaw, now: int, keep: bool, fields: bool = True) -> _Decoded:
    """Validate every log and string; keep the decoded logs only if asked.

    This loop is the stand-in's hot path in benchmarks, hence the inlined checks.
    """
    topic = _text(group.Topic, "Topic")
    source = _text(group.Source, "Source")
    tag_pairs = [(_text(tag.Key, "tag key"), _text(tag.Value, "tag value")) for tag in group.LogTags]
    oldest, newest = now - MAX_LOG_AGE_S, now + MAX_LOG_FUTURE_S
    logs: list[tuple[int, int | None, list[tuple[str, str]]]] = []
    if not keep:
        _check_in_bulk(group, oldest, newest, now, fields)
        return _Decoded(topic, source, tag_pairs, len(group.Logs), logs)
    for log in group.Logs:
        log_time = log.Time
        if not oldest <= log_time <= newest:
            _check_time(log_time, now)
        pairs = [_content_pair(content.Key, content.Value) for content in log.Contents]
        logs.append((log_time, log.Time_ns if log.HasField("Time_ns") else None, pairs))
    return _Decoded(topic, source, tag_pairs, len(group.Logs), logs)


def _check_in_bulk(group: LogGroupRaw, oldest: int, newest: int, now: int, fields: bool) -> None:
    """Count-only mode: the same checks, with the per-item work in comprehensions and C
    built-ins, so that a benchmark measures the agent rather than this stand-in."""
    if not fields:
        # Reading any field costs a Python object per log: between full checks, only the
        # first and last log's times (upb has already parsed and validated the whole group).
        logs = group.Logs
        for log in (logs[0], logs[-1]) if len(logs) else ():
            _check_time(log.Time, now)
        return
    times = [log.Time for log in group.Logs]
    if times and (min(times) < oldest or max(times) > newest):
        for log_time in times:
            _check_time(log_time, now)
    contents = [content for log in group.Logs for content in log.Contents]
    keys = [content.Key for content in contents]
    if "" in keys or any(type(key) is not str for key in set(keys)):
        for key in keys:
            _content_pair(key, b"")  # raises the right error
    values = [content.Value for content in contents]
    if values:
        _check_utf8_all(values)


def _check_utf8_all(values: list[bytes]) -> None:
    # Joining with an ASCII byte keeps validity exact: "\n" can neither complete
    # nor continue a multi-byte sequence, so the join is valid UTF-8 exactly when
    # every value is. One decode is much cheaper than one per value.
    try:
        b"\n".join(values).decode("utf-8")
    except UnicodeDecodeError:
        for value in values:
            _text(value, "content value")


def _content_pair(raw_key: str | bytes, raw_value: bytes) -> tuple[str, str]:
    key = _text(raw_key, "content key")
    if not key:
        raise ApiError(400, "InvalidKey", "content key is empty")
    return key, _text(raw_value, f"value of {key!r}")


# ---------------------------------------------------------------- signatures


def _parse_http_date(text: str, header: str) -> float:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise ApiError(400, "InvalidDateFormat", f"{header} {text} must follow RFC822.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _parse_v4_date(text: str) -> float:
    try:
        return datetime.strptime(text, _V4_DATE_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ApiError(400, "InvalidDateFormat", f"x-log-date {text} must look like 20240101T000000Z.") from None


def _check_request_time(request_time: float, text: str) -> None:
    now = time.time()
    if abs(now - request_time) > MAX_CLOCK_SKEW_S:
        server_time = email.utils.formatdate(now, usegmt=True)
        raise ApiError(400, "RequestTimeExpired", f"Request time {text} has been expired while server time is {server_time}.")


@dataclass(frozen=True)
class _SignedRequest:
    method: str
    resource: str  # the decoded path, as the client signed it
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


class Verifier:
    """Checks the Authorization header by recomputing it with the SDK's code."""

    def __init__(self, access_key_id: str, access_key_secret: str, security_token: str | None, region: str) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.security_token = security_token
        self.region = region

    def verify(self, req: _SignedRequest) -> str:
        """Returns the auth version ("v1" or "v4") or raises ApiError."""
        authorization = req.headers.get("authorization", "")
        if authorization.startswith("LOG "):
            version, access_key_id = "v1", authorization[4:].partition(":")[0]
        elif match := _V4_AUTH_RE.fullmatch(authorization.strip()):
            version, access_key_id = "v4", match.group(1)
        else:
            raise ApiError(401, "Unauthorized", f"Authorization header is missing or malformed: {authorization[:60]!r}")
        if access_key_id != self.access_key_id:
            raise ApiError(401, "Unauthorized", f"AccessKeyId {access_key_id} is not found.")
        if version == "v1":
            self._verify_v1(req, authorization)
        else:
            self._verify_v4(req, authorization)
        return version

    def _check_token(self, headers: dict[str, str]) -> None:
        token = headers.get("x-acs-security-token")
        if self.security_token is None and token is not None:
            raise ApiError(401, "Unauthorized", "x-acs-security-token was sent but this AccessKeyId is not an STS key")
        if self.security_token is not None and token != self.security_token:
            raise ApiError(401, "Unauthorized", "x-acs-security-token is missing or invalid")

    def _verify_v1(self, req: _SignedRequest, authorization: str) -> None:
        headers = req.headers
        method = headers.get("x-log-signaturemethod")
        if method is None:
            raise ApiError(400, "MissingSignatureMethod", "x-log-signaturemethod does not exist in http header.")
        if method != "hmac-sha1":
            raise ApiError(400, "InvalidSignatureMethod", f"signature method {method} is unsupported.")
        date = headers.get("date")
        if date is None:
            raise ApiError(400, "MissingDate", "Date does not exist in http header.")
        date_time = _parse_http_date(date, "Date")
        log_date = headers.get("x-log-date")
        if log_date is not None:
            _check_request_time(_parse_http_date(log_date, "x-log-date"), log_date)
        else:
            _check_request_time(date_time, date)
        self._check_token(headers)

        # Same string as aliyun.log.auth.AuthV1.sign_request builds, from the SDK's own helpers.
        signed_headers = {name: value for name, value in headers.items() if name != "x-log-date"}
        string_to_sign = (
            f"{req.method}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}\n{date}\n"
            + Util.canonicalized_log_headers(signed_headers)
            + Util.canonicalized_resource(req.resource, dict(req.params))
        )
        expected = "LOG " + self.access_key_id + ":" + Util.hmac_sha1(string_to_sign, self.access_key_secret)
        if not hmac.compare_digest(expected.encode(), authorization.encode()):
            raise ApiError(401, "SignatureNotMatch", "Signature of the request does not match the one computed by the server (v1).")

    def _verify_v4(self, req: _SignedRequest, authorization: str) -> None:
        log_date = req.headers.get("x-log-date")
        if log_date is None:
            raise ApiError(400, "MissingDate", "x-log-date does not exist in http header.")
        _check_request_time(_parse_v4_date(log_date), log_date)
        self._check_token(req.headers)

        # AuthV4._do_sign_request overwrites x-log-date, x-log-content-sha256 and
        # the token in the dict it is given, so give it a copy. It hashes the body
        # itself, so a body that does not match x-log-content-sha256 fails here.
        provider = StaticCredentialsProvider(self.access_key_id, self.access_key_secret, self.security_token or "")
        expected = AuthV4(provider, self.region)._do_sign_request(
            req.method, req.resource, dict(req.params), dict(req.headers), req.body, log_date
        )
        if not hmac.compare_digest(expected.encode(), authorization.strip().encode()):
            raise ApiError(401, "SignatureNotMatch", "Signature of the request does not match the one computed by the server (v4).")


# ---------------------------------------------------------------- the server


class PutLogsStandin:
    """Serves PutLogs on host:port; see the module docstring for what it checks."""

    def __init__(
        self,
        *,
        access_key_id: str = "test-akid",
        access_key_secret: str = "test-secret",
        security_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        count_only: bool = False,
        region: str = "cn-hangzhou",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context  # serve https with it
        self.host = host
        self.port = port
        self.count_only = count_only
        self.verifier = Verifier(access_key_id, access_key_secret, security_token, region)
        self.faults = FaultScript()
        # Content-aware rejections, e.g. to test bisecting: (log) -> (status, errorCode, message) or None.
        # The whole request fails if any log in it matches, as the real service does.
        self.log_rules: list[Callable[[AcceptedLog], tuple[int, str, str] | None]] = []

        self.groups: list[AcceptedGroup] = []
        self.logs: list[AcceptedLog] = []
        self.rejections: list[Rejection] = []
        self.requests = 0  # PutLogs requests received (faulted ones included)
        self.faulted = 0  # answered by a fault (error, reset, hang, garbage)
        self.delayed = 0  # delayed by a fault, then processed normally
        self.log_count = 0
        self.group_count = 0
        self.raw_bytes = 0

        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self.handler_shutdown_timeout_s = 1.0  # what a handler still running at close gets
        self._runner: web.AppRunner | None = None

    # -- lifecycle

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.endpoint}"

    async def __aenter__(self) -> PutLogsStandin:
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
        app.router.add_post("/logstores/{logstore}/shards/lb", self._handle_putlogs)
        app.router.add_post("/logstores/{logstore}/shards/route", self._handle_putlogs)
        app.router.add_get("/_standin/stats", self._handle_stats)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        app.on_response_prepare.append(_add_request_id)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.handler_shutdown_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()  # releases hung and delayed handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- queries for tests

    def logs_with(self, key: str, value: str) -> list[AcceptedLog]:
        return [log for log in self.logs if (key, value) in log.pairs]

    def stats(self) -> dict[str, Any]:
        return {
            "logs": self.log_count,
            "groups": self.group_count,
            "requests": self.requests,
            "faulted": self.faulted,
            "delayed": self.delayed,
            "raw_bytes": self.raw_bytes,
            "rejections": dict(collections.Counter(r.error_code for r in self.rejections)),
        }

    async def wait_for_logs(self, n: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.log_count < n:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"expected at least {n} logs within {timeout}s; {self._describe()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _describe(self) -> str:
        recent = "; ".join(f"{r.status} {r.error_code}: {r.message}" for r in self.rejections[-5:]) or "none"
        return (
            f"got {self.log_count} logs in {self.group_count} groups from {self.requests} requests "
            f"({self.faulted} faulted); last rejections: {recent}"
        )

    # -- handlers

    async def _handle_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        error = ApiError(404, "RequestNotSupported", f"{request.method} {request.path} is not served by this stand-in")
        self._reject(error)
        return error.response()

    async def _handle_putlogs(self, request: web.Request) -> web.StreamResponse:
        index = self.requests
        self.requests += 1
        fault = self.faults.pick(index)
        if fault is not None and fault.kind != "delay":
            self.faulted += 1
            self._changed.set()
            return await self._apply_fault(request, fault)
        if fault is not None:
            self.delayed += 1
            await _drain(request)
            await self._sleep_unless_closing(fault.seconds)
        try:
            group, log_count = await self._accept(request)
        except ApiError as error:
            self._reject(error)
            return error.response()
        self._record(group, log_count)
        return web.Response(status=200)

    async def _accept(self, request: web.Request) -> tuple[AcceptedGroup, int]:
        """Applies every check in order; returns what to record and its log count, or raises ApiError.

        In count-only mode the group's ``logs`` list is empty, hence the separate count.
        """
        headers = {name.lower(): value for name, value in request.headers.items()}
        project = self._project_from_host(headers.get("host"))
        logstore = request.match_info["logstore"]
        if not _LOGSTORE_RE.fullmatch(logstore):
            raise ApiError(404, "LogStoreNotExist", f"logstore {logstore} does not exist")
        framing = _check_framing(headers)
        body = await request.read()
        signed = _SignedRequest(request.method, request.path, dict(request.query), headers, body)
        auth_version = self.verifier.verify(signed)
        _check_body_against_headers(headers, body, framing)
        raw = _decompress(body, framing)
        # Count-only mode (benchmarks) checks the signature, MD5 and size and decodes every
        # group, but reads every log's time and field (the costly part: a Python object per
        # item) of one request in COUNT_ONLY_FULL_CHECK_EVERY, so that a benchmark measures
        # the agent, not the stand-in.
        full_check = not self.count_only or self.requests % COUNT_ONLY_FULL_CHECK_EVERY == 1
        decoded = _extract(_decode_group(raw), int(time.time()), keep=not self.count_only, fields=full_check)
        tags = dict(decoded.tag_pairs)
        logs = [
            AcceptedLog(t, ns, dict(pairs), pairs, project, logstore, decoded.topic, decoded.source, tags)
            for t, ns, pairs in decoded.logs
        ]
        for rule in self.log_rules:
            for log in logs:
                verdict = rule(log)
                if verdict is not None:
                    raise ApiError(*verdict)
        group = AcceptedGroup(
            project, logstore, decoded.topic, decoded.source, tags, logs, len(raw), len(body), auth_version,
            framing.compress_type, request.query.get("key"), decoded.tag_pairs,
        )
        return group, decoded.log_count

    def _project_from_host(self, host: str | None) -> str:
        if not host:
            raise ApiError(400, "MissingHost", "Host does not exist in http header.")
        # The SDK leaves the port out of Host for an IP endpoint; accept both.
        for suffix in ("." + self.endpoint, "." + self.host):
            if host.endswith(suffix):
                project = host[: -len(suffix)]
                if _PROJECT_RE.fullmatch(project):
                    return project
                raise ApiError(400, "InvalidHost", f"Host header {host} is invalid: project name {project!r} is not valid.")
        raise ApiError(400, "InvalidHost", f"Host header {host} is invalid: expected <project>.{self.endpoint}.")

    def _record(self, group: AcceptedGroup, log_count: int) -> None:
        self.group_count += 1
        self.log_count += log_count
        self.raw_bytes += group.raw_size
        if not self.count_only:
            self.groups.append(group)
            self.logs.extend(group.logs)
        self._changed.set()

    def _reject(self, error: ApiError) -> None:
        self.rejections.append(Rejection(error.status, error.error_code, error.message))
        self._changed.set()

    # -- faults

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        # Let the client finish sending first, so what it sees is the fault and
        # not a broken pipe while writing.
        await _drain(request)
        if fault.kind == "error":
            return error_response(fault.status, fault.error_code, fault.message)
        if fault.kind == "garbage":
            return web.Response(status=fault.status, body=fault.body, content_type="text/html")
        if fault.kind == "hang":
            await self._closing.wait()
        _reset_connection(request)
        # Nothing reaches the client: the transport is gone.
        return web.Response(status=500)

    async def _sleep_unless_closing(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            pass


async def _add_request_id(_request: web.Request, response: web.StreamResponse) -> None:
    if "x-log-requestid" not in response.headers:
        response.headers["x-log-requestid"] = new_request_id()


async def _drain(request: web.Request) -> None:
    """Reads the whole body (aiohttp caches it, so a later read() gets it again)."""
    try:
        await request.read()
    except web.HTTPRequestEntityTooLarge:
        pass


def _reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        return  # e.g. the client already gave up on a hung request
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# ---------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.standin", description="Local PutLogs stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--akid", default="test-akid", help="AccessKeyId")
    parser.add_argument("--secret", default="test-secret", help="AccessKeySecret")
    parser.add_argument("--token", default=None, help="STS security token to require")
    parser.add_argument("--region", default="cn-hangzhou", help="region for signature v4")
    parser.add_argument("--count-only", action="store_true", help="verify everything, keep only counts")
    parser.add_argument("--print-every", type=int, default=0, metavar="N", help="print progress to stderr every N logs")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    standin = PutLogsStandin(
        access_key_id=args.akid,
        access_key_secret=args.secret,
        security_token=args.token,
        host=args.host,
        port=args.port,
        count_only=args.count_only,
        region=args.region,
    )
    async with standin:
        print(f"listening {standin.endpoint}", flush=True)
        await _report_progress(standin, stop, args.print_every)
    return standin.stats()


async def _report_progress(standin: PutLogsStandin, stop: asyncio.Event, every: int) -> None:
    """Waits for stop; meanwhile prints a stats line to stderr each time `every` more logs arrived."""
    next_mark = every
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
        if every > 0 and standin.log_count >= next_mark:
            print(json.dumps(standin.stats()), file=sys.stderr, flush=True)
            next_mark = (standin.log_count // every + 1) * every


def main(argv: list[str] | None = None) -> int:
    import uvloop  # the agent's loop: a benchmark's stand-in should cost its core little

    summary = uvloop.run(_serve(_parse_args(argv)))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
