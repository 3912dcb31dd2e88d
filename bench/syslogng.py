"""Debian's syslog-ng as the in-run reference of the end-to-end benchmark.

``bench/setup_syslogng.sh`` unpacks the ``syslog-ng-core`` package into
``bench/.work/syslog-ng/`` (it is not installed: it conflicts with rsyslog).
:class:`SyslogNg` runs that binary in the foreground with everything it
writes (control socket, persist file, pid file, output) in a work directory:

* a ``network()`` TCP source on 127.0.0.1 with ``flags(no-parse)``, so each
  LF-framed line is the message as it arrived;
* a ``regexp-parser`` that splits a ``0.1`` line into the same fields as
  ``agent/parse.py`` (version, tag, time, ip, hostname, pri-text,
  protocol-version, app-name, procid, msgid, msg; for protocol-version ``0``
  the one space rsyslog keeps after ``tag:`` is dropped, as the agent does).
  Lines it does not match (the parse-error samples of the corpus) take the
  ``else`` branch and are written whole, with ``parse-error``, as the agent
  ships them;
* a ``file()`` destination whose template writes every field;
* ``flags(flow-control)`` on the log path, so the source stops reading when
  the file destination's queue is full, as the agent stops reading when its
  spool is full.

The done point is the file destination's ``processed`` counter from
``syslog-ng-ctl stats`` (with ``written`` reported too).

``python -m bench.syslogng --print-config`` prints the configuration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent / ".work" / "syslog-ng"
SETUP = Path(__file__).resolve().parent / "setup_syslogng.sh"

# One pattern per protocol-version rule; the first that matches wins.
_HEAD = (
    r"^(?<version>0\.1) (?<tag>[^ ]*) (?<time>[0-9]+) (?<ip>[^ ]*) (?<hostname>[^ ]*) (?<pri_text>[^ ]*) "
)
PATTERNS = (
    _HEAD + r"(?<protocol_version>0) (?<app_name>[^ ]*) (?<procid>[^ ]*) (?<msgid>[^ ]*) (?: )?(?<msg>.*)$",
    _HEAD + r"(?<protocol_version>(?!0 )[^ ]*) (?<app_name>[^ ]*) (?<procid>[^ ]*) (?<msgid>[^ ]*) (?<msg>.*)$",
)
FIELDS = ("version", "tag", "time", "ip", "hostname", "pri_text", "protocol_version", "app_name", "procid", "msgid", "msg")


def module_dir(root: Path = ROOT) -> Path:
    found = sorted(p for p in (root / "usr" / "lib" / "syslog-ng").glob("[0-9]*") if p.is_dir())
    if not found:
        raise FileNotFoundError(f"syslog-ng is not unpacked in {root}: run {SETUP}")
    return found[-1]


def package_version(root: Path = ROOT) -> str:
    try:
        return (root / ".version").read_text().strip()
    except OSError:
        return "unknown"


def config_text(*, port: int, output: Path, config_version: str = "3.38") -> str:
    patterns = " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in PATTERNS)
    template = "\\t".join("${.sls." + name + "}" for name in FIELDS) + "\\t${.sls.parse_error}\\n"
    return f"""@version: {config_version}
options {{
    stats-freq(0);
    stats-level(1);
    threaded(yes);
    log-msg-size(1048576);
    keep-hostname(yes);
    chain-hostnames(no);
    use-dns(no);
    use-fqdn(no);
    dns-cache(no);
    create-dirs(no);
}};

source s_net {{
    network(
        ip("127.0.0.1") port({port}) transport("tcp")
        flags(no-parse)
        max-connections(16)
        log-fetch-limit(1000)
        log-iw-size(10000)
    );
}};

parser p_sls {{
    regexp-parser(patterns({patterns}) prefix(".sls."));
}};

rewrite r_unparsed {{
    set("${{MESSAGE}}" value(".sls.msg"));
    set("unknown_version" value(".sls.parse_error"));
}};

