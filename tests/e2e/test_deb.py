"""The Debian package: its build, its contents, then a real install on this machine, run and purge.

Root only: it installs the package on this machine (`dpkg -i`), runs the agent as the package's
user, and purges it again, also when an assertion fails. Building fetches the dependencies'
wheels from the Python package index, as CI can.
"""

from __future__ import annotations

import asyncio
import grp
import io
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.standin import PutLogsStandin
from tests.system.container import current_deb

ROOT = REPO
VERSION = re.search(r'^__version__ = "([^"]+)"$', (ROOT / "agent" / "__init__.py").read_text(), re.M).group(1)
CONF = "/etc/slsfwd/slsfwd.toml"
RSYSLOG_SNIPPET = "/etc/rsyslog.d/80-slsfwd.conf"
ENABLED_LINK = Path("/etc/systemd/system/multi-user.target.wants/slsfwd.service")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a .deb with dpkg: needs root"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is missing (not a Debian system)"),
]


def _run(*cmd: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env.setdefault("DEBIAN_FRONTEND", "noninteractive")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


def _installed() -> bool:
    out = _run("dpkg-query", "-W", "-f=${db:Status-Status}", "slsfwd", check=False).stdout
    return out not in ("", "not-installed")


def _user_exists(name: str) -> bool:
    return _run("getent", "passwd", name, check=False).returncode == 0


def _group_exists(name: str) -> bool:
    return _run("getent", "group", name, check=False).returncode == 0


@pytest.fixture(scope="module")
def deb() -> Path:
    """packaging/deb/build.sh's .deb of this checkout, shared with tests/system (built once per tree)."""
    path = current_deb()
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert path.name == f"slsfwd_{VERSION}_{arch}.deb"
    return path


@pytest.fixture(scope="module")
def members(deb: Path) -> dict[str, tarfile.TarInfo | bytes]:
    """The data archive: name -> TarInfo, and name + '#data' -> content for the small text files."""
    tar_bytes = _run_bytes("dpkg-deb", "--fsys-tarfile", str(deb))
    out: dict = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for info in tar:
            name = "/" + info.name.removeprefix("./")
            out[name] = info
            if info.isfile() and (name.startswith(("/etc/", "/lib/")) or name in ("/opt/slsfwd/bin/slsfwd", "/opt/slsfwd/pyvenv.cfg")):
                out[name + "#data"] = tar.extractfile(info).read()
    return out


def _run_bytes(*cmd: str) -> bytes:
    return subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout


def test_listing_has_unit_rsyslog_config_command_and_venv_python(deb: Path) -> None:
    listing = _run("dpkg-deb", "-c", str(deb)).stdout
    for path in (
        "./lib/systemd/system/slsfwd.service",
        "./etc/rsyslog.d/80-slsfwd.conf",
        "./etc/slsfwd/slsfwd.toml",
        "./usr/bin/slsfwd -> /opt/slsfwd/bin/slsfwd",
        "./opt/slsfwd/bin/python",
        "./opt/slsfwd/bin/slsfwd",
    ):
        assert re.search(rf"\s{re.escape(path)}(\s|$)", listing, re.M), f"{path} not in the package"
    assert re.search(r"^-rw-r----- root/root .* \./etc/slsfwd/slsfwd\.toml$", listing, re.M), "config is not 0640"
    if (ROOT / "systemd" / "slsfwd.socket").exists():
        assert "./lib/systemd/system/slsfwd.socket" in listing, "the socket unit is not in the package"


def test_control_and_conffiles(deb: Path) -> None:
    fields = _run("dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Depends", "Recommends").stdout
    assert "Package: slsfwd" in fields
    assert f"Version: {VERSION}" in fields
    assert f"Architecture: {_run('dpkg', '--print-architecture').stdout.strip()}" in fields
    assert re.search(r"^Depends: .*python3 \(>= 3\.11\).*adduser", fields, re.M), fields
    assert "Recommends: rsyslog" in fields
    info = _run("dpkg-deb", "-I", str(deb)).stdout
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(rf"\s{script}\s", info), f"no {script} in the control archive"
    conffiles = _run_bytes("dpkg-deb", "--info", str(deb), "conffiles").decode().split()
    assert CONF in conffiles
    assert RSYSLOG_SNIPPET in conffiles


def test_files_are_the_repository_s_and_the_venv_is_relocated(members: dict) -> None:
    for unit in ("slsfwd.service", "slsfwd.socket"):
        if (ROOT / "systemd" / unit).exists():
            assert members[f"/lib/systemd/system/{unit}#data"] == (ROOT / "systemd" / unit).read_bytes(), unit
    assert members[CONF + "#data"] == (ROOT / "packaging" / "slsfwd.toml").read_bytes()
    snippet = members[RSYSLOG_SNIPPET + "#data"].decode()
    tutorial = (ROOT / "tests" / "data" / "80-logtail.conf").read_text()
    assert "\n$ActionResumeInterval 1\n" + tutorial + "$ActionResumeInterval 30\n" in snippet, "tutorial block not verbatim"
    assert 'TCP_Framing="octet-counted"' in snippet and "maxMessageSize" in snippet and "action.resumeInterval" in snippet
    assert members["/opt/slsfwd/bin/slsfwd#data"].startswith(b"#!/opt/slsfwd/bin/python\n")
    cfg = members["/opt/slsfwd/pyvenv.cfg#data"].decode()
    assert "home = /usr/bin" in cfg and "/tmp" not in cfg
    python = members["/opt/slsfwd/bin/python"]
    assert python.issym(), "bin/python should be a symlink to Debian's interpreter"
    assert members["/usr/bin/slsfwd"].issym() and members["/usr/bin/slsfwd"].linkname == "/opt/slsfwd/bin/slsfwd"
    assert any(n.endswith(".cpython-311.pyc") for n in members), "no bytecode shipped"


@pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslogd is not installed")
def test_rsyslog_snippet_and_its_better_variant_are_valid(tmp_path: Path) -> None:
    source = ROOT / "packaging" / "rsyslog" / "80-slsfwd.conf"
    variant = tmp_path / "variant.conf"
    # The switch packaging/README.md documents: comment out the tutorial, uncomment the variant.
    _run("sh", "-c", f"sed -e '/^[$*]/ s/^/#/' -e '/^## BEGIN better variant/,$ s/^# //' {source} > {variant}")
    assert re.search(r'^\s+TCP_Framing="octet-counted"$', variant.read_text(), re.M), "the variant did not uncomment"
    for conf in (source, variant):
        main = tmp_path / f"main-{conf.name}"
        main.write_text(f"$WorkDirectory {tmp_path}\n$IncludeConfig {conf}\n")
        proc = _run("rsyslogd", "-N1", "-f", str(main), check=False)
        assert proc.returncode == 0, proc.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _ship_through_standin_as_slsfwd(workdir: Path) -> None:
    """`slsfwd run` from the package, as the user slsfwd, shipping one line to the PutLogs stand-in.

    This goes through every bundled dependency on the shipping path (uvloop, lz4, prometheus-client, the
    SDK's signing, protobuf), where `check` and `version` import almost nothing.
    """
    port, metrics_port = _free_port(), _free_port()
    stderr = workdir / "agent.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "PYTHON", "VIRTUAL_ENV"))}
    async with PutLogsStandin() as standin:
        config = workdir / "shipping.toml"
        config.write_text(
            f'[input]\nlisten = "127.0.0.1:{port}"\n[batch]\nlinger_ms = 100\n'
            f'[spool]\ndir = "/var/lib/slsfwd"\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
            f'[sls]\nendpoint = "{standin.url}"\nproject = "deb-project"\nlogstore = "deb-logstore"\n'
            f'access_key_id = "{standin.verifier.access_key_id}"\n'
            f'access_key_secret = "{standin.verifier.access_key_secret}"\n'
        )
        config.chmod(0o644)
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                "/usr/bin/slsfwd", "run", "--config", str(config),
                stdout=subprocess.DEVNULL, stderr=err, user="slsfwd", group="slsfwd", extra_groups=[], env=env, cwd="/",
            )
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.returncode is None, f"the agent exited with {proc.returncode}\n{stderr.read_text()[-3000:]}"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"the agent is not listening\n{stderr.read_text()[-3000:]}"
                    await asyncio.sleep(0.1)
            writer.write(f"0.1 sys_tag {int(time.time())} 127.0.0.1 myhost user.notice 0 deb-test - -  hello from the package\n".encode())
            await writer.drain()
            writer.close()
            await standin.wait_for_logs(1, timeout=15)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                code = await proc.wait()
        assert not standin.rejections, standin.rejections
        [log] = standin.logs
        assert (log.project, log.logstore, log.contents["msg"]) == ("deb-project", "deb-logstore", "hello from the package")
        assert code == 0, f"exit {code} after SIGTERM\n{stderr.read_text()[-3000:]}"


