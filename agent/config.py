"""The agent's configuration: one typed, frozen object with every default visible.

Loaded from TOML with :mod:`tomllib`. Unknown keys and wrong types are
errors; every problem is reported as one line that names the key
(``sls.project: missing``), all at once, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from agent.pipeline.parse import BUILTIN_VERSION_PREFIXES, is_builtin_version
from agent.pipeline.processors import OPTIONS_BY_TYPE, ProcessorConfig

DEFAULT_CONFIG_PATH = Path("/etc/slsfwd/slsfwd.toml")

ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"
ENV_ECS_RAM_ROLE = "ALIBABA_CLOUD_ECS_METADATA"


@dataclass(frozen=True)
class LineFormatConfig:
    version: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class InputConfig:
    listen: str = "127.0.0.1:11111"  # host:port; loopback unless told otherwise
    relp_listen: str = ""  # host:port of the RELP input for rsyslog's omrelp, e.g. "127.0.0.1:20514"; "" = off
    max_line_bytes: int = 1048576  # longer lines are cut here (counted)
    max_connections: int = 1024  # further connections are accepted and closed at once (counted)
    read_coalesce_ms: int = 500  # after a small read, wait this long so the next read takes many lines (a busy
    # connection: until about 192 KiB arrived at its rate, at most 100 ms); 0 = off
    relp_max_unacked_frames: int = 1024  # per RELP session, reading pauses while this many frames wait for their ack
    relp_max_unacked_bytes: int = 8388608  # ... or this much DATA
    formats: tuple[LineFormatConfig, ...] = ()  # user formats, as Logtail's streamlog_formats


@dataclass(frozen=True)
class SlsConfig:
    project: str  # required
    logstore: str  # required
    endpoint: str = "cn-hangzhou-intranet.log.aliyuncs.com"  # host, or URL with scheme and port
    topic: str = ""
    access_key_id: str = ""  # ALIBABA_CLOUD_ACCESS_KEY_ID wins
    access_key_secret: str = ""  # ALIBABA_CLOUD_ACCESS_KEY_SECRET wins
    security_token: str = ""  # STS token; ALIBABA_CLOUD_SECURITY_TOKEN wins
    ecs_ram_role: str = ""  # use the ECS instance RAM role instead of keys; ALIBABA_CLOUD_ECS_METADATA wins
    ecs_metadata_url: str = "http://100.100.100.200"  # the ECS metadata service
    ecs_imdsv1_disabled: bool = False  # hardened mode: always get a metadata token first
    auth_version: str = "v1"  # "v1" (hmac-sha1) or "v4" (SLS4-HMAC-SHA256, needs region)
    region: str = ""  # e.g. "cn-hangzhou"; required for v4
    source_ip: str = ""  # Source for loopback lines; default: the host's primary IPv4
    max_in_flight: int = 4  # PutLogs requests in flight per logstore
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    verify_tls: bool = True  # for https endpoints
    ca_file: str = ""  # extra CA bundle for https endpoints

    def __repr__(self) -> str:  # never print secrets
        return f"SlsConfig(project={self.project!r}, logstore={self.logstore!r}, endpoint={self.endpoint!r})"


@dataclass(frozen=True)
class RouteConfig:
    tag: str
    logstore: str
    project: str = ""  # default: sls.project
    topic: str = ""  # default: sls.topic


# What batch.window_bytes is when not set (or set to 0), unless twice batch.max_bytes is more. A window
# byte costs about 2.5 bytes of resident memory (a bytes object per log, the requests being built,
# the allocator's slack): 16 MiB made 80 MB at the peak of a 200 MB catch-up, 4 MiB 52 MB (issue 21:
# at most 64 MB). Four PutLogs in flight of 512 KiB fit twice, so it does not slow shipping.
DEFAULT_WINDOW_BYTES = 4194304


@dataclass(frozen=True)
class BatchConfig:
    max_logs: int = 4096
    max_bytes: int = 524288  # raw protobuf bytes per LogGroup
    linger_ms: int = 2000
    window_bytes: int = 0  # encoded logs held in memory (open and shipping batches); past it, chunks wait in the spool

    def __post_init__(self) -> None:
        if self.window_bytes == 0:  # the default: follows the memory target, and holds two LogGroups at least
            object.__setattr__(self, "window_bytes", max(DEFAULT_WINDOW_BYTES, 2 * self.max_bytes))


@dataclass(frozen=True)
class SpoolConfig:
    dir: str = "/var/lib/slsfwd"
    type: str = "disk"  # "disk" (durable) or "memory" (lost on crash or restart)
    max_bytes: int = 1073741824  # unacknowledged bytes; full means the sockets stop being read
    fsync_ms: int = 200  # group-commit window: a read line is on stable storage within this; 0 = every write
    full_policy: str = "backpressure"  # or "drop_oldest": delete the oldest segment, count its lines
    dead_letter_max_bytes: int = 104857600  # cap of spool.dir/dead-letter/
    segment_bytes: int = 8388608  # a segment file is closed and a new one begun past this size
    read_ahead_bytes: int = 8388608  # chunks the reader keeps in memory before it reads back from the files


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9469"


@dataclass(frozen=True)
class Config:
    input: InputConfig = field(default_factory=InputConfig)
    sls: SlsConfig | None = None  # absent: console sink, one JSON object per log on stdout
    routes: tuple[RouteConfig, ...] = ()
    processors: tuple[ProcessorConfig, ...] = ()  # in order, after parsing (agent/pipeline/processors/)
    batch: BatchConfig = field(default_factory=BatchConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    shutdown_timeout_s: float = 10.0
    log_level: str = "info"


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load(path: Path, env: Mapping[str, str] | None = None) -> Config:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8"]) from None
    return loads(text, env=os.environ if env is None else env, origin=str(path))


def loads(text: str, *, env: Mapping[str, str] | None = None, origin: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{origin}: invalid TOML: {exc}"]) from None
    problems: list[str] = []
    config = _build(Config, data, "", problems)
    if config is not None:
        config = _apply_env(config, os.environ if env is None else env)
        problems.extend(validate(config, sls_table_present="sls" in data))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


# -- generic TOML -> dataclass ------------------------------------------------


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        problems.append(f"{where}: must be a table")
        return None
    if cls is ProcessorConfig:
        return _build_processor(data, prefix, problems)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            problems.append(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        key = f"{prefix}{name}"
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                problems.append(f"{key}: missing")
            continue
        value = _convert(hints[name], data[name], key, problems)
        if value is not _INVALID:
            values[name] = value
    try:
        return cls(**values)
    except TypeError:
        return None  # a required key was missing or invalid: already reported


_INVALID = object()


def _build_processor(data: dict, prefix: str, problems: list[str]) -> ProcessorConfig | None:
    """name, type and tags, then every other key of the table as that type's options."""
    kind = data.get("type")
    options_class = OPTIONS_BY_TYPE.get(kind) if isinstance(kind, str) else None
    common = {k: v for k, v in data.items() if k in ("name", "type", "tags")}
    if options_class is None:
        if "type" not in data:
            problems.append(f"{prefix}type: missing")
        else:
            problems.append(f"{prefix}type: unknown processor {kind!r}; known: {', '.join(OPTIONS_BY_TYPE)}")
        return None
    options = _build(options_class, {k: v for k, v in data.items() if k not in common}, prefix, problems)
    head = _build(_ProcessorHead, common, prefix, problems)
    if options is None or head is None:
        return None
    return ProcessorConfig(head.name, head.type, head.tags, options)


