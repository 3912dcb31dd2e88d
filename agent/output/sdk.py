"""The few aliyun-log-python-sdk modules the agent uses, without the rest.

``aliyun/log/__init__.py`` imports LogClient and with it requests, jmespath,
elasticsearch pieces and more: about 12 MB of resident memory (asyncio,
uvloop, aiohttp, prometheus_client and lz4 come to 36 MB; adding
``import aliyun.log.auth`` makes it 50 MB, loading auth through a bare
package 38 MB). The agent only needs the signers, the credentials classes and
the LogGroup schema, so this module registers ``aliyun.log`` as a bare package
and imports just those submodules.

The bare package runs the real ``__init__.py`` on first access to anything
else (``from aliyun.log import LogClient``), so code in the same process
that wants the whole SDK still gets it, with the same submodule objects.
"""

from __future__ import annotations

import importlib.util
import sys


def _bare_package() -> None:
    spec = importlib.util.find_spec("aliyun.log")  # imports only "aliyun", whose __init__ is one line
    if spec is None or spec.loader is None:
        raise ImportError("aliyun-log-python-sdk is not installed")
    package = importlib.util.module_from_spec(spec)  # __path__ etc. set, __init__.py not run

    def __getattr__(name: str) -> object:
        # Dropped first: the real __init__ imports from "." and must not land back here.
        if package.__dict__.pop("__getattr__", None) is not None:
            try:
                # Into this same module object, so existing references to it see everything.
                spec.loader.exec_module(package)
            except BaseException:
                package.__getattr__ = __getattr__  # the next access reports the failure again
                raise
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'aliyun.log' has no attribute {name!r}") from None

    package.__getattr__ = __getattr__
    sys.modules[spec.name] = package
    # The import system binds a parent's attribute only for modules it loads itself.
    sys.modules["aliyun"].log = package


if "aliyun.log" not in sys.modules:
    _bare_package()

from aliyun.log.auth import AUTH_VERSION_4, AuthV1, AuthV4  # noqa: E402
from aliyun.log.credentials import (  # noqa: E402
    Credentials,
    CredentialsProvider,
    StaticCredentialsProvider,
)


def log_group_raw_class() -> type:
    """The SDK's ``LogGroupRaw``; protobuf is loaded on first call only."""
    from aliyun.log.proto import LogGroupRaw

    return LogGroupRaw


__all__ = [
    "AUTH_VERSION_4",
    "AuthV1",
    "AuthV4",
    "Credentials",
    "CredentialsProvider",
    "StaticCredentialsProvider",
    "log_group_raw_class",
]
