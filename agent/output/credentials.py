"""Credentials for signing, through the SDK's ``CredentialsProvider`` interface.

* a static AccessKey pair, optionally with an STS token (config or the
  ``ALIBABA_CLOUD_*`` environment variables, which win): the SDK's
  ``StaticCredentialsProvider``;
* the ECS instance RAM role (:class:`EcsRamRoleProvider`), so that no
  AccessKey is on the image.

The SDK calls ``get_credentials()`` synchronously while signing, so the RAM
role provider never does I/O there: a background task keeps the cached
credentials fresh (a few minutes before ``Expiration``), the shipper asks for
an immediate refresh after an auth error, and a metadata-service blip keeps
the last good credentials. Secrets never appear in logs or errors. The metadata
service is called through the agent's own HTTP/1.1 client (:mod:`.http.client`),
the one PutLogs uses.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.ops import metrics
from agent.ops.selflog import RateLimitedLog
from agent.ops.supervise import spawn

from .http.client import Http1Client, HttpError, Response
from .sdk import Credentials, CredentialsProvider, StaticCredentialsProvider

log = logging.getLogger("slsfwd.credentials")

ROLE_PATH = "/latest/meta-data/ram/security-credentials/"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_S = 21600
REFRESH_BEFORE_EXPIRY_S = 300
RETRY_AFTER_FAILURE_S = 10.0
MIN_FORCED_REFRESH_INTERVAL_S = 5.0


class CredentialsUnavailable(Exception):
    pass


@dataclass(frozen=True)
class RamRoleSettings:
    role: str
    metadata_url: str  # sls.ecs_metadata_url
    imdsv1_disabled: bool = False  # hardened mode: a metadata token is required
    timeout_s: float = 3.0


class EcsRamRoleProvider(CredentialsProvider):
    def __init__(self, settings: RamRoleSettings, clock=time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._credentials: Credentials | None = None
        self._expiration = 0.0
        self._http: Http1Client | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._last_forced = 0.0
        self._failure_log = RateLimitedLog(log, interval_s=60.0)

    # -- the SDK's interface ------------------------------------------------

    def get_credentials(self) -> Credentials:
        if self._credentials is None:
            # Signing with empty keys yields a request the service refuses with an
            # auth error; the shipper then keeps the data and asks us to refresh.
            return Credentials("", "", "")
        return self._credentials

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """First fetch (failures are logged, not fatal), then keep refreshing."""
        try:
            await self.refresh()
        except CredentialsUnavailable as exc:
            self._failure_log.error("cannot get RAM role credentials yet: %s", exc)
        self._task = spawn(self._refresh_loop(), name="ram-role-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def force_refresh(self) -> None:
        """After an auth error: refresh now (but not in a tight loop)."""
        now = self._clock()
        if now - self._last_forced < MIN_FORCED_REFRESH_INTERVAL_S:
            return
        self._last_forced = now
        try:
            await self.refresh()
        except CredentialsUnavailable as exc:
            self._failure_log.error("RAM role credentials refresh failed, keeping the last good ones: %s", exc)

    @property
    def expiration(self) -> float:
        return self._expiration

    def next_refresh_in(self) -> float:
        if self._credentials is None:
            return RETRY_AFTER_FAILURE_S
        return max(1.0, self._expiration - REFRESH_BEFORE_EXPIRY_S - self._clock())

    async def _refresh_loop(self) -> None:
        while True:
            delay = self.next_refresh_in()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # the refresh loop must outlive any bad answer
                if not isinstance(exc, CredentialsUnavailable):
                    metrics.CREDENTIAL_REFRESH_FAILURES.inc()
                self._failure_log.error("RAM role credentials refresh failed, keeping the last good ones: %s", exc)
                await asyncio.sleep(RETRY_AFTER_FAILURE_S * (0.5 + random.random()))

    # -- fetching -----------------------------------------------------------

    async def refresh(self) -> None:
        try:
            doc = await self._fetch()
            credentials, expiration = parse_role_document(doc)
        except CredentialsUnavailable:
            metrics.CREDENTIAL_REFRESH_FAILURES.inc()
            raise
        self._credentials = credentials
        self._expiration = expiration
        log.info("RAM role %s: credentials valid until %s", self.settings.role, _iso(expiration))

    async def _fetch(self) -> dict:
        headers = []
        token = await self._metadata_token()
        if token:
            headers.append(("X-aliyun-ecs-metadata-token", token))
        try:
            response = await self._call("GET", ROLE_PATH + self.settings.role, headers)
        except HttpError as exc:
            raise CredentialsUnavailable(f"metadata service unreachable: {exc}") from None
        if response.status != 200:
            raise CredentialsUnavailable(f"metadata service answered HTTP {response.status} for role {self.settings.role}")
        try:
            return json.loads(response.body.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            raise CredentialsUnavailable("metadata service answered something that is not JSON") from None

    async def _metadata_token(self) -> str | None:
        """IMDSv2: a session token; required in hardened mode, used when available otherwise."""
        try:
            response = await self._call("PUT", TOKEN_PATH, [("X-aliyun-ecs-metadata-token-ttl-seconds", str(TOKEN_TTL_S))])
            problem = f"HTTP {response.status}"
            if response.status == 200:
                token = response.body.decode("ascii", "strict").strip()
                if token:
                    return token
        except HttpError as exc:
            problem = str(exc)
        except UnicodeDecodeError:
            problem = "a token that is not ASCII"
        if self.settings.imdsv1_disabled:
            raise CredentialsUnavailable(f"cannot get a metadata token (hardened mode): {problem}")
        return None

    async def _call(self, method: str, path: str, headers: list[tuple[str, str]]) -> Response:
        """One request to the metadata service (its URL's path, if any, is the prefix of ``path``)."""
        url = urlsplit(self.settings.metadata_url)
        https = url.scheme == "https"
        try:
            port = url.port or (443 if https else 80)
        except ValueError:
            raise HttpError("sls.ecs_metadata_url has a bad port") from None
        authority = url.netloc.rpartition("@")[2]
        if self._http is None:
            self._http = Http1Client(
                ssl_context=ssl.create_default_context() if https else None,
                connect_timeout_s=self.settings.timeout_s, request_timeout_s=self.settings.timeout_s, max_idle=1,
            )
        headers = [("Host", authority), *headers]
        if method != "GET":
            headers.append(("Content-Length", "0"))
        target = url.path.rstrip("/") + path
        return await self._http.request(url.hostname or "", port, method, target, headers, b"")


def parse_role_document(doc: object) -> tuple[Credentials, float]:
    """The metadata service's JSON -> (credentials, expiration as unix time)."""
    if not isinstance(doc, dict):
        raise CredentialsUnavailable("role document is not an object")
    if doc.get("Code") != "Success":
        raise CredentialsUnavailable(f"role document Code is {doc.get('Code')!r}")
    try:
        key_id, secret, token = doc["AccessKeyId"], doc["AccessKeySecret"], doc["SecurityToken"]
        expiration = float(calendar.timegm(time.strptime(doc["Expiration"], "%Y-%m-%dT%H:%M:%SZ")))
    except (KeyError, TypeError, ValueError) as exc:
        raise CredentialsUnavailable(f"role document is missing or has a bad field: {exc.__class__.__name__}") from None
    if not (isinstance(key_id, str) and isinstance(secret, str) and isinstance(token, str)):
        raise CredentialsUnavailable("role document fields are not strings")
    return Credentials(key_id, secret, token), expiration


def static_provider(access_key_id: str, access_key_secret: str, security_token: str) -> CredentialsProvider:
    return StaticCredentialsProvider(access_key_id, access_key_secret, security_token or None)


def _iso(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))