destination d_sls {{
    file("{output}"
        template("{template}")
        log-fifo-size(20000)
        flush-lines(100)
    );
}};

log {{
    source(s_net);
    if {{
        parser(p_sls);
    }} else {{
        rewrite(r_unparsed);
    }};
    destination(d_sls);
    flags(flow-control);
}};
"""


def read_stats(ctl: Path, root: Path = ROOT, timeout: float = 5.0) -> dict[str, int]:
    """``syslog-ng-ctl stats`` of the file destination: {"processed": n, "written": n, "dropped": n, ...},
    plus ``parser_discarded``, the lines the regexp-parser did not match."""
    out = subprocess.run(
        [str(root / "usr" / "sbin" / "syslog-ng-ctl"), "stats", f"--control={ctl}"],
        capture_output=True, text=True, timeout=timeout, env=_env(root),
    )
    if out.returncode != 0:
        raise RuntimeError(f"syslog-ng-ctl stats failed ({out.returncode}): {out.stderr.strip()}")
    counts: dict[str, int] = {}
    for line in out.stdout.splitlines():
        parts = line.split(";")
        if len(parts) != 6:
            continue
        if parts[0] == "dst.file" and parts[1].startswith("d_sls"):
            key = parts[4]
        elif parts[0] == "parser" and parts[1] == "p_sls":
            key = "parser_" + parts[4]  # parser_discarded: lines the regexp did not match
        else:
            continue
        try:
            counts[key] = counts.get(key, 0) + int(parts[5])
        except ValueError:
            pass
    return counts


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    lib = str(root / "usr" / "lib" / "syslog-ng")
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


class SyslogNg:
    """One syslog-ng process, pinned with ``taskset -c CORE`` when ``core`` is given."""

    def __init__(self, workdir: Path, port: int, *, core: int | None = None, root: Path = ROOT) -> None:
        self.root = root
        self.workdir = workdir
        self.port = port
        self.core = core
        self.moddir = module_dir(root)
        self.config_path = workdir / "syslog-ng.conf"
        self.ctl = workdir / "syslog-ng.ctl"
        self.output = workdir / "out.tsv"
        self.stderr_path = workdir / "syslog-ng.stderr"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text(port=self.port, output=self.output, config_version=self.moddir.name))
        cmd = [
            str(self.root / "usr" / "sbin" / "syslog-ng"), "-F", "--no-caps", "-f", str(self.config_path),
            f"--module-path={self.moddir}", f"--control={self.ctl}",
            f"--persist-file={self.workdir / 'syslog-ng.persist'}", f"--pidfile={self.workdir / 'syslog-ng.pid'}",
        ]
        if self.core is not None:
            cmd = ["taskset", "-c", str(self.core)] + cmd
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "ab"),
            env=_env(self.root), cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"syslog-ng exited {self.process.returncode} at start:\n{self.stderr()}")
            if self.ctl.exists():
                try:
                    read_stats(self.ctl, self.root)
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                        pass
                    return
                except (OSError, RuntimeError, subprocess.TimeoutExpired):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"syslog-ng did not come up within {timeout}s:\n{self.stderr()}")

    def stats(self) -> dict[str, int]:
        return read_stats(self.ctl, self.root)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.syslogng", description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-config", action="store_true", help="print the benchmark's syslog-ng.conf")
    parser.add_argument("--port", type=int, default=11112)
    parser.add_argument("--output", default="/tmp/syslog-ng-out.tsv")
    args = parser.parse_args(argv)
    if args.print_config:
        version = module_dir().name if (ROOT / "usr").exists() else "3.38"
        sys.stdout.write(config_text(port=args.port, output=Path(args.output), config_version=version))
        return 0
    binary = ROOT / "usr" / "sbin" / "syslog-ng"
    print(f"{binary}: {'present' if binary.exists() else 'missing, run ' + str(SETUP)}; "
          f"package {package_version()}; {shutil.which('taskset') or 'no taskset'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
