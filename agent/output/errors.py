"""The PutLogs error table: what the agent does about each failure.

Retriability is data: every failure becomes a :class:`ShipError` whose
``action`` comes from one table, tested row by row. Nothing here sleeps or
sends; :mod:`agent.ship` carries the actions out.
"""

from __future__ import annotations

import enum


class Action(enum.Enum):
    RETRY = "retry"  # transient: capped exponential backoff with full jitter
    THROTTLE = "throttle"  # quota: back off and cut the logstore's concurrency
    HOLD = "hold"  # credentials or configuration: keep the data, retry slowly
    RESIGN = "resign"  # request date rejected: correct the clock offset, sign again
    SPLIT = "split"  # request too large: halve the batch
    REPAIR = "repair"  # a log has a bad time or encoding: isolate it and fix it
    BISECT = "bisect"  # any other rejection: isolate the bad logs, dead-letter only those

    @property
    def retriable(self) -> bool:
        """Whether the same request may succeed later unchanged."""
        return self in (Action.RETRY, Action.THROTTLE, Action.HOLD, Action.RESIGN)


ERROR_CODES: dict[str, Action] = {
    "InternalServerError": Action.RETRY,
    "ServerBusy": Action.RETRY,
    "RequestTimeout": Action.RETRY,
    "WriteQuotaExceed": Action.THROTTLE,
    "ShardWriteQuotaExceed": Action.THROTTLE,
    "ProjectQuotaExceed": Action.THROTTLE,
    "Unauthorized": Action.HOLD,
    "SignatureNotMatch": Action.HOLD,
    "InvalidAccessKeyId": Action.HOLD,
    "SecurityTokenExpired": Action.HOLD,
    "SecurityToken.Expired": Action.HOLD,
    "ProjectNotExist": Action.HOLD,
    "LogStoreNotExist": Action.HOLD,
    "RequestTimeExpired": Action.RESIGN,
    "PostBodyTooLarge": Action.SPLIT,
    "InvalidTimestamp": Action.REPAIR,
    "InvalidEncoding": Action.REPAIR,
}

# Codes that keep the data and retry slowly: the credentials or the configuration are wrong.
HOLD_CODES = tuple(code for code, action in ERROR_CODES.items() if action is Action.HOLD)
# Of those, the ones that mean the credentials themselves are bad or stale: refresh them first.
AUTH_CODES = frozenset(
    {"Unauthorized", "SignatureNotMatch", "InvalidAccessKeyId", "SecurityTokenExpired", "SecurityToken.Expired"}
)

NETWORK_ERROR = "NetworkError"
BAD_RESPONSE = "BadResponse"


def classify(status: int | None, code: str | None) -> Action:
    """Action for an HTTP status (None: no response at all) and errorCode."""
    if code and code in ERROR_CODES:
        return ERROR_CODES[code]
    if status is None or status >= 500:
        return Action.RETRY
    if status in (403, 429):
        return Action.THROTTLE
    if status in (401,):
        return Action.HOLD
    if not code:
        return Action.RETRY  # a 4xx we cannot read is not proof that the data is bad
    if 400 <= status < 500:
        return Action.BISECT
    return Action.RETRY


class ShipError(Exception):
    """A failed delivery attempt, with what to do about it."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str = "",
        server_date: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.server_date = server_date
        self.action = classify(status, None if code in (NETWORK_ERROR, BAD_RESPONSE) else code)

    @property
    def retriable(self) -> bool:
        return self.action.retriable

    @property
    def metric_label(self) -> str:
        """Low-cardinality result label: a known error code or a status class."""
        if self.code in ERROR_CODES or self.code in (NETWORK_ERROR, BAD_RESPONSE):
            return self.code
        return f"http_{self.status // 100}xx" if self.status else "error"
