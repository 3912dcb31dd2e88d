"""A loopback stand-in for the ECS instance metadata service (RAM role credentials).

What it serves, as the real service at ``http://100.100.100.200`` does:

* ``PUT /latest/api/token`` with ``X-aliyun-ecs-metadata-token-ttl-seconds``
  (1..21600): a session token as ``text/plain``. Missing or bad TTL: 400.
* ``GET /latest/meta-data/ram/security-credentials/``: the role name.
* ``GET /latest/meta-data/ram/security-credentials/<role>``: the role's
  STS credentials as JSON::

      {"Code": "Success", "AccessKeyId": ..., "AccessKeySecret": ...,
       "SecurityToken": ..., "Expiration": "YYYY-MM-DDTHH:MM:SSZ",
       "LastUpdated": "YYYY-MM-DDTHH:MM:SSZ"}

  Any other role: 404.

Every GET accepts an ``X-aliyun-ecs-metadata-token``; a token that was not
issued by this stand-in (or has expired) is refused with 401. In hardened
mode (``require_token=True``) a GET without a token is refused with 401 too.

Scriptable from a test (all plain attributes, changed at any time):

* :meth:`set_credentials` rotates the keys (and the expiration);
* ``outage``: ``None``, ``"503"`` (every path answers 503), ``"reset"``
  (every connection is aborted with a TCP RST) or ``"garbage"`` (200 with
  bytes that are neither UTF-8 nor JSON);
* ``token_endpoint = False``: the token path answers 404, as an old metadata
  service without IMDSv2 does;
* ``document_patch``: keys merged into (``None`` values removed from) the
  role document, e.g. ``{"Code": "Failed"}``; ``raw_document`` (bytes) is
  served instead of the JSON when set;
* ``counts``: requests per ``"METHOD /path"``; ``requests``: every request as
  ``(method, path, headers)``; ``tokens_issued``.

It never listens anywhere but on loopback.
"""

from __future__ import annotations

import collections
import contextlib
import secrets
import socket
import struct
import time
from typing import Any

from aiohttp import web

ROLE_PATH = "/latest/meta-data/ram/security-credentials/"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"
MAX_TOKEN_TTL_S = 21600

DEFAULT_ROLE = "slsfwd-role"
GARBAGE = b"\xff\xfe\x00<html>\x80\x81 not json, not utf-8"


def iso(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))


def fresh_keys(tag: str = "") -> tuple[str, str, str]:
    """A distinct (AccessKeyId, AccessKeySecret, SecurityToken) triple, easy to grep for."""
    suffix = secrets.token_hex(6)
    return (
        f"STS.akid{tag}{suffix}",
        f"sts-secret-{tag}{secrets.token_hex(10)}",
        f"sts-token-{tag}{secrets.token_hex(24)}",
    )


class MetadataStandin:
    def __init__(
        self,
        *,
        role: str = DEFAULT_ROLE,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        security_token: str | None = None,
        expires_in: float = 3600.0,
        require_token: bool = False,
        token_endpoint: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the metadata stand-in only listens on loopback")
        self.host = host
        self.port = port
        self.role = role
        self.require_token = require_token
        self.token_endpoint = token_endpoint
        self.outage: str | None = None  # None, "503", "reset", "garbage"
        self.document_patch: dict[str, Any] = {}
        self.raw_document: bytes | None = None

        akid, secret, token = fresh_keys()
        self.access_key_id = access_key_id or akid
        self.access_key_secret = access_key_secret or secret
        self.security_token = security_token or token
        self.expiration = time.time() + expires_in
        self.last_updated = time.time()

        self.counts: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.tokens_issued: dict[str, float] = {}  # token -> expiry (unix time)
        self._runner: web.AppRunner | None = None

    # -- scripting

    def set_credentials(
        self,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        security_token: str | None = None,
        *,
        expires_in: float | None = None,
        expiration: float | None = None,
    ) -> tuple[str, str, str]:
        """Rotates the keys (fresh random ones for any not given); returns the new triple."""
        akid, secret, token = fresh_keys("r")
        self.access_key_id = access_key_id or akid
        self.access_key_secret = access_key_secret or secret
        self.security_token = security_token or token
        if expiration is not None:
            self.expiration = expiration
        elif expires_in is not None:
            self.expiration = time.time() + expires_in
        self.last_updated = time.time()
        return self.access_key_id, self.access_key_secret, self.security_token

    @property
    def credentials(self) -> tuple[str, str, str]:
        return self.access_key_id, self.access_key_secret, self.security_token

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "AccessKeyId": self.access_key_id,
            "AccessKeySecret": self.access_key_secret,
            "Expiration": iso(self.expiration),
            "SecurityToken": self.security_token,
            "LastUpdated": iso(self.last_updated),
            "Code": "Success",
        }
        doc.update(self.document_patch)
        return {k: v for k, v in doc.items() if v is not None}

    def count(self, method: str, path: str) -> int:
        return self.counts[f"{method} {path}"]

    @property
    def role_path(self) -> str:
        return ROLE_PATH + self.role

    @property
    def credential_gets(self) -> int:
        return self.count("GET", self.role_path)

    @property
    def token_puts(self) -> int:
        return self.count("PUT", TOKEN_PATH)

    # -- lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> MetadataStandin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.counts[f"{request.method} {request.path}"] += 1
        self.requests.append((request.method, request.path, dict(request.headers)))
        if self.outage == "reset":
            _reset_connection(request)
            return web.Response(status=500)  # never reaches the client
        if self.outage == "503":
            return web.Response(status=503, text="Service Unavailable")
        if self.outage == "garbage":
            return web.Response(status=200, body=GARBAGE, headers={"Content-Type": "application/json"})
        if request.path == TOKEN_PATH:
            return self._token(request)
        if request.method != "GET":
            return web.Response(status=405, text="Method Not Allowed")
        problem = self._check_token(request)
        if problem is not None:
            return problem
        if request.path in (ROLE_PATH, ROLE_PATH.rstrip("/")):
            return web.Response(text=self.role)
        if request.path == self.role_path:
            if self.raw_document is not None:
                return web.Response(body=self.raw_document, content_type="text/plain")
            return web.json_response(self.document())
        return web.Response(status=404, text="Not Found")

    def _token(self, request: web.Request) -> web.Response:
        if not self.token_endpoint:
            return web.Response(status=404, text="Not Found")
        if request.method != "PUT":
            return web.Response(status=405, text="Method Not Allowed")
        ttl_text = request.headers.get(TOKEN_TTL_HEADER, "")
        if not ttl_text.isdigit() or not 1 <= int(ttl_text) <= MAX_TOKEN_TTL_S:
            return web.Response(status=400, text=f"{TOKEN_TTL_HEADER} must be 1..{MAX_TOKEN_TTL_S}")
        token = "mdtoken-" + secrets.token_urlsafe(24)
        self.tokens_issued[token] = time.time() + int(ttl_text)
        return web.Response(text=token)

    def _check_token(self, request: web.Request) -> web.Response | None:
        token = request.headers.get(TOKEN_HEADER)
        if token is None:
            return web.Response(status=401, text="Unauthorized: a metadata token is required") if self.require_token else None
        expiry = self.tokens_issued.get(token)
        if expiry is None or expiry < time.time():
            return web.Response(status=401, text="Unauthorized: invalid or expired metadata token")
        return None


def _reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