def _untracked_files(root: str) -> list[str]:
    tracked = set(_run("dpkg-query", "-L", "slsfwd").stdout.splitlines())
    return sorted(str(p) for p in Path(root).rglob("*") if not p.is_dir() and str(p) not in tracked)


@pytest.fixture()
def install(deb: Path) -> Iterator[Path]:
    if _installed():
        pytest.skip("slsfwd is already installed here; this test would purge it: `dpkg --purge slsfwd` first")
    try:
        yield deb
    finally:
        if _installed():
            _run("dpkg", "--purge", "slsfwd", check=False, timeout=300)


def test_install_check_run_and_purge(install: Path) -> None:
    proc = _run("dpkg", "-i", str(install), check=False, timeout=300)
    if proc.returncode != 0:  # dependencies missing: apt resolves them and configures the package
        _run("apt-get", "install", "-f", "-y", "-q", timeout=600)
    assert _installed()
    assert _run("dpkg-query", "-W", "-f=${Status}", "slsfwd").stdout == "install ok installed"

    # The command and its venv, offline.
    assert _run("/usr/bin/slsfwd", "version").stdout.strip() == f"slsfwd {VERSION}"
    assert os.path.realpath("/opt/slsfwd/bin/python").startswith("/usr/bin/python3")
    assert _run("dpkg", "--verify", "slsfwd").stdout == "", "installed files differ from the package's md5sums"

    # The sample config has placeholders and no credentials: exit 2 naming the key, no traceback.
    proc = _run("/usr/bin/slsfwd", "check", "--config", CONF, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "sls.access_key_id: missing" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout

    # The user and the config's ownership: the agent's user can read it, others cannot.
    user = pwd.getpwnam("slsfwd")
    assert user.pw_dir == "/var/lib/slsfwd"
    assert user.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.pw_uid < 1000, "not a system user"
    conf_stat = os.stat(CONF)
    assert stat.S_IMODE(conf_stat.st_mode) == 0o640
    assert (conf_stat.st_uid, grp.getgrgid(conf_stat.st_gid).gr_name) == (0, "slsfwd")
    state = os.stat("/var/lib/slsfwd")
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (user.pw_uid, 0o700)
    assert ENABLED_LINK.is_symlink(), "the unit was not enabled"

    # With credentials (keys, or the RAM role as the Packer template writes) the same file is valid.
    workdir = Path(tempfile.mkdtemp(prefix="slsfwd-deb-test-"))
    try:
        workdir.chmod(0o755)
        sample = Path(CONF).read_text()
        for name, creds in (
            ("keys", 'access_key_id = "LTAI-test"\naccess_key_secret = "test-secret"\n'),
            ("role", 'ecs_ram_role = "slsfwd-ecs"\n'),
        ):
            copy = workdir / f"slsfwd-{name}.toml"
            copy.write_text(sample.replace("[sls]\n", "[sls]\n" + creds, 1))
            proc = _run("/usr/bin/slsfwd", "check", "--config", str(copy), check=False)
            assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
            assert proc.stdout.strip() == f"{copy}: ok"

        # The agent itself, as systemd would run it (user slsfwd), from the installed venv, offline.
        asyncio.run(_ship_through_standin_as_slsfwd(workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # Nothing written into /opt at run time: the shipped bytecode was used, not regenerated.
    assert _untracked_files("/opt/slsfwd") == []

    _run("dpkg", "--purge", "slsfwd", timeout=300)
    assert not _installed()
    for gone in ("/opt/slsfwd", "/usr/bin/slsfwd", "/etc/slsfwd", "/var/lib/slsfwd", RSYSLOG_SNIPPET, str(ENABLED_LINK)):
        assert not os.path.lexists(gone), f"{gone} is still there after purge"
    assert not _user_exists("slsfwd"), "user slsfwd survived the purge"
    assert not _group_exists("slsfwd"), "group slsfwd survived the purge"
