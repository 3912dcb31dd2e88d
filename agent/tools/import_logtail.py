"""``slsfwd import-logtail``: Logtail's streamlog settings -> an slsfwd TOML config.

Reads ``streamlog_tcp_addr``, ``streamlog_tcp_port`` and ``streamlog_formats``
from ``ilogtail_config.json``, and the region endpoint from ``data_server_list``
when present. Logtail took project and logstore from its server-side config,
which is not in that file, so they are left for the user to fill in (and
``slsfwd check`` says so until they are).

``streamlog_formats`` entries whose version is built in (``0.*``, ``1.*``) are
left out, with a comment: Logtail ignored them (the tutorial's own file has
``{"version": "0.1", "fields": []}`` and its logs still carry ``app-name``), so
carrying them over would change how the lines are parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.config import SlsConfig
from agent.pipeline.parse import BUILTIN_VERSION_PREFIXES, is_builtin_version

LOGTAIL_DEFAULT_PORT = 11111
DEFAULT_ENDPOINT = SlsConfig.__dataclass_fields__["endpoint"].default


class LogtailImportError(Exception):
    """The Logtail config cannot be converted; the message says why."""


def load_logtail_config(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LogtailImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise LogtailImportError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise LogtailImportError(f"{path}: expected a JSON object")
    return doc


def to_toml(doc: dict, origin: str) -> str:
    lines = [f"# Converted from {origin} by slsfwd import-logtail.", ""]
    if doc.get("streamlog_open") is False:
        lines.append("# Note: streamlog_open was false there, so Logtail was not listening for rsyslog.")
    lines += ["[input]", f'listen = "{_listen(doc)}"']
    if "streamlog_tcp_addr" not in doc:
        lines.append("# Logtail listened on 0.0.0.0 by default; slsfwd stays on loopback unless told otherwise.")
    elif doc["streamlog_tcp_addr"] in ("0.0.0.0", "::"):
        lines.append("# As Logtail was told: every interface. Use 127.0.0.1 if only the local rsyslog sends.")
    for index, version, fields in _formats(doc.get("streamlog_formats")):
        if is_builtin_version(version):
            lines += ["", f"# streamlog_formats[{index}] (version {_quote(version)}) is left out: versions beginning with "
                      f"{' or '.join(BUILTIN_VERSION_PREFIXES)} are Logtail's built-in formats, which that entry never "
                      "changed; slsfwd parses them as Logtail did."]
            continue
        lines += ["", "[[input.formats]]", f"version = {_quote(version)}",
                  "fields = [" + ", ".join(_quote(f) for f in fields) + "]"]
    lines += [
        "",
        "[sls]",
        f"endpoint = {_quote(_endpoint(doc))}",
        'project = ""     # fill in: Logtail took it from its server-side config',
        'logstore = ""    # fill in',
        'ecs_ram_role = ""  # or access_key_id / access_key_secret, or the ALIBABA_CLOUD_* environment',
        "",
        "[spool]",
        'dir = "/var/lib/slsfwd"',
        "",
    ]
    return "\n".join(lines)


def _listen(doc: dict) -> str:
    addr = doc.get("streamlog_tcp_addr", "127.0.0.1")
    port = doc.get("streamlog_tcp_port", LOGTAIL_DEFAULT_PORT)
    if not isinstance(addr, str) or not addr:
        raise LogtailImportError("streamlog_tcp_addr: must be a non-empty string")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise LogtailImportError(f"streamlog_tcp_port: not a port: {port!r}")
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _formats(value: object) -> list[tuple[int, str, list[str]]]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):  # some versions store the list as a JSON string
        try:
            value = json.loads(value)
        except ValueError:
            raise LogtailImportError("streamlog_formats: a string that is not JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise LogtailImportError("streamlog_formats: expected a list of {version, fields}")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise LogtailImportError(f"streamlog_formats[{i}]: expected an object")
        version, fields = entry.get("version"), entry.get("fields")
        if not isinstance(version, str) or not version:
            raise LogtailImportError(f"streamlog_formats[{i}].version: missing")
        if is_builtin_version(version):  # Logtail ignored the entry, fields and all
            out.append((i, version, []))
            continue
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise LogtailImportError(f"streamlog_formats[{i}].fields: expected a list of names")
        out.append((i, version, fields))
    return out


def _endpoint(doc: dict) -> str:
    servers = doc.get("data_server_list")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        endpoint = servers[0].get("endpoint")
        if isinstance(endpoint, str) and endpoint:
            return endpoint
    return DEFAULT_ENDPOINT


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string
