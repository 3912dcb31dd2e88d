"""Command line: ``slsfwd run | check [--live] [--explain] | reload | version | import-logtail | spool verify |
dead-letter replay``.

No logic of its own.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage,
130 forced exit on a second signal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import __version__, exits
from .config import DEFAULT_CONFIG_PATH, Config, ConfigError, load

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = exits.OK, exits.FAILURE, exits.CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slsfwd", description="Logtail-compatible log forwarder to Alibaba Cloud Log Service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent in the foreground (logs to stderr)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    check = sub.add_parser("check", help="validate the config and exit (0 valid, 2 invalid)")
    check.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    check.add_argument(
        "--live", action="store_true",
        help="also send one test log to the configured logstore (exit 1 if that fails, naming why)",
    )
    check.add_argument("--explain", action="store_true", help="also print, for each tag, its destination and processors in order")
    reload = sub.add_parser(
        "reload", help="make the running agent re-read its config (SIGHUP) and wait for the outcome (0 in force, 1 not)"
    )
    reload.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    reload.add_argument("--pid", type=int, help="the agent's pid (systemd's $MAINPID); default: from its state directory")
    sub.add_parser("version", help="print the version")
    spool = sub.add_parser("spool", help="spool tools")
    spool_sub = spool.add_subparsers(dest="spool_command", required=True, metavar="TOOL")
    verify = spool_sub.add_parser("verify", help="report the spool's health: segments, backlog, corrupt records")
    verify.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    dead = sub.add_parser("dead-letter", help="dead-letter tools")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="TOOL")
    replay = dead_sub.add_parser("replay", help="ship dead-lettered logs again; remove those that are accepted")
    replay.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    imp = sub.add_parser("import-logtail", help="print an slsfwd config equivalent to Logtail's streamlog settings")
    imp.add_argument("logtail_config", type=Path, nargs="?", default=Path("/usr/local/ilogtail/ilogtail_config.json"))
    return parser


def _load_or_report(path: Path) -> Config | None:
    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}" if not problem.startswith(str(path)) else problem, file=sys.stderr)
        return None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The SDK logs per request at INFO/DEBUG: that would feed back through rsyslog.
    logging.getLogger("aliyun").setLevel(logging.WARNING)


def _run(config: Config, path: Path) -> int:
    from .app import run  # imported late: `check` and `version` stay fast

    _configure_logging(config.log_level)
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without wheels
        return asyncio.run(run(config, path))
    return uvloop.run(run(config, path))


def _reload(path: Path, pid: int | None) -> int:
    from .reload import request_reload

    ok, lines = request_reload(path, pid)
    for line in lines:
        print(line, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"slsfwd {__version__}")
        return EXIT_OK
    if args.command == "import-logtail":
        return _import_logtail(args.logtail_config)
    if args.command == "reload":
        return _reload(args.config, args.pid)
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.command == "check":
        print(f"{args.config}: ok")
        if args.explain:
            print(_explain(config), end="")
        return _check_live(config) if args.live else EXIT_OK
    if args.command == "spool":
        return _spool_verify(config)
    if args.command == "dead-letter":
        return _dead_letter_replay(config)
    return _run(config, args.config)


def _spool_verify(config: Config) -> int:
    from .spool import SpoolError, verify

    try:
        report = verify(Path(config.spool.dir))
    except (SpoolError, OSError) as exc:
        print(f"slsfwd spool verify: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"spool {Path(config.spool.dir) / 'queue'}: {report.summary()}")
    return EXIT_FAILURE if report.damaged else EXIT_OK


def _dead_letter_replay(config: Config) -> int:
    from agent.tools.replay import replay

    try:
        report = asyncio.run(replay(config))
    except ValueError as exc:
        print(f"slsfwd dead-letter replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"dead letters: {report.files} files; {report.accepted} logs accepted and removed, "
        f"{report.still_rejected} still rejected"
        + ("".join(f"; {code}: {n}" for code, n in sorted(report.reasons.items())) if report.reasons else "")
        + (f"; {report.unreadable_lines} unreadable lines kept" if report.unreadable_lines else "")
        + (f"; {report.in_use_files} files still written by the running agent, left for later" if report.in_use_files else "")
    )
    return EXIT_FAILURE if report.still_rejected or report.unreadable_lines else EXIT_OK


def _import_logtail(path: Path) -> int:
    from agent.tools.import_logtail import (
        LogtailImportError,
        load_logtail_config,
        to_toml,
    )

    try:
        print(to_toml(load_logtail_config(path), str(path)), end="")
    except LogtailImportError as exc:
        print(f"slsfwd import-logtail: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("slsfwd import-logtail: fill in sls.project and sls.logstore, then run `slsfwd check`", file=sys.stderr)
    return EXIT_OK


def _explain(config: Config) -> str:
    from agent.pipeline.processors import build_chain_set

    chains = build_chain_set(config.processors)
    default = "console" if config.sls is None else f"{config.sls.project}/{config.sls.logstore}"
    routes = {r.tag: f"{r.project or config.sls.project}/{r.logstore}" for r in config.routes if config.sls}
    tags = list(dict.fromkeys([*routes, *(t for p in config.processors for t in p.tags)]))
    rows = [(f"tag {tag!r}", routes.get(tag, default), tag) for tag in tags]
    rows += [("any other tag", default, ""), ("a line that does not parse", default, None)]
    out = ["Each line goes to its destination through these processors, in order:"]
    for (label, dest, tag), (_, steps) in zip(rows, chains.describe([tag for _, _, tag in rows])):
        out.append(f"  {label} -> {dest}: {', '.join(steps) if steps else 'no processors (shipped as parsed)'}")
    return "\n".join(out) + "\n"


def _check_live(config: Config) -> int:
    from agent.tools.livecheck import live_check

    ok, message = asyncio.run(live_check(config))
    print(message, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