@dataclass(frozen=True)
class _ProcessorHead:
    name: str
    type: str
    tags: tuple[str, ...] = ()


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, problems)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, f"{key}.", problems)
        return _INVALID if built is None else built
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: must be a table")
            return _INVALID
        items = {k: _convert(args[1], v, f"{key}.{k}", problems) for k, v in value.items()}
        return _INVALID if any(v is _INVALID for v in items.values()) else items
    if origin is tuple:
        item_type = args[0]
        if not isinstance(value, list):
            problems.append(f"{key}: must be a list")
            return _INVALID
        items = [_convert(item_type, v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        problems.append(f"{key}: must be {_type_name(hint)}, got {_type_name(type(value))}")
        return _INVALID
    return value


def _type_name(t: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}.get(
        t, getattr(t, "__name__", str(t))
    )


# -- environment and validation -----------------------------------------------


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    if config.sls is None:
        return config
    overrides = {
        name: env[var]
        for name, var in (
            ("access_key_id", ENV_ACCESS_KEY_ID),
            ("access_key_secret", ENV_ACCESS_KEY_SECRET),
            ("security_token", ENV_SECURITY_TOKEN),
            ("ecs_ram_role", ENV_ECS_RAM_ROLE),
        )
        if env.get(var)
    }
    return dataclasses.replace(config, sls=dataclasses.replace(config.sls, **overrides)) if overrides else config


def validate(config: Config, *, sls_table_present: bool = False) -> list[str]:
    problems: list[str] = []
    _check_listen("input.listen", config.input.listen, problems)
    if config.input.relp_listen:
        _check_listen("input.relp_listen", config.input.relp_listen, problems)
        if config.input.relp_listen == config.input.listen:
            problems.append("input.relp_listen: must differ from input.listen")
    _check_listen("metrics.listen", config.metrics.listen, problems)
    _positive("input.max_line_bytes", config.input.max_line_bytes, problems)
    _positive("input.max_connections", config.input.max_connections, problems)
    _positive("input.relp_max_unacked_frames", config.input.relp_max_unacked_frames, problems)
    _positive("input.relp_max_unacked_bytes", config.input.relp_max_unacked_bytes, problems)
    if config.batch.window_bytes < config.batch.max_bytes:
        problems.append("batch.window_bytes: must be at least batch.max_bytes (one LogGroup)")
    if config.spool.segment_bytes < 65536:
        problems.append("spool.segment_bytes: must be at least 65536")
    _positive("spool.read_ahead_bytes", config.spool.read_ahead_bytes, problems)
    if not 0 <= config.input.read_coalesce_ms <= 1000:
        problems.append("input.read_coalesce_ms: must be between 0 and 1000")
    seen_versions: set[str] = set()
    for i, fmt in enumerate(config.input.formats):
        key = f"input.formats[{i}]"
        if not fmt.version or " " in fmt.version:
            problems.append(f"{key}.version: must be a non-empty word")
        if is_builtin_version(fmt.version):
            problems.append(
                f"{key}.version: {fmt.version!r} is a built-in Logtail version (those beginning with "
                f"{' or '.join(BUILTIN_VERSION_PREFIXES)} are built in and cannot be redefined); remove this entry"
            )
        if fmt.version in seen_versions:
            problems.append(f"{key}.version: {fmt.version!r} is defined twice")
        seen_versions.add(fmt.version)
        for j, name in enumerate(fmt.fields):
            if not name or name == "msg":
                problems.append(f"{key}.fields[{j}]: must be a non-empty name other than 'msg'")
    _positive("batch.max_logs", config.batch.max_logs, problems)
    if not 1024 <= config.batch.max_bytes <= 5 * 1024 * 1024:
        problems.append("batch.max_bytes: must be between 1024 and 5242880 (SLS takes at most 5 MB a LogGroup)")
    if config.batch.max_logs > 40960:
        problems.append("batch.max_logs: must be at most 40960")
    if config.batch.linger_ms < 0:
        problems.append("batch.linger_ms: must be 0 or more")
    _positive("spool.max_bytes", config.spool.max_bytes, problems)
    if config.spool.type not in ("disk", "memory"):
        problems.append('spool.type: must be "disk" or "memory"')
    if config.spool.full_policy not in ("backpressure", "drop_oldest"):
        problems.append('spool.full_policy: must be "backpressure" or "drop_oldest"')
    if config.spool.fsync_ms < 0:
        problems.append("spool.fsync_ms: must be 0 or more")
    _positive("spool.dead_letter_max_bytes", config.spool.dead_letter_max_bytes, problems)
    if not config.spool.dir:
        problems.append("spool.dir: must not be empty")
    if config.shutdown_timeout_s <= 0:
        problems.append("shutdown_timeout_s: must be more than 0")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append("log_level: must be one of debug, info, warning, error")
    if config.sls is not None:
        problems.extend(_validate_sls(config.sls))
    tags: set[str] = set()
    for i, route in enumerate(config.routes):
        if not route.tag:
            problems.append(f"routes[{i}].tag: must not be empty")
        if route.tag in tags:
            problems.append(f"routes[{i}].tag: {route.tag!r} is routed twice")
        tags.add(route.tag)
        if not route.logstore:
            problems.append(f"routes[{i}].logstore: must not be empty")
        if config.sls is None and not sls_table_present:
            problems.append(f"routes[{i}]: routes need an [sls] section")
    _validate_processors(config.processors, problems)
    return problems


def _validate_processors(processors: tuple[ProcessorConfig, ...], problems: list[str]) -> None:
    names: set[str] = set()
    for i, processor in enumerate(processors):
        key = f"processors[{i}]."
        if not processor.name:
            problems.append(f"{key}name: must not be empty")
        elif processor.name in names:
            problems.append(f"{key}name: {processor.name!r} is used twice (it labels the processor's metrics)")
        names.add(processor.name)
        problems.extend(processor.options.problems(key))


def _validate_sls(sls: SlsConfig) -> list[str]:
    problems: list[str] = []
    for name in ("project", "logstore", "endpoint"):
        if not getattr(sls, name):
            problems.append(f"sls.{name}: must not be empty")
    from agent.output.putlogs import Endpoint  # local: keeps `slsfwd check` light

    try:
        Endpoint.parse(sls.endpoint)
    except ValueError as exc:
        problems.append(f"sls.endpoint: {exc}")
    if not sls.ecs_ram_role:
        if not sls.access_key_id:
            problems.append(f"sls.access_key_id: missing (or set {ENV_ACCESS_KEY_ID}, or use sls.ecs_ram_role)")
        if not sls.access_key_secret:
            problems.append(f"sls.access_key_secret: missing (or set {ENV_ACCESS_KEY_SECRET}, or use sls.ecs_ram_role)")
    if not sls.ecs_metadata_url.startswith(("http://", "https://")):
        problems.append("sls.ecs_metadata_url: must be an http(s) URL")
    if sls.auth_version not in ("v1", "v4"):
        problems.append("sls.auth_version: must be \"v1\" or \"v4\"")
    if sls.auth_version == "v4" and not sls.region:
        problems.append("sls.region: required with auth_version = \"v4\"")
    if sls.source_ip:
        try:
            ipaddress.ip_address(sls.source_ip)
        except ValueError:
            problems.append(f"sls.source_ip: not an IP address: {sls.source_ip!r}")
    _positive("sls.max_in_flight", sls.max_in_flight, problems)
    if sls.connect_timeout_s <= 0 or sls.request_timeout_s <= 0:
        problems.append("sls.connect_timeout_s / sls.request_timeout_s: must be more than 0")
    if sls.ca_file and not Path(sls.ca_file).is_file():
        problems.append(f"sls.ca_file: no such file: {sls.ca_file}")
    return problems


def _positive(key: str, value: int, problems: list[str]) -> None:
    if value <= 0:
        problems.append(f"{key}: must be more than 0")


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("must be host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port


def _check_listen(key: str, value: str, problems: list[str]) -> None:
    try:
        split_host_port(value)
    except ValueError as exc:
        problems.append(f"{key}: {exc} (got {value!r})")
