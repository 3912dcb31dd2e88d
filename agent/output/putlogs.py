"""The PutLogs API over HTTP: endpoint, signing and one request.

Signing is the SDK's (``aliyun.log.auth.make_auth(...).sign_request``); the
only thing added is a clock offset, so that after ``RequestTimeExpired`` the
agent can sign with the service's idea of the time instead of a skewed local
clock. One call of :meth:`PutLogsClient.put` is one attempt: it returns on
200 and raises :class:`~agent.errors.ShipError` otherwise. Retrying is the
shipper's business.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent import __version__
from agent.output.http.client import Http1Client, HttpError
from agent.pipeline.batch import Destination

from .errors import BAD_RESPONSE, NETWORK_ERROR, ShipError
from .sdk import AUTH_VERSION_4, AuthV1, AuthV4, CredentialsProvider

if TYPE_CHECKING:
    from .credentials import EcsRamRoleProvider

API_VERSION = "0.6.0"
USER_AGENT = f"slsfwd/{__version__}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``host``, ``host:port`` or ``scheme://host[:port]`` from ``sls.endpoint``."""

    scheme: str
    host: str
    port: int
    authority: str  # host[:port] as written: what follows "{project}." in the Host header

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {text!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"endpoint must not have a path: {text!r}")
        if parts.port == 0:
            raise ValueError(f"port 0 is not a port: {text!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.netloc)

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False

    def connect_host(self, project: str) -> str:
        """Where to connect: the project's virtual host, or the IP itself."""
        return self.host if self.is_ip else f"{project}.{self.host}"

    def host_header(self, project: str) -> str:
        return f"{project}.{self.authority}"


class ClockOffsetSigner:
    """The SDK's signer, told what time the service thinks it is."""

    def __init__(self, provider: CredentialsProvider, auth_version: str, region: str) -> None:
        self.offset_s = 0.0
        self._auth_version = auth_version
        if auth_version == AUTH_VERSION_4:
            self._v4 = AuthV4(provider, region)
        else:
            self._v1 = AuthV1(provider)
            # The SDK formats Date itself from utcnow(); give it the corrected time.
            self._v1._getGMT = self._gmt  # type: ignore[method-assign]

    def _now(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=self.offset_s)

    def _gmt(self) -> str:
        return self._now().strftime("%a, %d %b %Y %H:%M:%S GMT")

    def sign(self, method: str, resource: str, headers: dict[str, str], body: bytes) -> None:
        if self._auth_version == AUTH_VERSION_4:
            stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
            headers["Authorization"] = self._v4._do_sign_request(method, resource, {}, headers, body, stamp)
        else:
            self._v1.sign_request(method, resource, {}, headers, body)

    def correct_from(self, server_date: str | None) -> bool:
        """Adopt the offset to the service's ``Date`` header; False if unusable."""
        if not server_date:
            return False
        try:
            server = parsedate_to_datetime(server_date).timestamp()
        except (TypeError, ValueError):
            return False
        self.offset_s = server - time.time()
        return True


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float  # sls.connect_timeout_s
    request_s: float  # sls.request_timeout_s


class PutLogsClient:
    def __init__(
        self,
        endpoint: Endpoint,
        signer: ClockOffsetSigner,
        *,
        timeouts: Timeouts,
        max_connections: int,
        verify_tls: bool,
        ca_file: str | None,
    ) -> None:
        self.endpoint = endpoint
        self.signer = signer
        context = None
        if endpoint.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._http = Http1Client(
            ssl_context=context, connect_timeout_s=timeouts.connect_s, request_timeout_s=timeouts.request_s,
            max_idle=max_connections,
        )
        self._hosts: dict[str, tuple[str, str]] = {}  # project -> (connect host, Host header)

    async def close(self) -> None:
        await self._http.close()

    async def put(self, dest: Destination, body: bytes, raw_size: int) -> None:
        hosts = self._hosts.get(dest.project)
        if hosts is None:
            hosts = self._hosts[dest.project] = (self.endpoint.connect_host(dest.project),
                                                 self.endpoint.host_header(dest.project))
        resource = f"/logstores/{dest.logstore}/shards/lb"
        headers = {
            "Host": hosts[1],
            "Content-Type": "application/x-protobuf",
            "Content-Length": str(len(body)),
            "x-log-apiversion": API_VERSION,
            "x-log-bodyrawsize": str(raw_size),
            "x-log-compresstype": "lz4",
            "User-Agent": USER_AGENT,
        }
        self.signer.sign("POST", resource, headers, body)
        try:
            response = await self._http.request(hosts[0], self.endpoint.port, "POST", resource,
                                                 list(headers.items()), body)
        except HttpError as exc:
            raise ShipError(NETWORK_ERROR, str(exc)) from None
        if response.status != 200:
            raise _error_from_response(response.status, response.body, response.headers)


def _error_from_response(status: int, payload: bytes, headers) -> ShipError:
    request_id = headers.get("x-log-requestid", "")
    server_date = headers.get("date")
    try:
        doc = json.loads(payload)
        code = str(doc["errorCode"])
        message = str(doc.get("errorMessage", ""))[:300]
    except (ValueError, KeyError, TypeError):
        return ShipError(
            BAD_RESPONSE, f"HTTP {status}, unreadable body", status=status, request_id=request_id, server_date=server_date
        )
    return ShipError(code, message, status=status, request_id=request_id, server_date=server_date)


def client_for(sls) -> tuple["PutLogsClient", "EcsRamRoleProvider | None"]:
    """The PutLogs client an ``[sls]`` section describes, and its RAM role provider if it
    uses one (the caller starts or refreshes it, and closes it)."""
    from .credentials import EcsRamRoleProvider, RamRoleSettings, static_provider

    ram_role = None
    if sls.ecs_ram_role:
        ram_role = EcsRamRoleProvider(RamRoleSettings(sls.ecs_ram_role, sls.ecs_metadata_url, sls.ecs_imdsv1_disabled))
        provider = ram_role
    else:
        provider = static_provider(sls.access_key_id, sls.access_key_secret, sls.security_token)
    client = PutLogsClient(
        Endpoint.parse(sls.endpoint),
        ClockOffsetSigner(provider, sls.auth_version, sls.region),
        timeouts=Timeouts(sls.connect_timeout_s, sls.request_timeout_s),
        max_connections=sls.max_in_flight * 2,
        verify_tls=sls.verify_tls,
        ca_file=sls.ca_file or None,
    )
    return client, ram_role
