"""ECS RAM role credentials: the role document, the provider against a metadata stand-in, the real agent.

Nothing here talks to the real metadata address: every provider and every
agent is pointed at :class:`tests.support.metadata_standin.MetadataStandin` on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import agent.output.credentials as credentials
from agent.output.credentials import (
    CredentialsUnavailable,
    EcsRamRoleProvider,
    RamRoleSettings,
    parse_role_document,
)
from tests.support.agent_proc import AgentProcess, slsfwd_command, wait_until
from tests.support.metadata_standin import (
    GARBAGE,
    ROLE_PATH,
    TOKEN_HEADER,
    TOKEN_PATH,
    TOKEN_TTL_HEADER,
    MetadataStandin,
    iso,
)
from tests.support.standin import PutLogsStandin

REAL_METADATA_HOST = "100.100.100.200"
ROLE = "slsfwd-role"
SECRET = "doc-secret-Zq8vK1xPp0"
TOKEN = "doc-token-CAIS9wF1q6Ft5B2yfSrr"


# ---------------------------------------------------------------- helpers


def failures() -> float:
    return REGISTRY.get_sample_value("slsfwd_credential_refresh_failures_total") or 0.0


def settings(standin: MetadataStandin, *, role: str = ROLE, **kw) -> RamRoleSettings:
    assert standin.url.startswith("http://127.0.0.1:"), standin.url
    result = RamRoleSettings(role, metadata_url=standin.url, timeout_s=kw.pop("timeout_s", 2.0), **kw)
    assert REAL_METADATA_HOST not in result.metadata_url
    return result


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def providers():
    """Makes providers and closes them (and their refresh tasks) at the end."""
    made: list[EcsRamRoleProvider] = []

    def make(s: RamRoleSettings, **kw) -> EcsRamRoleProvider:
        p = EcsRamRoleProvider(s, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()


def keys(provider: EcsRamRoleProvider) -> tuple[str, str, str]:
    c = provider.get_credentials()
    return c.get_access_key_id(), c.get_access_key_secret(), c.get_security_token()


def assert_no_secrets(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text, "a secret leaked into the text"


# ---------------------------------------------------------------- parse_role_document


def good_doc(**changes) -> dict:
    doc = {
        "Code": "Success",
        "AccessKeyId": "STS.NUgYrLnoC37mZZCNnAbez2Mo2",
        "AccessKeySecret": SECRET,
        "SecurityToken": TOKEN,
        "Expiration": "2030-01-02T03:04:05Z",
        "LastUpdated": "2030-01-01T21:04:05Z",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def test_parse_success() -> None:
    creds, expiration = parse_role_document(good_doc())
    assert creds.get_access_key_id() == "STS.NUgYrLnoC37mZZCNnAbez2Mo2"
    assert creds.get_access_key_secret() == SECRET
    assert creds.get_security_token() == TOKEN
    assert expiration == 1893553445.0  # 2030-01-02T03:04:05Z, UTC
    assert iso(expiration) == "2030-01-02T03:04:05Z"


BAD_DOCUMENTS = {
    "code-failed": good_doc(Code="Failed"),
    "code-missing": good_doc(Code=None),
    "code-lowercase": good_doc(Code="success"),
    "no-key-id": good_doc(AccessKeyId=None),
    "no-secret": good_doc(AccessKeySecret=None),
    "no-token": good_doc(SecurityToken=None),
    "no-expiration": good_doc(Expiration=None),
    "expiration-with-offset": good_doc(Expiration="2030-01-02T03:04:05+08:00"),
    "expiration-no-z": good_doc(Expiration="2030-01-02T03:04:05"),
    "expiration-date-only": good_doc(Expiration="2030-01-02"),
    "expiration-space": good_doc(Expiration="2030-01-02 03:04:05Z"),
    "expiration-bad-month": good_doc(Expiration="2030-13-02T03:04:05Z"),
    "expiration-number": good_doc(Expiration=1893553445),
    "expiration-empty": good_doc(Expiration=""),
    "secret-not-string": good_doc(AccessKeySecret=12345),
    "token-null-json": {**good_doc(), "SecurityToken": None},
    "not-an-object": [SECRET, TOKEN],
    "string": f"{SECRET} {TOKEN}",
    "none": None,
}


@pytest.mark.parametrize("doc", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_parse_refuses_bad_documents_without_leaking(doc) -> None:
    with pytest.raises(CredentialsUnavailable) as info:
        parse_role_document(doc)
    text = str(info.value) + repr(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert_no_secrets(text, SECRET, TOKEN)
    assert info.value.__cause__ is None


def test_parse_refusal_of_a_failed_code_says_which_code() -> None:
    with pytest.raises(CredentialsUnavailable, match="Failed"):
        parse_role_document(good_doc(Code="Failed"))


# ---------------------------------------------------------------- provider: fetching


async def test_first_fetch_uses_the_metadata_token(providers) -> None:
    async with MetadataStandin(role=ROLE) as md:
        p = providers(settings(md))
        assert keys(p) == ("", "", "")  # nothing yet: signs with empty keys, never raises
        await p.start()
        assert keys(p) == md.credentials
        assert abs(p.expiration - int(md.expiration)) <= 1
        assert md.token_puts == 1 and md.credential_gets == 1
        (put,) = [r for r in md.requests if r[0] == "PUT"]
        assert put[1] == TOKEN_PATH and put[2][TOKEN_TTL_HEADER] == "21600"
        (get,) = [r for r in md.requests if r[0] == "GET"]
        assert get[1] == ROLE_PATH + ROLE
        assert get[2][TOKEN_HEADER] in md.tokens_issued


async def test_hardened_stand_in_is_satisfied_by_the_token(providers) -> None:
    async with MetadataStandin(require_token=True) as md:
        for imdsv1_disabled in (False, True):
            p = providers(settings(md, imdsv1_disabled=imdsv1_disabled))
            await p.refresh()
            assert keys(p) == md.credentials


async def test_without_token_endpoint_falls_back_to_imdsv1(providers) -> None:
    async with MetadataStandin(token_endpoint=False) as md:
        p = providers(settings(md))
        await p.refresh()
        assert keys(p) == md.credentials
        assert md.token_puts == 1  # tried
        (get,) = [r for r in md.requests if r[0] == "GET"]
        assert TOKEN_HEADER not in get[2]


async def test_hardened_mode_refuses_to_go_without_a_token(providers, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with MetadataStandin(token_endpoint=False) as md:
        before = failures()
        p = providers(settings(md, imdsv1_disabled=True))
        with pytest.raises(CredentialsUnavailable, match="token"):
            await p.refresh()
        assert md.credential_gets == 0  # never asked without a token
        assert failures() == before + 1
        # start() does not fail the agent; it just has no credentials yet.
        await p.start()
        assert keys(p) == ("", "", "")
        assert md.credential_gets == 0
        assert p.next_refresh_in() == credentials.RETRY_AFTER_FAILURE_S
    assert "cannot get RAM role credentials yet" in caplog.text
    assert_no_secrets(caplog.text, *md.credentials)


async def test_hardened_mode_with_token_endpoint_down(providers) -> None:
    async with MetadataStandin() as md:
        md.outage = "reset"
        p = providers(settings(md, imdsv1_disabled=True))
        with pytest.raises(CredentialsUnavailable, match="hardened"):
            await p.refresh()


async def test_unknown_role_is_unavailable(providers) -> None:
    async with MetadataStandin(role=ROLE) as md:
        p = providers(settings(md, role="another-role"))
        with pytest.raises(CredentialsUnavailable, match="404"):
            await p.refresh()
        assert keys(p) == ("", "", "")


@pytest.mark.parametrize(
    "patch",
    [{"Code": "Failed"}, {"AccessKeySecret": None}, {"Expiration": "tomorrow"}],
    ids=["code-failed", "no-secret", "bad-expiration"],
)
async def test_bad_documents_from_the_service_are_unavailable(providers, caplog, patch) -> None:
    caplog.set_level(logging.DEBUG)
    async with MetadataStandin() as md:
        md.document_patch = patch
        before = failures()
        p = providers(settings(md))
        with pytest.raises(CredentialsUnavailable) as info:
            await p.refresh()
        assert failures() == before + 1
        assert_no_secrets(str(info.value), *md.credentials)
    assert_no_secrets(caplog.text, *md.credentials)


async def test_not_json_is_unavailable(providers) -> None:
    async with MetadataStandin() as md:
        md.raw_document = b"<html>metadata proxy says hi</html>"
        p = providers(settings(md))
        with pytest.raises(CredentialsUnavailable, match="not JSON"):
            await p.refresh()


# ---------------------------------------------------------------- provider: refreshing


@pytest.mark.slow  # waits for the refresh timer
async def test_refreshes_before_expiration_and_picks_up_rotated_keys(providers) -> None:
    # 302 s ahead: inside the refresh window in about 2 s.
    async with MetadataStandin(expires_in=302) as md:
        first = md.credentials
        p = providers(settings(md))
        await p.start()
        assert keys(p) == first
        assert 0.5 <= p.next_refresh_in() <= 3.0
        second = md.set_credentials(expires_in=3600)
        await wait_until(lambda: keys(p) == second, 6.0, "the rotated keys")
        assert md.credential_gets == 2
        assert p.next_refresh_in() > 3000  # well ahead now: no tight loop
        await asyncio.sleep(0.3)
        assert md.credential_gets == 2


async def test_refresh_window_is_the_module_setting(providers, monkeypatch) -> None:
    monkeypatch.setattr(credentials, "REFRESH_BEFORE_EXPIRY_S", 3600 - 1)
    async with MetadataStandin(expires_in=3600) as md:
        p = providers(settings(md))
        await p.start()
        second = md.set_credentials()
        await wait_until(lambda: keys(p) == second, 4.0, "the rotated keys")


@pytest.mark.slow  # waits for the refresh timer
@pytest.mark.parametrize("kind", ["503", "reset"])
async def test_outage_keeps_the_last_good_credentials(providers, caplog, monkeypatch, kind) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(credentials, "RETRY_AFTER_FAILURE_S", 0.2)
    async with MetadataStandin(expires_in=301) as md:
        good = md.credentials
        p = providers(settings(md))
        await p.start()
        assert keys(p) == good
        before = failures()
        md.outage = kind
        with pytest.raises(CredentialsUnavailable):
            await p.refresh()
        assert keys(p) == good
        assert failures() == before + 1
        await p.force_refresh()  # swallows the failure
        assert keys(p) == good
        # The background loop hits the outage too, and keeps the keys.
        await wait_until(lambda: failures() >= before + 3, 5.0, "a failed background refresh")
        assert keys(p) == good
        # The service is back with new keys: the loop picks them up.
        md.outage = None
        rotated = md.set_credentials(expires_in=3600)
        await wait_until(lambda: keys(p) == rotated, 5.0, "the keys after the outage")
    assert "keeping the last good ones" in caplog.text
    assert_no_secrets(caplog.text, *good, *rotated)


# A metadata answer that is not UTF-8 once broke the provider (response.text() raised UnicodeDecodeError).


def serve_garbage(md: MetadataStandin, where: str) -> None:
    if where == "everywhere":
        md.outage = "garbage"  # the token PUT answers garbage first
    else:
        md.token_endpoint = False
        md.raw_document = GARBAGE  # only the role document is garbage


@pytest.mark.parametrize("where", ["everywhere", "document"])
async def test_garbage_answer_is_a_counted_failure_and_keeps_the_keys(providers, where) -> None:
    async with MetadataStandin() as md:
        p = providers(settings(md))
        await p.refresh()
        good = md.credentials
        serve_garbage(md, where)
        before = failures()
        with pytest.raises(CredentialsUnavailable):
            await p.refresh()
        assert failures() == before + 1
        assert keys(p) == good


async def test_start_and_force_refresh_survive_a_garbage_answer(providers) -> None:
    async with MetadataStandin() as md:
        serve_garbage(md, "everywhere")
        p = providers(settings(md))
        await p.start()  # "failures are logged, not fatal": the agent must still start
        await p.force_refresh()  # called by the shipper after an auth error
        assert keys(p) == ("", "", "")


@pytest.mark.slow  # waits for the refresh timer
async def test_refresh_loop_survives_a_garbage_answer(providers, monkeypatch) -> None:
    monkeypatch.setattr(credentials, "RETRY_AFTER_FAILURE_S", 0.2)
    async with MetadataStandin(expires_in=301) as md:
        p = providers(settings(md))
        await p.start()
        puts = md.token_puts
        md.outage = "garbage"
        await wait_until(lambda: md.token_puts > puts, 4.0, "a background refresh")
        await asyncio.sleep(0.1)
        md.outage = None
        rotated = md.set_credentials(expires_in=3600)
        await wait_until(lambda: keys(p) == rotated, 2.5, "the keys after the garbage answer")


async def test_force_refresh_is_immediate_but_rate_limited(providers) -> None:
    clock = FakeClock()
    async with MetadataStandin() as md:
        p = providers(settings(md), clock=clock)
        await p.start()
        assert md.credential_gets == 1
        rotated = md.set_credentials()
        await p.force_refresh()
        assert md.credential_gets == 2 and keys(p) == rotated
        again = md.set_credentials()
        await p.force_refresh()  # right after: ignored
        clock.now += credentials.MIN_FORCED_REFRESH_INTERVAL_S - 0.5
        await p.force_refresh()  # still too soon
        assert md.credential_gets == 2 and keys(p) == rotated
        clock.now += 1.0
        await p.force_refresh()
        assert md.credential_gets == 3 and keys(p) == again


async def test_concurrent_forced_refreshes_fetch_once(providers) -> None:
    async with MetadataStandin() as md:
        p = providers(settings(md))
        await asyncio.gather(*(p.force_refresh() for _ in range(8)))
        assert md.credential_gets == 1
        assert keys(p) == md.credentials


async def test_close_stops_the_refresh_loop(providers) -> None:
    async with MetadataStandin(expires_in=301) as md:
        p = providers(settings(md))
        await p.start()
        await p.close()
        gets = md.credential_gets
        await asyncio.sleep(1.2)  # the loop would have fetched after 1 s
        assert md.credential_gets == gets


async def test_secrets_never_reach_the_log(providers, caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(credentials, "RETRY_AFTER_FAILURE_S", 0.1)
    seen: list[str] = []
    clock = FakeClock()
    async with MetadataStandin(expires_in=301) as md:
        seen += md.credentials
        p = providers(settings(md), clock=clock)
        await p.start()
        for outage in ("503", "reset", None):
            md.outage = outage
            seen += md.set_credentials(expires_in=301)
            await p.force_refresh()
            clock.now += credentials.MIN_FORCED_REFRESH_INTERVAL_S + 1  # let the next one through
        md.document_patch = {"Code": "Failed"}
        await p.force_refresh()
        md.document_patch = {}
        await asyncio.sleep(1.2)  # a background refresh too
        seen += list(md.tokens_issued)
    assert "credentials valid until" in caplog.text
    assert_no_secrets(caplog.text, *seen)


# ---------------------------------------------------------------- the real agent


def now_lines(prefix: str, n: int) -> bytes:
    now = int(time.time())
    return b"".join(
        f"0.1 sys_tag {now} 127.0.0.1 web-1 user.notice 0 app 1 -  {prefix} {i}\n".encode() for i in range(n)
    )


def role_sls(putlogs: PutLogsStandin, md: MetadataStandin, *, role: str | None = ROLE, extra: str = "") -> str:
    assert md.url.startswith("http://127.0.0.1:")
    return (
        "[sls]\n"
        f'endpoint = "{putlogs.url}"\n'
        'project = "test-project"\n'
        'logstore = "test-logstore"\n'
        + (f'ecs_ram_role = "{role}"\n' if role else "")
        + f'ecs_metadata_url = "{md.url}"\n'
        + extra
        + "\n"
    )


def sts_putlogs(md: MetadataStandin) -> PutLogsStandin:
    akid, secret, token = md.credentials
    return PutLogsStandin(access_key_id=akid, access_key_secret=secret, security_token=token)


def assert_agent_output_clean(agent: AgentProcess, md: MetadataStandin) -> None:
    text = agent.stderr_path.read_text(errors="replace") + agent.stdout()
    assert_no_secrets(text, md.access_key_secret, md.security_token, *md.tokens_issued)


@pytest.mark.e2e
async def test_agent_ships_with_ram_role_credentials(tmp_path: Path) -> None:
    async with MetadataStandin(role=ROLE) as md, sts_putlogs(md) as putlogs:
        async with AgentProcess(tmp_path, sls=role_sls(putlogs, md)) as agent:
            await agent.send(now_lines("role", 5))
            await putlogs.wait_for_logs(5, timeout=10)
    assert not putlogs.rejections
    assert sorted(log.contents["msg"] for log in putlogs.logs) == [f"role {i}" for i in range(5)]
    assert md.credential_gets >= 1 and md.token_puts >= 1
    assert agent.returncode == 0
    assert "credentials valid until" in agent.stderr()
    assert_agent_output_clean(agent, md)


def credentials_logged(agent: AgentProcess) -> int:
    """How often the agent said it took new credentials (it says so once it holds them)."""
    return agent.stderr_path.read_text(errors="replace").count("credentials valid until")


@pytest.mark.e2e
async def test_agent_signs_with_keys_rotated_before_expiration(tmp_path: Path) -> None:
    async with MetadataStandin(role=ROLE, expires_in=302) as md, sts_putlogs(md) as putlogs:
        async with AgentProcess(tmp_path, sls=role_sls(putlogs, md)) as agent:
            await agent.send(now_lines("old", 2))
            await putlogs.wait_for_logs(2, timeout=10)
            old = md.credentials
            # Rotate on both sides; the agent must fetch the new keys on its own, before Expiration.
            gets = md.credential_gets
            applied = credentials_logged(agent)
            new = md.set_credentials(expires_in=3600)
            v = putlogs.verifier
            v.access_key_id, v.access_key_secret, v.security_token = new
            await wait_until(lambda: md.credential_gets > gets, 6.0, "the agent's refresh before expiration")
            # Sent before the agent has taken the new keys, a line would meet a refusal.
            await wait_until(lambda: credentials_logged(agent) > applied, 6.0, "the agent taking the new keys")
            await agent.send(now_lines("new", 2))
            await putlogs.wait_for_logs(4, timeout=10)
    assert not putlogs.rejections
    assert {log.contents["msg"] for log in putlogs.logs} == {"old 0", "old 1", "new 0", "new 1"}
    text = agent.stderr_path.read_text(errors="replace") + agent.stdout()
    assert_no_secrets(text, old[1], old[2], new[1], new[2], *md.tokens_issued)


@pytest.mark.e2e
async def test_agent_takes_the_role_from_the_environment(tmp_path: Path) -> None:
    async with MetadataStandin(role=ROLE, require_token=True) as md, sts_putlogs(md) as putlogs:
        sls = role_sls(putlogs, md, role=None, extra="ecs_imdsv1_disabled = true")
        async with AgentProcess(tmp_path, sls=sls, env={"ALIBABA_CLOUD_ECS_METADATA": ROLE}) as agent:
            await agent.send(now_lines("env", 3))
            await putlogs.wait_for_logs(3, timeout=10)
    assert not putlogs.rejections
    assert md.credential_gets >= 1
    assert_agent_output_clean(agent, md)


@pytest.mark.e2e
async def test_agent_starts_while_the_metadata_service_is_down(tmp_path: Path) -> None:
    async with MetadataStandin(role=ROLE) as md, sts_putlogs(md) as putlogs:
        md.outage = "503"
        agent = AgentProcess(tmp_path, sls=role_sls(putlogs, md))
        agent.config_text = "shutdown_timeout_s = 1.0\n" + agent.config_text  # the held line need not wait 10 s
        async with agent:
            await agent.send(now_lines("early", 1))
            await wait_until(lambda: putlogs.requests >= 1, 10.0, "a PutLogs attempt")
            await asyncio.sleep(0.3)
    assert agent.returncode == 0
    assert "cannot get RAM role credentials yet" in agent.stderr()
    assert putlogs.log_count == 0 and {r.error_code for r in putlogs.rejections} == {"Unauthorized"}
    assert_agent_output_clean(agent, md)


@pytest.mark.e2e
async def test_agent_starts_while_the_metadata_service_answers_garbage(tmp_path: Path) -> None:
    async with MetadataStandin(role=ROLE) as md, sts_putlogs(md) as putlogs:
        md.outage = "garbage"
        async with AgentProcess(tmp_path, sls=role_sls(putlogs, md)) as agent:
            pass
    assert agent.returncode == 0
    assert "Traceback" not in agent.stderr()


def run_check(tmp_path: Path, sls: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "check.toml"
    path.write_text(f'[spool]\ndir = "{tmp_path / "spool"}"\n{sls}')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    clean.update(env or {})
    return subprocess.run(
        [*slsfwd_command(), "check", "--config", str(path)], capture_output=True, text=True, env=clean, timeout=20
    )


def check_sls(role_line: str) -> str:
    return (
        '[sls]\nendpoint = "127.0.0.1:9"\nproject = "test-project"\nlogstore = "test-logstore"\n'
        f'ecs_metadata_url = "http://127.0.0.1:9"\n{role_line}\n'
    )


def test_check_accepts_a_ram_role_without_keys(tmp_path: Path) -> None:
    result = run_check(tmp_path, check_sls(f'ecs_ram_role = "{ROLE}"'))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_check_accepts_the_role_from_the_environment(tmp_path: Path) -> None:
    result = run_check(tmp_path, check_sls(""), env={"ALIBABA_CLOUD_ECS_METADATA": ROLE})
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_refuses_neither_keys_nor_role(tmp_path: Path) -> None:
    result = run_check(tmp_path, check_sls(""))
    assert result.returncode == 2
    assert "ecs_ram_role" in result.stdout + result.stderr
