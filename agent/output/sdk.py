"""The few aliyun-log-python-sdk modules the agent uses, without the rest.

``aliyun/log/__init__.py`` imports LogClient and with it requests, jmespath,
elasticsearch pieces and more: about 12 MB of resident memory. The agent only
needs the signers, the credentials classes and the LogGroup schema, so this
module registers ``aliyun.log`` as a bare package and imports just those
submodules.

The signers import ``aliyun.log.util``, which imports ``dateutil.parser`` at
the top for its time-string helpers, which signing never calls; with its
``dateutil.tz``, ``decimal`` and ``ctypes`` it made 1.7 MB of the agent's
resident memory at rest. ``dateutil.parser`` is therefore registered with the standard
library's ``importlib.util.LazyLoader``: the name is bound, the module runs on
its first attribute access (never, in the agent).

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


def _lazy_dateutil_parser() -> None:
    spec = importlib.util.find_spec("dateutil.parser")  # imports "dateutil": a version string and a __getattr__
    if spec is None or spec.loader is None:
        return  # the SDK's own import then reports it
    spec.loader = importlib.util.LazyLoader(spec.loader)
    parser = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = parser
    spec.loader.exec_module(parser)  # lazy: only arms the load on first attribute access
    # Bound on the package too: "from dateutil import parser" then finds it without an import,
    # which would look at the module's __spec__ and so load it.
    sys.modules["dateutil"].parser = parser


if "aliyun.log" not in sys.modules:
    _bare_package()
if "aliyun.log.util" not in sys.modules and "dateutil.parser" not in sys.modules:
    _lazy_dateutil_parser()

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
