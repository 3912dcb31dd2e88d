"""No background task dies silently, or late.

Every long-lived or fire-and-forget task of the agent is started with
:func:`spawn`. When one ends with an exception, it is reported at once through
the event loop's exception handler, the same place asyncio reports a timer or
``call_soon`` callback that raised. :class:`FailureWatch` is that handler: it
turns a failed task or callback into the agent's failure (``/healthz`` 503, the
watchdog stops, the agent exits non-zero within a second, systemd restarts it
and the spool replays what was not acknowledged).

An exception in one connection's protocol callback is not the agent's failure:
asyncio has already closed that connection, so it is logged and counted
(``slsfwd_internal_errors_total{where="connection"}``) and the agent goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine

from . import metrics
from .selflog import RateLimitedLog

log = logging.getLogger("slsfwd")

_FATAL = "slsfwd_fatal"


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task:
    """Start ``coro`` as a task whose failure is reported the moment it happens."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    task.add_done_callback(_report_failure)
    return task


def _report_failure(task: asyncio.Task) -> None:
    if task.cancelled() or task.exception() is None:
        return
    task.get_loop().call_exception_handler({
        "message": f"background task {task.get_name()!r} failed",
        "exception": task.exception(),
        "task": task,
        _FATAL: True,
    })


class FailureWatch:
    """The loop's exception handler: records the first fatal failure and calls ``on_failure``."""

    def __init__(self, on_failure: Callable[[str, BaseException], None]) -> None:
        self.failure: str | None = None  # what failed, for /healthz: a name and an exception type, no data
        self._on_failure = on_failure
        self._connection_log = RateLimitedLog(log, interval_s=60.0)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self.handle)

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not _is_fatal(context, exc):
            self._log_nonfatal(loop, context)
            return
        assert exc is not None
        metrics.INTERNAL_ERRORS.labels(where="task" if "task" in context else "callback").inc()
        where = f"task {context['task'].get_name()}" if "task" in context else "a callback"
        what = f"{where} failed ({type(exc).__name__})"
        log.critical("%s; stopping", what, exc_info=exc)
        if self.failure is None:
            self.failure = what
            self._on_failure(where, exc)

    def _log_nonfatal(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "protocol" in context or "transport" in context:
            metrics.INTERNAL_ERRORS.labels(where="connection").inc()
            exc = context.get("exception")
            self._connection_log.error("%s; that connection was closed", context.get("message"), exc_info=exc)
            return
        loop.default_exception_handler(context)


def _is_fatal(context: dict[str, Any], exc: BaseException | None) -> bool:
    if exc is None or not isinstance(exc, Exception):
        return False
    if context.get(_FATAL):
        return True
    # A timer or call_soon callback of the agent's own: the part it drives has stopped.
    return "handle" in context and "protocol" not in context and "transport" not in context
