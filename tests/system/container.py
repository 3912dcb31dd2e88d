"""Booted Debian systems for the system tests: root file system, packages, containers, stand-in.

* **Root file system**: ``mmdebstrap --variant=minbase`` of the host's Debian release with
  :data:`PACKAGES`, from the host's own apt sources (read at run time; no mirror is named here).
  Cached as a directory under :data:`CACHE`, keyed by release and package list. The release is
  the host's because the .deb's venv is tied to the python3 minor version it was built with.
* **Packages**: the .deb of this checkout (``packaging/deb/build.sh``), cached by a digest of
  the files that go into it; the previous release's .deb, built from ``git archive`` of its
  commit, cached by commit.
* **Containers**: ``systemd-nspawn -b`` with systemd as PID 1 and a private network, on an
  overlay of the cached root file system (each container writes only its own upper layer).
  Commands run inside through ``nsenter`` into the container's PID 1, with a clean environment
  (see ../shared/notes/booted-systemd.md: there is no systemd on the host for machinectl).
  Every container is powered off, killed if need be, and its mounts and directories removed.
* **Stand-in**: tests/system/standin_server.py inside the container, run by the Python of the
  .deb's venv (unpacked on the host and bound in read-only, so it never depends on the package
  under test being installed), writing what it accepts into a directory shared with the host.

Inside: ``/srv/slsfwd-test/src/tests`` (this repository's tests, read-only),
``/srv/slsfwd-test/python`` (the stand-in's Python), ``/srv/slsfwd-test/share`` (read-write,
shared with the host). On the host, everything is under :data:`CACHE` (``SLSFWD_SYSTEM_CACHE``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SLSFWD_SYSTEM_CACHE", "/var/cache/slsfwd-tests"))
# What the root file system holds: a booting systemd, journald's partner rsyslog (and omrelp),
# the .deb's dependencies, Prometheus, and the tools the tests call inside (ss, logger, curl).
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "rsyslog", "rsyslog-relp", "python3", "adduser", "procps",
    "iproute2", "curl", "bsdutils", "prometheus",
)
# What goes into the .deb (packaging/deb/build.sh): a change in any of these means a new build.
DEB_INPUTS = (
    "agent", "pyproject.toml", "README.md", "systemd", "packaging/deb", "packaging/slsfwd.toml",
    "packaging/rsyslog/80-slsfwd.conf",
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSIDE = Path("/srv/slsfwd-test")
CONF = "/etc/slsfwd/slsfwd.toml"


# ---------------------------------------------------------------- can this machine boot one?


def missing_for_boot() -> str | None:
    """One line saying why containers cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "the system tests boot containers with systemd-nspawn: run them as root (sudo make test)"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap"), ("nsenter", "util-linux"),
        ("dpkg-deb", "dpkg"), ("git", "git"), ("packer", "packer"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is missing: apt-get install {package} (make system-deps does)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay file system (modprobe overlay)"
    probe = subprocess.run(
        ["unshare", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip() or 'unshare failed'}"
    return None


# ---------------------------------------------------------------- cached artefacts


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """One builder at a time per cache (two test runs may share the machine)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_host(argv: list[str], *, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def host_release() -> str:
    found = re.search(r"^VERSION_CODENAME=(\S+)$", Path("/etc/os-release").read_text(), re.M)
    assert found, "/etc/os-release names no VERSION_CODENAME: not Debian?"
    return found.group(1)


def host_apt_sources() -> list[str]:
    """The host's apt source files, given to mmdebstrap as they are (it pastes a file's contents)."""
    candidates = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    active = [
        str(path) for path in candidates
        if path.suffix in (".list", ".sources")
        and path.is_file()
        and any(line.strip() and not line.lstrip().startswith("#") for line in path.read_text().splitlines())
    ]
    assert active, "the host has no apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/)"
    return active


def rootfs() -> Path:
    """The cached root file system, built on first use (about 30 s, 600 MB)."""
    release = host_release()
    key = hashlib.sha256(json.dumps([release, "minbase", sorted(PACKAGES)]).encode()).hexdigest()[:16]
    target = CACHE / f"rootfs-{release}-{key}"
    with cache_lock():
        if not target.is_dir():
            building = Path(tempfile.mkdtemp(prefix="rootfs-building-", dir=CACHE))
            try:
                run_host([
                    "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                    release, str(building), *host_apt_sources(),
                ])
                # nspawn names the host after the machine unless the image has its own name.
                (building / "etc" / "hostname").unlink(missing_ok=True)
                building.rename(target)
            finally:
                shutil.rmtree(building, ignore_errors=True)
    return target


def tree_digest(root: Path, inputs: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in inputs:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_deb(source: Path, dest: Path) -> Path:
    """packaging/deb/build.sh of ``source`` (about 30 s; fetches wheels), the .deb kept in ``dest``."""
    with cache_lock():
        found = sorted(dest.glob("slsfwd_*.deb"))
        if found:
            return found[0]
        with tempfile.TemporaryDirectory(prefix="deb-building-", dir=CACHE) as out:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
            run_host(["bash", str(source / "packaging" / "deb" / "build.sh")], env=env | {"DEB_OUT_DIR": out}, cwd=source)
            # Releases before 0.2.0 ignore DEB_OUT_DIR and write into their own dist/.
            [deb] = list(Path(out).glob("slsfwd_*.deb")) or list((source / "dist").glob("slsfwd_*.deb"))
            dest.mkdir(parents=True, exist_ok=True)
            return Path(shutil.move(deb, dest / deb.name))


def current_deb() -> Path:
    """The .deb of this checkout, rebuilt only when a file that goes into it changed.

    Builds of other trees are removed once a day old (a test run of such a tree is long over).
    """
    dest = CACHE / "debs" / f"tree-{tree_digest(REPO, DEB_INPUTS)}"
    for old in (CACHE / "debs").glob("tree-*"):
        if old != dest and time.time() - old.stat().st_mtime > 24 * 3600:
            shutil.rmtree(old, ignore_errors=True)
    return build_deb(REPO, dest)


def release_deb(commit: str) -> Path:
    """The .deb of a released commit, built from ``git archive`` of it (cached by commit)."""
    full = run_host(["git", "-C", str(REPO), "rev-parse", "--verify", f"{commit}^{{commit}}"]).stdout.strip()
    dest = CACHE / "debs" / f"commit-{full}"
    found = sorted(dest.glob("slsfwd_*.deb"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="release-source-", dir=CACHE) as source:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", full], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
        return build_deb(Path(source), dest)


def deb_version(deb: Path) -> str:
    return run_host(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def standin_python(deb: Path) -> Path:
    """The .deb's venv unpacked on the host: Python with lz4 and the SLS SDK for the stand-in, plus
    aiohttp (its server), a test dependency the agent does not bundle, installed into the unpacked copy."""
    target = deb.parent / "unpacked"
    with cache_lock():
        if not target.is_dir():
            unpacking = Path(tempfile.mkdtemp(prefix="unpacking-", dir=deb.parent))
            run_host(["dpkg-deb", "-x", str(deb), str(unpacking)])
            (site,) = (unpacking / "opt" / "slsfwd" / "lib").glob("python3.*/site-packages")
            run_host([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                      "--only-binary=:all:", "--python-version", site.parent.name.removeprefix("python"),
                      "--target", str(site), "aiohttp>=3.9"])
            unpacking.rename(target)
    return target / "opt" / "slsfwd"


# ---------------------------------------------------------------- containers


def containers_dir() -> Path:
    """Where containers keep their overlay layers and shared directory (removed with each container)."""
    path = CACHE / "containers"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Container:
    """A booted container: systemd as PID 1, its own network namespace, an overlay root."""

    name: str
    lower: Path
    python: Path  # the stand-in's Python (a venv directory on the host)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="container-", dir=containers_dir())))
    nspawn: subprocess.Popen | None = None
    pid1: int = 0

    @property
    def share(self) -> Path:
        """Host side of /srv/slsfwd-test/share."""
        return self.workdir / "share"

    @property
    def root(self) -> Path:
        return self.workdir / "merged"

    def boot(self, timeout: float = 60) -> None:
        for sub in ("upper", "work", "merged", "share"):
            (self.workdir / sub).mkdir(exist_ok=True)
        if not os.path.ismount(self.root):
            run_host([
                "mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={self.lower},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}", str(self.root),
            ])
        (self.root / "etc" / "hostname").write_text(self.name + "\n")
        with open(self.workdir / "console.log", "ab") as console:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn", "-D", str(self.root), "-b", f"--machine={self.name}", "--register=no",
                    "--keep-unit", "--console=pipe", "--private-network",
                    f"--bind-ro={REPO / 'tests'}:{INSIDE / 'src' / 'tests'}",
                    f"--bind-ro={self.python}:{INSIDE / 'python'}",
                    f"--bind={self.share}:{INSIDE / 'share'}",
                ],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env={"PATH": PATH, "SYSTEMD_LOG_LEVEL": "warning"},
            )
        self.pid1 = self._wait_for_pid1(timeout)
        wait_until(lambda: self.file("/run/systemd/private").exists(), timeout, f"{self.name}: systemd's private socket")
        state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout).stdout.strip()
        assert state == "running", f"{self.name} booted {state!r}:\n{self.run('systemctl', '--failed', check=False).stdout}"

    def _wait_for_pid1(self, timeout: float) -> int:
        assert self.nspawn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.nspawn.poll() is None, f"systemd-nspawn exited {self.nspawn.returncode}: {self.console()}"
            for child in children(self.nspawn.pid):
                if comm(child) == "systemd":
                    return child
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no systemd as PID 1 after {timeout} s: {self.console()}")

    def console(self) -> str:
        return (self.workdir / "console.log").read_text(errors="replace")[-3000:]

    # -- running things inside

    def command(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        clean = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"} | (env or {})
        return ["nsenter", "-t", str(self.pid1), "-a", "--", "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*argv, env=env), capture_output=True, text=True, timeout=timeout, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.name}: {shlex.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
                f"--- stderr\n{proc.stderr[-3000:]}"
            )
        return proc

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-euc", script, **kwargs)

    def file(self, path: str) -> Path:
        """A path inside the running container, seen from the host."""
        return Path(f"/proc/{self.pid1}/root") / path.lstrip("/")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def copy_in(self, source: Path, path: str) -> None:
        shutil.copyfile(source, self.file(path))

    def journal(self, unit: str, lines: int = 60) -> str:
        return self.run("journalctl", "-u", unit, "-n", str(lines), "--no-pager", check=False).stdout

    # -- stopping

    def poweroff(self, timeout: float = 30) -> None:
        """systemctl poweroff; if the container is not gone in time, SIGKILL to its PID 1 (which ends
        every process in its PID namespace), then to nspawn."""
        if self.nspawn is None:
            return
        if self.nspawn.poll() is None:
            subprocess.run(self.command("systemctl", "poweroff", "--no-block"), capture_output=True, timeout=30)
            try:
                self.nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGKILL)
                try:
                    self.nspawn.wait(10)
                except subprocess.TimeoutExpired:
                    self.nspawn.kill()
                    self.nspawn.wait(10)
        self.nspawn, self.pid1 = None, 0
        remove_nspawn_leftovers(self.name)

    def destroy(self) -> None:
        try:
            self.poweroff()
        finally:
            if os.path.ismount(self.root):
                subprocess.run(["umount", str(self.root)], check=False)
            if not os.path.ismount(self.root):
                shutil.rmtree(self.workdir, ignore_errors=True)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def remove_nspawn_leftovers(machine: str) -> None:
    """nspawn leaves /run/systemd/nspawn/ behind (the host has no systemd to clean it)."""
    base = Path("/run/systemd/nspawn")
    shutil.rmtree(base / "propagate" / machine, ignore_errors=True)
    for lock in (base / "locks").glob("*"):
        # An image lock nobody holds is stale (nspawn removes its own unless it was killed). systemd
        # holds them with fcntl (OFD) locks, which POSIX locks conflict with: a held one stays.
        with contextlib.suppress(OSError), open(lock, "r+") as held:
            fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink()
    for directory in (base / "propagate", base / "locks", base):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only once empty: another container may still be running


def wait_until(ready: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the stand-in inside


@dataclass
class Standin:
    """tests/system/standin_server.py as a unit inside ``container``, on 127.0.0.1:``port``.

    A unit, so that it can come up before slsfwd at boot (the metadata service of an image, see
    ``metadata_address``), and is stopped with the container whatever happens. Its output goes
    to the shared directory, never to the journal (rsyslog would forward it to the agent).
    """

    container: Container
    port: int = 18080
    metadata_address: str = ""  # also serve ECS metadata there (port 80), with STS credentials
    _read: int = 0
    _logs: list[dict] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return f"slsfwd-test-standin-{self.port}.service"

    @property
    def record(self) -> Path:
        return self.container.share / f"standin-{self.port}.jsonl"

    def install(self, *, enable: bool = False) -> None:
        out = INSIDE / "share" / f"standin-{self.port}.out"
        argv = [str(INSIDE / "python" / "bin" / "python"), "-m", "tests.system.standin_server",
                "--port", str(self.port), "--record", str(INSIDE / "share" / self.record.name)]
        pre = ""
        if self.metadata_address:
            argv += ["--metadata-address", self.metadata_address]
            pre = f"ExecStartPre=/sbin/ip address replace {self.metadata_address}/32 dev lo\n"
        self.container.write(f"/etc/systemd/system/{self.unit}", (
            "[Unit]\nDescription=PutLogs stand-in of the system tests\nBefore=slsfwd.service\n\n"
            "[Service]\nType=notify\n" + pre + f"ExecStart={shlex.join(argv)}\n"
            f"Environment=PYTHONPATH={INSIDE / 'src'} PYTHONDONTWRITEBYTECODE=1\n"
            f"StandardOutput=append:{out}\nStandardError=inherit\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        ))
        self.container.run("systemctl", "daemon-reload")
        if enable:
            self.container.run("systemctl", "enable", self.unit)

    def start(self) -> None:
        self.container.run("systemctl", "start", self.unit)

    def stop(self) -> None:
        self.container.run("systemctl", "stop", self.unit)

    def logs(self) -> list[dict]:
        """Every log accepted so far (read incrementally from the record file)."""
        if self.record.exists():
            with self.record.open("rb") as source:
                source.seek(self._read)
                chunk = source.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._read += len(complete)
            self._logs.extend(json.loads(line) for line in complete.splitlines())
        return self._logs

    def messages(self) -> set[str]:
        return {log["contents"].get("msg", "") for log in self.logs()}

    def wait_for_messages(self, wanted: set[str], timeout: float) -> float:
        """Seconds until every message in ``wanted`` arrived; fails naming how many did not."""
        started = time.monotonic()
        while not wanted <= self.messages():
            if time.monotonic() - started > timeout:
                missing = wanted - self.messages()
                raise AssertionError(
                    f"{len(missing)} of {len(wanted)} lines did not arrive within {timeout} s, e.g. {sorted(missing)[:3]}"
                )
            time.sleep(0.05)
        return time.monotonic() - started

    def with_message(self, msg: str) -> list[dict]:
        return [log for log in self.logs() if log["contents"].get("msg") == msg]


def agent_config(standin: Standin, *, relp: bool = True) -> str:
    """/etc/slsfwd/slsfwd.toml pointing at the stand-in (access keys: the stand-in's defaults)."""
    return (
        "# Written by tests/system: the agent ships to the PutLogs stand-in inside this container.\n"
        "[input]\n"
        'listen = "127.0.0.1:11111"\n'
        + ('relp_listen = "127.0.0.1:20514"\n' if relp else "")
        + "\n[sls]\n"
        f'endpoint = "http://127.0.0.1:{standin.port}"\n'
        'project = "system-test"\n'
        'logstore = "todo-list"\n'
        'access_key_id = "test-akid"\n'
        'access_key_secret = "test-secret"\n'
        "\n[spool]\n"
        'dir = "/var/lib/slsfwd"\n'
        "\n[metrics]\n"
        'listen = "127.0.0.1:9469"\n'
    )


# ---------------------------------------------------------------- the README's recipe, step by step


def install_package(container: Container, deb: Path, *apt_options: str) -> None:
    """``apt-get install ./slsfwd_<version>_<arch>.deb``, as the README tells users."""
    container.copy_in(deb, f"/tmp/{deb.name}")
    container.sh(f"cd /tmp && apt-get install -y -q {' '.join(apt_options)} ./{deb.name}", timeout=300)


def configure_agent(container: Container, config: str) -> None:
    """The config in place (mode 0640, group slsfwd, as the package keeps it), checked, then the agent (re)started."""
    container.write("/tmp/slsfwd.toml", config)
    container.run("install", "-m", "0640", "-o", "root", "-g", "slsfwd", "/tmp/slsfwd.toml", CONF)
    container.run("slsfwd", "check", "--config", CONF)
    container.run("systemctl", "restart", "slsfwd.service")


# The tutorial's kind of application: a service whose stdout goes to the journal under its name.
TODO_LIST_UNIT = """\
[Unit]
Description=todo-list (the tutorial's kind of application): prints its instance name

[Service]
Type=oneshot
ExecStart=/bin/echo %i
StandardOutput=journal
SyslogIdentifier=todo-list
"""


def add_todo_list_app(container: Container) -> None:
    container.write("/etc/systemd/system/todo-list@.service", TODO_LIST_UNIT)
    container.run("systemctl", "daemon-reload")


@contextlib.contextmanager
def rsyslog_forwarding(container: Container, name: str, content: bytes) -> Iterator[None]:
    """``content`` as /etc/rsyslog.d/NAME, rsyslog's only forwarding instead of the package's snippet."""
    container.run("mv", "/etc/rsyslog.d/80-slsfwd.conf", "/root/80-slsfwd.conf.saved")
    container.file(f"/etc/rsyslog.d/{name}").write_bytes(content)
    container.run("systemctl", "restart", "rsyslog.service")
    try:
        yield
    finally:
        container.run("rm", f"/etc/rsyslog.d/{name}")
        container.run("mv", "/root/80-slsfwd.conf.saved", "/etc/rsyslog.d/80-slsfwd.conf")
        container.run("systemctl", "restart", "rsyslog.service")


def write_like_the_tutorial(container: Container, marker: str) -> dict[str, float]:
    """A line from the todo-list service and one from ``logger -t todo-list``: text -> when written (unix time)."""
    written = {}
    container.run("systemctl", "start", f"todo-list@{marker}.service")  # oneshot: returns once it has printed
    written[marker] = time.time()
    container.run("logger", "-t", "todo-list", f"{marker} via logger")
    written[f"{marker} via logger"] = time.time()
    return written


def send_to_agent(container: Container, texts: list[str], port: int = 11111) -> None:
    """Lines in rsyslog's format straight to the agent's TCP input (bash's /dev/tcp), bypassing rsyslog."""
    now = int(time.time())
    payload = "".join(f"0.1 sys_tag {now} 127.0.0.1 {container.name} user.notice 0 todo-list - -  {text}\n" for text in texts)
    container.run("bash", "-c", f"cat > /dev/tcp/127.0.0.1/{port}", input=payload)


def metric(container: Container, name: str) -> float:
    """The sum of a metric's samples on the agent's /metrics (0 when it has none)."""
    text = container.run("curl", "-fsS", "http://127.0.0.1:9469/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(rf"{name}(\{{| )", line))


def main_pid(container: Container, unit: str = "slsfwd.service") -> int:
    return int(container.run("systemctl", "show", "-P", "MainPID", unit).stdout)


def unit_property(container: Container, unit: str, name: str) -> str:
    return container.run("systemctl", "show", "-P", name, unit).stdout.strip()


# Logtail's keys for format 0.1 (README, "What it does with each line").
LOGTAIL_KEYS = {"hostname", "pri-text", "protocol-version", "app-name", "procid", "msgid", "msg"}


def assert_delivered_like_logtail(standin: Standin, written: dict[str, float], *, within_s: float) -> None:
    """Each line arrived with Logtail's keys, as the todo-list app on this host, ``within_s`` of being written."""
    standin.wait_for_messages(set(written), timeout=within_s + 30)
    hostname = standin.container.name
    for text, at in written.items():
        log = standin.with_message(text)[0]
        assert log["received"] - at <= within_s, f"{text!r} arrived {log['received'] - at:.1f} s after it was written"
        assert set(log["contents"]) == LOGTAIL_KEYS, log
        assert (log["contents"]["app-name"], log["contents"]["hostname"]) == ("todo-list", hostname), log
        assert log["tags"]["__hostname__"] == hostname, log  # shown as __tag__:__hostname__
