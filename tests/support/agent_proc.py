"""Run the real ``slsfwd run`` process in tests.

:class:`AgentProcess` writes a TOML config into a temporary directory,
starts the installed ``slsfwd`` console script (the same entry point a user
runs), waits until it accepts connections, and stops it with SIGTERM,
checking the exit code. Its stderr is kept for failure messages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slsfwd_command() -> list[str]:
    script = Path(sys.executable).parent / "slsfwd"
    if script.exists():
        return [str(script)]
    found = shutil.which("slsfwd")
    return [found] if found else [sys.executable, "-m", "agent"]


def sls_section(standin, *, project: str = "test-project", logstore: str = "test-logstore", extra: str = "") -> str:
    return (
        "[sls]\n"
        f'endpoint = "{standin.url}"\n'
        f'project = "{project}"\n'
        f'logstore = "{logstore}"\n'
        f'access_key_id = "{standin.verifier.access_key_id}"\n'
        f'access_key_secret = "{standin.verifier.access_key_secret}"\n'
        f"{extra}\n"
    )


class AgentProcess:
    # Every process started, so that a failing test cannot leave an agent running (tests/conftest.py).
    started: list[asyncio.subprocess.Process] = []

    def __init__(
        self,
        workdir: Path,
        *,
        sls: str = "",
        extra: str = "",
        linger_ms: int = 100,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.config_path = workdir / "slsfwd.toml"
        self.stdout_path = workdir / "agent.stdout"
        self.stderr_path = workdir / "agent.stderr"
        self.spool_dir = workdir / "spool"
        self.config_text = (
            f'[input]\nlisten = "127.0.0.1:{self.port}"\n'
            f"[batch]\nlinger_ms = {linger_ms}\n"
            f'[spool]\ndir = "{self.spool_dir}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
            f"{sls}\n{extra}\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
        self.env.update(env or {})
        self.process: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None

    async def __aenter__(self) -> "AgentProcess":
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self.process is not None and self.process.returncode is None:
            code = await self.stop()
            if exc_type is None:
                assert code == 0, f"agent exited {code} on SIGTERM\n{self.stderr()}"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        self.process = await asyncio.create_subprocess_exec(
            *slsfwd_command(), "run", "--config", str(self.config_path),
            stdout=open(self.stdout_path, "ab"), stderr=open(self.stderr_path, "ab"),
            env=self.env, cwd=self.workdir,
        )
        AgentProcess.started.append(self.process)
        await self.wait_listening()

    async def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"agent exited {self.process.returncode} at start\n{self.stderr()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"agent did not listen on {self.port} within {timeout}s\n{self.stderr()}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError(f"agent did not stop within {timeout}s\n{self.stderr()}")
        self.returncode = self.process.returncode
        return self.returncode

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the agent's /metrics (0 if the series does not exist yet)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    async def wait_for_metric(self, name: str, at_least: float, timeout: float = 15.0, **labels: str) -> None:
        deadline = time.monotonic() + timeout
        while (value := await asyncio.to_thread(self.metric, name, **labels)) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} is {value}, not {at_least} within {timeout}s\n{self.stderr()}")
            await asyncio.sleep(0.05)

    def stderr(self) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-8000:]

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    async def send(self, data: bytes, *, source_ip: str | None = None) -> None:
        """One connection: send ``data``, then close."""
        local = (source_ip, 0) if source_ip else None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=local)
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``slsfwd ARGS`` as a user runs it (no ALIBABA_CLOUD_* from the test's environment): (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    proc = await asyncio.create_subprocess_exec(
        *slsfwd_command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def wait_until(predicate, timeout: float = 3.0, what: str = "the condition", every: float = 0.01) -> None:
    """Poll ``predicate`` on the running loop until it holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)
