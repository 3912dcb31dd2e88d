"""https endpoints: certificates are verified by default."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def line(msg: str) -> bytes:
    import time

    return f"0.1 sys_tag {int(time.time())} 127.0.0.1 web-1 user.notice 0 tls 1 -  {msg}\n".encode()


async def test_untrusted_certificate_is_refused_and_a_trusted_one_works(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with PutLogsStandin(ssl_context=context) as standin:
        assert standin.url.startswith("https://")
        untrusted = AgentProcess(tmp_path / "untrusted", sls=sls_section(standin))
        async with untrusted:
            await untrusted.send(line("must not be sent without a trusted certificate"))
            await asyncio.sleep(2)
            assert standin.requests == 0  # the TLS handshake failed: nothing reached the service
        assert "certificate" in untrusted.stderr().lower()

        trusted = AgentProcess(tmp_path / "untrusted", sls=sls_section(standin, extra=f'ca_file = "{cert}"'))
        async with trusted:  # same spool: the held line is delivered too
            await trusted.send(line("over verified TLS"))
            await standin.wait_for_logs(2, timeout=30)
    assert {log.contents["msg"] for log in standin.logs} == {
        "must not be sent without a trusted certificate", "over verified TLS"}
