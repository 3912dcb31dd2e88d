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
the last good credentials. Secrets never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import random
import time
from dataclasses import dataclass

import aiohttp

from agent.ops import metrics
from agent.ops.selflog import RateLimitedLog
from agent.ops.supervise import spawn

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
        self._session: aiohttp.ClientSession | None = None
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
        if self._session is not None:
            await self._session.close()

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
        session = self._client()
        base = self.settings.metadata_url.rstrip("/")
        headers = {}
        token = await self._metadata_token(session, base)
        if token:
            headers["X-aliyun-ecs-metadata-token"] = token
        url = f"{base}{ROLE_PATH}{self.settings.role}"
        try:
            async with session.get(url, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise CredentialsUnavailable(f"metadata service answered HTTP {response.status} for role {self.settings.role}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise CredentialsUnavailable(f"metadata service unreachable: {type(exc).__name__}") from None
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            raise CredentialsUnavailable("metadata service answered something that is not JSON") from None

    async def _metadata_token(self, session: aiohttp.ClientSession, base: str) -> str | None:
        """IMDSv2: a session token; required in hardened mode, used when available otherwise."""
        try:
            async with session.put(
                base + TOKEN_PATH, headers={"X-aliyun-ecs-metadata-token-ttl-seconds": str(TOKEN_TTL_S)}
            ) as response:
                body = await response.read()
                if response.status == 200:
                    token = body.decode("ascii", "strict").strip()
                    if token:
                        return token
                problem = f"HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, UnicodeDecodeError) as exc:
            problem = type(exc).__name__
        if self.settings.imdsv1_disabled:
            raise CredentialsUnavailable(f"cannot get a metadata token (hardened mode): {problem}")
        return None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        return self._session


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
