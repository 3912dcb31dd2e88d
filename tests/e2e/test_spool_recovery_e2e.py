"""The real `slsfwd run` on damaged spools, and on a spool written by slsfwd 0.1.0 built from git.

What a user sees: the agent starts, the stand-in receives every line whose record checks out,
/metrics counts what was lost, `slsfwd spool verify` says the same; a spool of a newer format
is refused with the message slsfwd always gave.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from agent.spool import DiskSpool
from agent.spool import format as fmt
from tests.e2e.test_metrics import scrape
from tests.support import REPO
from tests.support.agent_proc import AgentProcess, sls_section, slsfwd_command
from tests.support.standin import Fault, PutLogsStandin
from tests.unit.spool.test_spool import newer_header

pytestmark = pytest.mark.e2e

RELEASE_0_1_0 = "dc8a71d"  # slsfwd 0.1.0, the last release with version 1 segment headers
V1_HEADER = b"SLSFWDSG" + (1).to_bytes(2, "little") + bytes(6)


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    environ.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *slsfwd_command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def line(msg: str) -> bytes:
    return f"0.1 sys_tag {int(time.time())} 127.0.0.1 web-1 user.notice 0 app 1 -  {msg}\n".encode()


def messages(standin: PutLogsStandin) -> list[str]:
    return [log.contents["msg"] for log in standin.logs]


def segments(spool_dir: Path) -> list[Path]:
    return sorted((spool_dir / "queue").glob("*.seg"))


def overwrite(path: Path, at: int, data: bytes) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[:at] + data + whole[at + len(data):])


async def write_spool(spool_dir: Path, chunks: int, lines_per_chunk: int) -> list[list[str]]:
    """A spool as a stopped agent leaves it: one record per chunk of lines; the messages per record."""
    spool = DiskSpool(spool_dir, max_bytes=1 << 40, fsync_ms=5, segment_bytes=2048)
    spool.open()
    records = []
    for i in range(chunks):
        msgs = [f"rec {i} line {j}" for j in range(lines_per_chunk)]
        spool.append(int(time.time()), "127.0.0.1:40000", b"".join(line(m) for m in msgs))
        records.append(msgs)
    await spool.close()
    return records


async def wait_for_messages(standin: PutLogsStandin, wanted: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= set(messages(standin)):
        missing = len(wanted - set(messages(standin)))
        assert time.monotonic() < deadline, f"{missing} lines not delivered within {timeout}s"
        await asyncio.sleep(0.2)


def metric_value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[name].get(tuple(sorted(labels.items())), 0.0)


async def test_the_agent_starts_on_a_damaged_spool_and_delivers_every_intact_line(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    records = await write_spool(spool_dir, chunks=40, lines_per_chunk=5)
    files = segments(spool_dir)
    assert len(files) >= 6
    by_seq = {seq: msgs for seq, msgs in enumerate(records, start=1)}
    on_disk = {path: [r.seq for r in fmt.scan(path.read_bytes()).records] for path in files}

    overwrite(files[0], 0, b"\x00")  # the two cases: byte 0 ...
    overwrite(files[1], 0, V1_HEADER)  # ... and byte 9 of a header as slsfwd 0.1.0 wrote it
    overwrite(files[1], 9, b"\x5a")
    victim = fmt.scan(files[2].read_bytes()).records[1]  # a flipped byte in one record
    overwrite(files[2], victim.offset + 40, bytes([files[2].read_bytes()[victim.offset + 40] ^ 0x20]))
    data = files[3].read_bytes()  # header and every record garbled: nothing to read
    files[3].write_bytes(bytes(b ^ 0x5A for b in data))
    with open(files[-1], "ab") as f:  # random bytes appended
        f.write(os.urandom(333).replace(fmt.RECORD_MAGIC_BYTES, b"xxxx"))
    ledger = spool_dir / "queue" / "ledger"
    overwrite(ledger, 14, bytes([ledger.read_bytes()[14] ^ 0x01]))  # one ledger slot
    lost_seqs = {victim.seq} | set(on_disk[files[3]])
    expected = {m for seq, msgs in by_seq.items() if seq not in lost_seqs for m in msgs}

    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin))
        agent.config_path.write_text(agent.config_text)
        code, out, err = await run_cli("spool", "verify", "--config", str(agent.config_path))
        assert code == 1, out + err
        for part in ("2 damaged segment headers", "1 unusable segments", "corrupt 1 records", "torn 333 bytes",
                     "1 damaged ledger slot", f"backlog {len(expected)} lines"):
            assert part in out, (part, out)

        async with agent:
            await standin.wait_for_logs(len(expected), timeout=60)
            await asyncio.sleep(0.5)  # a line made up from damage would arrive by now
            metrics = await asyncio.to_thread(scrape, agent.metrics_port)
            health = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/healthz", timeout=5)
            assert health.status == 200
    assert set(messages(standin)) == expected
    assert metric_value(metrics, "slsfwd_spool_damaged_segment_headers_total", reason="corrupt") == 2
    assert metric_value(metrics, "slsfwd_spool_quarantined_segments_total", reason="no_records") == 1
    assert metric_value(metrics, "slsfwd_spool_corrupt_records_total") == 1
    assert metric_value(metrics, "slsfwd_spool_corrupt_bytes_total", reason="torn") == 333
    assert metric_value(metrics, "slsfwd_spool_damaged_ledger_slots_total") == 1
    stderr = agent.stderr()
    assert stderr.count("segment header damaged") == 2 and "moved to" in stderr

    assert (tmp_path / "spool" / "quarantine" / files[3].name).read_bytes() == bytes(b ^ 0x5A for b in data)
    code, out, _ = await run_cli("spool", "verify", "--config", str(agent.config_path))
    assert code == 1 and "backlog 0 lines" in out and "quarantine/ holds 1 files" in out


async def test_a_spool_of_a_newer_format_is_refused_with_the_message_it_always_had(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    await write_spool(spool_dir, chunks=10, lines_per_chunk=2)
    newest = segments(spool_dir)[-1]
    overwrite(newest, 0, newer_header(3))
    message = f"{newest}: spool format version 3, but this slsfwd reads version 2; ship it with a matching slsfwd"
    agent = AgentProcess(tmp_path)
    with pytest.raises(AssertionError, match="exited 1 at start"):
        await agent.start()
    assert message in agent.stderr()
    code, _, err = await run_cli("spool", "verify", "--config", str(agent.config_path))
    assert code == 2 and message in err
    assert newest.read_bytes()[:16] == newer_header(3)


# -- upgrading from slsfwd 0.1.0 ---------------------------------------------------------------

@pytest.fixture(scope="session")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent package of slsfwd 0.1.0, from git (once per session)."""
    root = tmp_path_factory.mktemp("slsfwd-0.1.0")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", RELEASE_0_1_0, "agent"], capture_output=True)
    if archive.returncode != 0:
        pytest.fail(f"cannot extract slsfwd 0.1.0 ({RELEASE_0_1_0}) from git: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


async def wait_for_input(agent: AgentProcess, lines: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metrics = await asyncio.to_thread(scrape, agent.metrics_port)
        if metric_value(metrics, "slsfwd_input_lines_total") >= lines:
            return
        assert time.monotonic() < deadline, f"the agent read fewer than {lines} lines"
        await asyncio.sleep(0.1)


async def test_a_spool_written_by_slsfwd_0_1_0_is_delivered_without_loss(tmp_path: Path, release_0_1_0: Path) -> None:
    old_env = {"PYTHONPATH": str(release_0_1_0)}
    assert (await run_cli("version", env=old_env))[1] == "slsfwd 0.1.0\n"
    shipped_by_old = [f"old shipped {i}" for i in range(300)]
    # Enough for two segments of 0.1.0's 8 MiB: lines of about 1 KiB.
    left_by_old = [f"old spooled {i} ".ljust(1000, ".") for i in range(9000)]
    async with PutLogsStandin() as standin:
        old = AgentProcess(tmp_path, sls=sls_section(standin), env=old_env)
        old.config_text = "shutdown_timeout_s = 1.0\n" + old.config_text
        await old.start()
        await old.send(b"".join(line(m) for m in shipped_by_old))
        await wait_for_messages(standin, set(shipped_by_old), timeout=30)
        await asyncio.sleep(0.5)  # their acknowledgements reach the ledger
        standin.faults.when(lambda _i: True, Fault.error(503, "ServerBusy"))  # then the service goes away
        await old.send(b"".join(line(m) for m in left_by_old))
        await wait_for_input(old, len(shipped_by_old) + len(left_by_old))
        assert await old.stop() == 0, old.stderr()

        files = segments(old.spool_dir)
        assert len(files) >= 2
        assert all(path.read_bytes()[:16] == V1_HEADER for path in files), "written by 0.1.0: version 1 headers"
        delivered_by_old = set(messages(standin))
        code, out, err = await run_cli("spool", "verify", "--config", str(old.config_path))
        assert code == 0 and "healthy" in out, out + err

        standin.faults.clear()
        already = len(standin.logs)
        async with AgentProcess(tmp_path, sls=sls_section(standin)) as new:
            await wait_for_messages(standin, set(left_by_old), timeout=90)
            await asyncio.sleep(0.5)
            metrics = await asyncio.to_thread(scrape, new.metrics_port)
    delivered_by_new = {log.contents["msg"] for log in standin.logs[already:]}
    assert set(left_by_old) - delivered_by_old <= delivered_by_new, "every line 0.1.0 left in its spool"
    assert delivered_by_old | delivered_by_new == set(shipped_by_old) | set(left_by_old), "none lost, none invented"
    assert metric_value(metrics, "slsfwd_spool_damaged_segment_headers_total", reason="corrupt") == 0
    assert metric_value(metrics, "slsfwd_spool_corrupt_records_total") == 0
    remaining = segments(old.spool_dir)
    assert all(path.read_bytes()[:16] == fmt.segment_header() for path in remaining), "0.1.0's segments are gone"
