"""Loaded by the interpreter at start-up when this folder is on PYTHONPATH (tests/unit/ops/test_supervise.py).

It makes one part of the real ``slsfwd run`` raise an unexpected exception, and
writes the time it did to ``SLSFWD_TEST_FAILED_AT``:

* ``SLSFWD_TEST_FAIL=ship``: every PutLogs attempt (a shipping task);
* ``SLSFWD_TEST_FAIL=linger-callback``: the batch linger timer (a loop callback).
"""

import os
import time
from pathlib import Path


def _mark_and_raise() -> None:
    Path(os.environ["SLSFWD_TEST_FAILED_AT"]).write_text(repr(time.time()))
    raise RuntimeError("injected by tests/support/failure_injection")


def _install(target: str) -> None:
    if target == "ship":
        from agent.output.ship import PutLogsSink

        async def put(self, *args, **kwargs) -> None:
            _mark_and_raise()

        PutLogsSink.put = put
    elif target == "linger-callback":
        from agent.app import Agent

        def linger_expired(self) -> None:
            _mark_and_raise()

        Agent._linger_expired = linger_expired
    else:
        raise SystemExit(f"SLSFWD_TEST_FAIL: unknown target {target!r}")


if os.environ.get("SLSFWD_TEST_FAIL"):
    _install(os.environ["SLSFWD_TEST_FAIL"])
