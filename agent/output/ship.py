"""Closed batches -> the sink, with the error table carried out.

Each batch becomes one task. A per-logstore :class:`AdaptiveLimit` bounds
the requests in flight (AIMD: quota errors halve it, successes grow it back).
Failures follow :mod:`agent.errors`:

* RETRY: capped exponential backoff with full jitter, forever (the data is
  still in the queue; giving up would lose it).
* THROTTLE: quota backoff, and the logstore's concurrency is cut.
* HOLD: credentials or configuration are wrong: keep the data, refresh the
  credentials, retry every 30 s, say so once a minute.
* RESIGN: correct the clock offset from the service's ``Date`` and resend.
* SPLIT / REPAIR / BISECT: halve the batch until the bad logs are alone;
  a lone log is repaired (REPAIR) or dead-lettered with the reason.

A batch's queue chunks are released only when every log in it is delivered
or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Protocol

from agent.ops import metrics
from agent.ops.selflog import RateLimitedLog
from agent.ops.supervise import spawn
from agent.pipeline.batch import Batch, Destination
from agent.pipeline.encode import compress, encode_log, log_group
from agent.pipeline.parse import contents_in_window

from . import backoff
from .deadletter import DeadLetters
from .decode import decode_logs
from .errors import AUTH_CODES, HOLD_CODES, Action, ShipError

log = logging.getLogger("slsfwd.ship")


class Sink(Protocol):
    async def put(self, dest: Destination, source: str, tags: list[tuple[str, str]], logs: list[bytes]) -> None: ...

    async def close(self) -> None: ...


class PutLogsSink:
    """Encodes a LogGroup and sends it with one PutLogs request."""

    def __init__(self, client) -> None:
        self.client = client

    async def put(self, dest: Destination, source: str, tags: list[tuple[str, str]], logs: list[bytes]) -> None:
        raw = log_group(logs, dest.topic, source, tags)
        body = compress(raw)
        await self.client.put(dest, body, len(raw))
        metrics.SHIPPED_BYTES.labels(stage="raw").inc(len(raw))
        metrics.SHIPPED_BYTES.labels(stage="compressed").inc(len(body))

    async def close(self) -> None:
        await self.client.close()


class AdaptiveLimit:
    """A concurrency limit that quota errors cut and successes restore (AIMD)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def resize(self, maximum: int) -> None:
        async with self._changed:
            self.maximum = maximum
            self.limit = min(max(self.limit, 1), maximum)
            self._changed.notify_all()

    async def release(self, *, throttled: bool = False, succeeded: bool = False) -> None:
        async with self._changed:
            self.in_flight -= 1
            if throttled:
                self.limit = max(1, self.limit // 2)
            elif succeeded and self.limit < self.maximum:
                self.limit += 1
            self._changed.notify_all()


class Shipper:
    def __init__(
        self,
        sink: Sink,
        *,
        tags: list[tuple[str, str]],
        max_in_flight: int,
        dead_letters: DeadLetters | None,
        refresh_credentials: Callable[[], Awaitable[None]] | None = None,
        signer=None,
        on_batch_done: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.tags = tags
        self.max_in_flight = max_in_flight
        self.dead_letters = dead_letters
        self._refresh_credentials = refresh_credentials
        self._signer = signer
        self._limits: dict[tuple[str, str], AdaptiveLimit] = {}
        self._tasks: dict[asyncio.Task, int] = {}  # -> the batch's raw bytes
        self.pending_bytes = 0  # raw bytes of the batches not done yet: they are in memory
        self._on_batch_done = on_batch_done
        self._idle = asyncio.Event()
        self._idle.set()
        self._holding: dict[str, RateLimitedLog] = {}
        self._hold_codes: dict[str, str] = {}
        self._retry_log = RateLimitedLog(log, interval_s=60.0)
        self._dead_letter_log = RateLimitedLog(log, interval_s=60.0)
        self._giving_up = False
        self._interrupt = asyncio.Event()  # wakes every paused retry: shutdown, or a new output

    def blocked_reasons(self) -> list[str]:
        return sorted(f"{key}: {code}" for key, code in self._hold_codes.items())

    def submit(self, batch: Batch) -> None:
        task = spawn(self._ship(batch), name="ship-batch")
        self._tasks[task] = batch.raw_bytes
        self.pending_bytes += batch.raw_bytes
        self._idle.clear()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.pending_bytes -= self._tasks.pop(task, 0)
        if not self._tasks:
            self._idle.set()
        if self._on_batch_done is not None:
            self._on_batch_done()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def cancel_all(self) -> int:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    async def close(self) -> None:
        await self.sink.close()

    def stop_retrying(self) -> None:
        """Shutdown with a durable queue: a failed attempt ends its task instead of
        waiting to retry; its logs stay unacknowledged in the spool for the next start."""
        self._giving_up = True
        self._wake_paused()

    async def use_output(self, sink: Sink, *, signer, refresh_credentials, max_in_flight: int) -> None:
        """A reload's new ``[sls]``: every attempt from now on uses it, and paused retries try it at once."""
        self.sink = sink
        self._signer = signer
        self._refresh_credentials = refresh_credentials
        self.max_in_flight = max_in_flight
        for limit in self._limits.values():
            await limit.resize(max_in_flight)
        self._wake_paused()

    def _wake_paused(self) -> None:
        self._interrupt.set()
        self._interrupt = asyncio.Event()

    async def _ship(self, batch: Batch) -> None:
        try:
            await self._deliver(batch.dest, batch.source, batch.logs)
        except _GiveUp:
            return  # not released: the chunks stay unacknowledged
        batch.release()

    async def _pause(self, seconds: float) -> None:
        if self._giving_up:
            raise _GiveUp
        try:
            await asyncio.wait_for(self._interrupt.wait(), seconds)
        except asyncio.TimeoutError:
            return
        if self._giving_up:
            raise _GiveUp

    def _limit_for(self, dest: Destination) -> AdaptiveLimit:
        key = (dest.project, dest.logstore)
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = AdaptiveLimit(self.max_in_flight)
        return limit

    async def _deliver(self, dest: Destination, source: str, logs: list[bytes]) -> None:
        """Deliver or dead-letter every log in ``logs``; returns only when done."""
        attempt = 0
        limit = self._limit_for(dest)
        while True:
            await limit.acquire()
            started = time.monotonic()
            try:
                await self.sink.put(dest, source, self.tags, logs)
            except ShipError as error:
                metrics.SHIP_LATENCY.observe(time.monotonic() - started)
                await limit.release(throttled=error.action is Action.THROTTLE)
                metrics.SHIP_REQUESTS.labels(result=error.metric_label).inc()
                if error.retriable:
                    await self._wait_before_retry(error, dest, attempt, len(logs))
                    attempt += 1
                    continue
                await self._isolate(dest, source, logs, error)
                return
            except BaseException:
                await limit.release()
                raise
            metrics.SHIP_LATENCY.observe(time.monotonic() - started)
            await limit.release(succeeded=True)
            metrics.SHIP_REQUESTS.labels(result="ok").inc()
            metrics.SHIPPED_LOGS.inc(len(logs))
            self._clear_hold(dest)
            return

    async def _wait_before_retry(self, error: ShipError, dest: Destination, attempt: int, count: int) -> None:
        metrics.SHIP_RETRIES.labels(reason=error.action.value).inc()
        if error.action is Action.RESIGN and self._signer is not None and self._signer.correct_from(error.server_date):
            log.warning("service rejected the request time; clock offset is now %.1f s", self._signer.offset_s)
            await self._pause(backoff.TRANSIENT.delay(min(attempt, 3)))
            return
        if error.action is Action.HOLD:
            self._hold(dest, error)
            if self._refresh_credentials is not None and error.code in AUTH_CODES:
                await self._refresh_credentials()
            await self._pause(backoff.HOLD_INTERVAL_S)
            return
        schedule = backoff.QUOTA if error.action is Action.THROTTLE else backoff.TRANSIENT
        delay = schedule.delay(attempt)
        self._retry_log.warning(
            "PutLogs to %s/%s failed (%s), retrying %d logs in %.1f s", dest.project, dest.logstore, error, count, delay
        )
        await self._pause(delay)

    def _hold(self, dest: Destination, error: ShipError) -> None:
        key = f"{dest.project}/{dest.logstore}"
        if key not in self._holding:
            self._holding[key] = RateLimitedLog(log, interval_s=60.0)
            metrics.SHIP_BLOCKED.labels(reason=error.code if error.code in HOLD_CODES else "other").set(1)
        self._hold_codes[key] = error.code
        self._holding[key].error(
            "PutLogs to %s is refused (%s); keeping the data and retrying every %.0f s. "
            "Fix the credentials or configuration; nothing is dropped.",
            key, error, backoff.HOLD_INTERVAL_S,
        )

    def _clear_hold(self, dest: Destination) -> None:
        key = f"{dest.project}/{dest.logstore}"
        self._hold_codes.pop(key, None)
        if self._holding.pop(key, None) is not None:
            log.info("PutLogs to %s works again", key)
            if not self._holding:
                for label in HOLD_CODES + ("other",):
                    metrics.SHIP_BLOCKED.labels(reason=label).set(0)

    async def _isolate(self, dest: Destination, source: str, logs: list[bytes], error: ShipError) -> None:
        if len(logs) > 1:
            middle = len(logs) // 2
            await self._deliver(dest, source, logs[:middle])
            await self._deliver(dest, source, logs[middle:])
            return
        if error.action is Action.REPAIR:
            repaired = repair_log(logs[0])
            if repaired != logs[0]:
                metrics.REPAIRED_LOGS.labels(reason=error.code).inc()
                await self._deliver(dest, source, [repaired])
                return
        await self._dead_letter(dest, source, logs, error)

    async def _dead_letter(self, dest: Destination, source: str, logs: list[bytes], error: ShipError) -> None:
        reason = error.metric_label
        written = await self._store_dead_letters(dest, source, logs, error) if self.dead_letters else 0
        metrics.DEAD_LETTER_LOGS.labels(reason=reason).inc(written)
        if written < len(logs):
            metrics.DEAD_LETTER_LOGS.labels(reason="cap_exceeded").inc(len(logs) - written)
        log.error("service rejected %d log(s) for good (%s); dead-lettered", len(logs), error)


    async def _store_dead_letters(self, dest: Destination, source: str, logs: list[bytes], error: ShipError) -> int:
        """Until the logs are stored (or counted over the cap): a failed write keeps them in the spool."""
        assert self.dead_letters is not None
        while True:
            try:
                return await self.dead_letters.write(dest, source, logs, error.code, error.message)
            except OSError as exc:
                metrics.DEAD_LETTER_WRITE_ERRORS.inc()
                self._dead_letter_log.error(
                    "cannot write dead letters to %s (%s); keeping %d rejected logs in the spool, retrying every %.0f s",
                    self.dead_letters.directory, exc.strerror or exc, len(logs), backoff.HOLD_INTERVAL_S,
                )
                await self._pause(backoff.HOLD_INTERVAL_S)


class _GiveUp(Exception):
    """Raised inside a delivery when shutdown asked not to retry any more."""




def repair_log(encoded: bytes) -> bytes:
    """Re-encode one log with a time and encoding SLS accepts (decoding escapes bad UTF-8)."""
    [(unix_time, contents)] = decode_logs([encoded])
    return encode_log(*contents_in_window(unix_time, contents, int(time.time())))
