"""``slsfwd check --live``: one real PutLogs request, and one line saying what works.

It sends a single test log (``app-name: slsfwd``, ``msg: slsfwd check --live from <host>``)
to the configured project and logstore with the configured credentials, so
credentials, project, logstore and network are all proven at once; otherwise it
names what failed (``SignatureNotMatch``, ``LogStoreNotExist``, unreachable, ...).
"""

from __future__ import annotations

import time

from agent.config import Config
from agent.ops import hostinfo
from agent.output.credentials import CredentialsUnavailable
from agent.output.errors import NETWORK_ERROR, ShipError
from agent.output.putlogs import client_for
from agent.output.ship import PutLogsSink
from agent.pipeline.batch import Destination
from agent.pipeline.encode import encode_log

_MEANING = {
    "SignatureNotMatch": "the AccessKey secret is wrong",
    "Unauthorized": "the credentials are not allowed to write to this logstore",
    "InvalidAccessKeyId": "the AccessKey id is unknown",
    "ProjectNotExist": "the project does not exist in this region",
    "LogStoreNotExist": "the logstore does not exist in this project",
    "RequestTimeExpired": "this machine's clock is off by more than 15 minutes",
}


async def live_check(config: Config) -> tuple[bool, str]:
    sls = config.sls
    if sls is None:
        return False, "no [sls] section: nothing to check (the console sink needs no credentials)"
    client, ram_role = client_for(sls)
    if ram_role is not None:
        try:
            await ram_role.refresh()
        except CredentialsUnavailable as exc:
            await client.close()
            await ram_role.close()
            return False, f"failed: RAM role {sls.ecs_ram_role}: {exc}"
    dest = Destination(sls.project, sls.logstore, sls.topic)
    host = hostinfo.hostname()
    log = encode_log(int(time.time()), [("app-name", b"slsfwd"), ("msg", f"slsfwd check --live from {host}".encode())])
    source, tags = sls.source_ip or hostinfo.primary_ipv4(), [("__hostname__", host)]
    started = time.monotonic()
    try:
        await PutLogsSink(client).put(dest, source, tags, [log])
    except ShipError as error:
        return False, _describe(error, sls.endpoint, dest)
    finally:
        await client.close()
        if ram_role is not None:
            await ram_role.close()
    elapsed_ms = (time.monotonic() - started) * 1000
    return True, (
        f"ok: credentials, project {dest.project}, logstore {dest.logstore} and the network to {sls.endpoint} work "
        f"(PutLogs answered 200 in {elapsed_ms:.0f} ms; one test log was written)"
    )


def _describe(error: ShipError, endpoint: str, dest: Destination) -> str:
    if error.code == NETWORK_ERROR:
        return f"failed: {endpoint} is unreachable ({error.message})"
    meaning = _MEANING.get(error.code)
    where = f"{dest.project}/{dest.logstore}"
    status = f"HTTP {error.status}" if error.status else "no answer"
    text = f"failed: {error.code} ({status}) writing to {where}"
    return f"{text}: {meaning}" if meaning else f"{text}: {error.message}"
