"""Wires the stages together and runs them until a signal.

Data path: receive -> frame -> queue -> parse+encode (transform) -> batch -> ship.

Shutdown is ordered and has a deadline (``shutdown_timeout_s``):

1. stop accepting connections; flush each connection's partial line and close it;
2. let the consumer take everything left in the queue;
3. close every open batch and wait for the shipper;
4. past the deadline, cancel what is still in flight: with the memory queue
   those lines are lost, and counted and logged as lost.

A second SIGTERM/SIGINT exits at once. A background task or callback that
fails (:mod:`agent.supervise`) turns ``/healthz`` to 503 at once and stops the
agent with exit code 1 within ``FAILURE_SHUTDOWN_S``: only what is already in
flight gets that long, and the spool keeps the rest for the restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from agent.input.activation import inherited_sockets, take_matching
from agent.input.relp import RelpReceiver
from agent.input.tcp import LineReceiver
from agent.ops.sdnotify import Notifier
from agent.ops.status import StatusServer
from agent.ops.supervise import FailureWatch, spawn
from agent.ops.wakeups import GRID_S, on_grid
from agent.output.deadletter import DeadLetters
from agent.output.ship import Shipper
from agent.pipeline.batch import Batch, Batcher, Ticket
from agent.pipeline.join import Joiner
from agent.pipeline.transform import LineTransformer
from agent.spool.queue import ChunkQueue, MemoryQueue

from . import exits
from .config import Config, ConfigError, load, split_host_port
from .ops import hostinfo, metrics
from .reconfigure import apply_config
from .reload import ReloadStatus, keeping_restart_only, restart_only_changes
from .spool import DiskSpool, SpoolError
from .wiring import (
    host_ip_for,
    make_formats,
    make_output,
    make_processors,
    make_queue,
    make_router,
    publish_join_counts,
    read_delay_s,
)

log = logging.getLogger("slsfwd")

FAILURE_SHUTDOWN_S = 0.5  # after a background failure: exit well within a second, leave the rest to the spool


@dataclass
class ShutdownReport:
    clean: bool
    unshipped_chunks: int = 0
    unshipped_bytes: int = 0


class Agent:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # re-read by a reload
        self.hostname = hostinfo.hostname()
        self.queue: ChunkQueue = make_queue(config.spool)
        self.output = make_output(config.sls)
        self.shipper = Shipper(
            self.output.sink,
            tags=[("__hostname__", self.hostname)],
            max_in_flight=config.sls.max_in_flight if config.sls else 1,
            dead_letters=DeadLetters(Path(config.spool.dir) / "dead-letter", config.spool.dead_letter_max_bytes),
            signer=self.output.signer,
            refresh_credentials=self.output.ram_role.force_refresh if self.output.ram_role else None,
            on_batch_done=self._on_batch_done,
        )
        self.batcher = Batcher(
            max_logs=config.batch.max_logs,
            max_bytes=config.batch.max_bytes,
            linger=config.batch.linger_ms / 1000.0,
            on_close=self._on_batch_closed,
            clock=time.monotonic,
        )
        self.processors = make_processors(config)
        # The multiline processors' open groups; a line may wait up to read_coalesce_ms to be read.
        self.joiner = Joiner(self.batcher, time.monotonic, read_delay_s=read_delay_s(config))
        self.transformer = LineTransformer(
            formats=make_formats(config),
            router=make_router(config),
            host_ip=host_ip_for(config),
            batcher=self.batcher,
            clock=time.time,
            processors=self.processors,
            joiner=self.joiner,
        )
        self.receiver = LineReceiver(
            self.queue,
            max_line_bytes=config.input.max_line_bytes,
            max_connections=config.input.max_connections,
            coalesce_ms=config.input.read_coalesce_ms,
        )
        self.relp = self.make_relp(config)
        self.status = StatusServer(self.health_problems)
        self.notifier = Notifier()
        self._consumer: asyncio.Task | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._window_open = asyncio.Event()
        self._totals = metrics.TotalsMirror()
        self.failures = FailureWatch(lambda _where, _exc: self._stop.set())
        self._reloading = asyncio.Lock()
        self.reload_status = ReloadStatus(pid=os.getpid())
        self._state_dir_fd: int | None = None

    def make_relp(self, config: Config) -> RelpReceiver | None:
        if not config.input.relp_listen:
            return None
        return RelpReceiver(
            self.queue, max_connections=config.input.max_connections,
            max_unacked_frames=config.input.relp_max_unacked_frames, max_unacked_bytes=config.input.relp_max_unacked_bytes,
        )

    # -- running ----------------------------------------------------------

    async def start(self) -> None:
        self.failures.install(asyncio.get_running_loop())
        if isinstance(self.queue, DiskSpool):
            report = self.queue.open()
            if report.replay_records:
                log.info(
                    "spool: replaying %d unacknowledged lines (%d records) from %s",
                    report.replay_lines, report.replay_records, self.queue.directory,
                )
        if isinstance(self.queue, MemoryQueue):  # the disk spool binds its own gauges when opened
            queue = self.queue
            metrics.SPOOL_BYTES.set_function(lambda: queue.backlog_bytes)
            metrics.SPOOL_BACKLOG_LINES.set_function(queue.unacked_lines)
            metrics.SPOOL_BACKLOG_CHUNKS.set_function(lambda: queue.backlog_chunks)
        metrics.SPOOL_MAX_BYTES.set(self.config.spool.max_bytes)
        metrics.SPOOL_OLDEST_AGE.set_function(self._oldest_unacked_age)
        await self.status.start(*split_host_port(self.config.metrics.listen))
        if self.output.ram_role is not None:
            await self.output.ram_role.start()
        inherited = inherited_sockets()
        host, port = split_host_port(self.config.input.listen)
        await self.receiver.start(host, port, sock=take_matching(inherited, host, port))
        if self.relp is not None:
            relp_host, relp_port = split_host_port(self.config.input.relp_listen)
            await self.relp.start(relp_host, relp_port, sock=take_matching(inherited, relp_host, relp_port))
        for unused in inherited:
            log.warning("inherited socket %s matches no listen address; ignoring it", _format_sockname(unused.getsockname()))
            unused.close()
        self._consumer = spawn(self._consume(), name="consume")
        listeners = self.receiver.sockets + (self.relp.sockets if self.relp is not None else [])
        where = ", ".join(_format_sockname(s.getsockname()) for s in listeners)
        sink = "console (stdout)" if self.config.sls is None else f"SLS {self.config.sls.endpoint}"
        log.info("slsfwd listening on %s, shipping to %s", where, sink)
        metrics.CONFIG_LAST_RELOAD_OK.set(1)
        metrics.CONFIG_LAST_RELOAD_SUCCESS_TS.set_to_current_time()
        self._write_reload_status()
        self.notifier.ready(self.status_line())
        self.notifier.start_watchdog(lambda: not self.health_problems_fatal(), self.status_line)

    # -- reloading ----------------------------------------------------------

    async def reload(self) -> None:
        """SIGHUP: put the config file in force again, or keep the running config (agent.reload)."""
        async with self._reloading:
            self.notifier.reloading()
            restart: list[str] = []
            try:
                wanted = load(self.config_path)
                restart = restart_only_changes(self.config, wanted)
                await apply_config(self, keeping_restart_only(self.config, wanted))
            except ConfigError as exc:
                self._reloaded([p if p.startswith(str(self.config_path)) else f"{self.config_path}: {p}" for p in exc.problems])
            except OSError as exc:
                self._reloaded([f"{self.config_path}: cannot listen: {exc.strerror or exc}"])
            else:
                self._reloaded([], restart)
            self.notifier.ready(self.status_line())

    def _reloaded(self, problems: list[str], restart: list[str] | None = None) -> None:
        status = self.reload_status
        status.generation += 1
        status.ok, status.problems = not problems, problems
        for problem in problems:
            log.error("reload refused: %s", problem)
        if not problems:
            status.restart_needed = sorted(set(status.restart_needed) | set(restart or []))
            for key in restart or []:
                log.warning("reload: %s changed; it takes effect after a restart (systemctl restart slsfwd)", key)
            log.info("reloaded %s", self.config_path)
        metrics.CONFIG_RELOADS.labels(result="success" if status.ok else "failure").inc()
        metrics.CONFIG_LAST_RELOAD_OK.set(1 if status.ok else 0)
        if status.ok:
            metrics.CONFIG_LAST_RELOAD_SUCCESS_TS.set_to_current_time()
        metrics.CONFIG_RESTART_PENDING.set(1 if status.restart_needed else 0)
        self._write_reload_status()

    def _write_reload_status(self) -> None:
        try:
            if self._state_dir_fd is None:
                Path(self.config.spool.dir).mkdir(mode=0o700, parents=True, exist_ok=True)
                self._state_dir_fd = ReloadStatus.hold_directory(Path(self.config.spool.dir))
            self.reload_status.write(Path(self.config.spool.dir))
        except OSError as exc:
            log.warning("cannot write the reload status to %s: %s", self.config.spool.dir, exc.strerror or exc)

    def status_line(self) -> str:
        problems = self.health_problems()
        state = "; ".join(problems) if problems else "ok"
        relp = self.relp
        connections = self.receiver.connection_count + (relp.connection_count if relp else 0)
        lines = self.receiver.lines + (relp.lines if relp else 0)
        return f"{state}; {connections} connections, received {lines} lines, backlog {self.queue.unacked_lines()} lines"

    @property
    def failed(self) -> bool:
        return self.failures.failure is not None

    def health_problems_fatal(self) -> bool:
        """Problems a restart can fix: a failed task or callback. (A held credential is not one.)"""
        return self.failed or (self._consumer is not None and self._consumer.done())

    def _oldest_unacked_age(self) -> float:
        oldest = self.queue.oldest_unacked_received_at()
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def health_problems(self) -> list[str]:
        problems = []
        if isinstance(self.queue, DiskSpool) and self.queue.write_error:
            problems.append(f"spool cannot be written: {self.queue.write_error}")
        problems.extend(f"shipping refused: {reason}" for reason in self.shipper.blocked_reasons())
        if self.failures.failure is not None:
            problems.append(f"{self.failures.failure}; stopping")
        elif self._consumer is not None and self._consumer.done():
            problems.append("the consumer task has stopped")
        return problems

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def _consume(self) -> None:
        queue = self.queue
        transformer = self.transformer
        while True:
            while self._batched_bytes() >= self.config.batch.window_bytes:
                self._window_open.clear()
                await self._window_open.wait()
            chunk = queue.get_nowait()
            if chunk is None:
                # Caught up. linger_ms is how long a line may wait for company, and lines
                # from a backlog (read back from disk, or queued a while) have waited enough.
                self.batcher.close_stale(time.monotonic() - self.batcher.linger)
                chunk = await queue.get()
            ticket = Ticket(chunk.seq, self._on_chunk_done, chunk.appended)
            transformer.process(chunk.payload, chunk.received_at, chunk.peer, ticket)
            ticket.seal()
            self._arm_linger()
            self._publish_transform_stats()
            if queue.unread:
                await asyncio.sleep(0)  # a turn for the shipper and the sockets between chunks

    def _batched_bytes(self) -> int:
        return self.shipper.pending_bytes + self.batcher.open_bytes

    def _on_chunk_done(self, seq: int) -> None:
        self.queue.ack(seq)

    def _on_batch_done(self) -> None:
        if self._batched_bytes() < self.config.batch.window_bytes:
            self._window_open.set()

    def _on_batch_closed(self, batch: Batch) -> None:
        self.shipper.submit(batch)

    def _arm_linger(self) -> None:
        """One timer for what waits on time: open batches (linger_ms) and open multiline groups (flush_ms)."""
        deadlines = [d for d in (self.batcher.next_deadline(), self._group_deadline()) if d is not None]
        if not deadlines:
            return
        loop = asyncio.get_running_loop()
        # The batcher's and the joiner's clock is time.monotonic, the same clock as the loop's on Linux.
        when = on_grid(loop.time(), max(0.0, min(deadlines) - time.monotonic()))
        if self._linger_timer is not None:
            if self._linger_timer.when() <= when:
                return
            self._linger_timer.cancel()
        self._linger_timer = loop.call_at(when, self._linger_expired)

    def _group_deadline(self) -> float | None:
        deadline = self.joiner.next_deadline()
        if deadline is not None and self.queue.unread:  # see _linger_expired: look again a grid step later
            deadline = max(deadline, time.monotonic() + GRID_S)
        return deadline

    def _linger_expired(self) -> None:
        self._linger_timer = None
        if not self.queue.unread:  # else a line that continues an open group may be waiting in the queue
            self.joiner.flush_expired(early_s=GRID_S)
            publish_join_counts(self.joiner.counts, self._totals.publish)
        self.batcher.close_expired(early_s=GRID_S)  # the timer fired on the grid, before the deadline
        self._arm_linger()

    def _publish_transform_stats(self) -> None:
        stats, publish = self.transformer.stats, self._totals.publish
        for reason, count in stats.parse_errors.items():
            publish(metrics.PARSE_ERRORS, count, reason=reason)
        publish(metrics.REPAIRS, stats.invalid_utf8_lines, reason="invalid_utf8")
        publish(metrics.REPAIRS, stats.replaced_times, reason="time_out_of_range")
        for (name, result), count in self.processors.counts.items():
            publish(metrics.PROCESSOR_EVENTS, count, processor=name, result=result)
        publish_join_counts(self.joiner.counts, publish)

    # -- shutdown ---------------------------------------------------------

    async def shutdown(self) -> ShutdownReport:
        timeout_s = FAILURE_SHUTDOWN_S if self.failed else self.config.shutdown_timeout_s
        deadline = time.monotonic() + timeout_s
        log.info("shutting down: shipping what is held (up to %.1f s)", timeout_s)
        self.notifier.stopping()
        self.receiver.stop_accepting()
        if self.relp is not None:
            self.relp.stop_accepting()
            await self.relp.close()  # sends the serverclose hint; unacknowledged frames are resent by rsyslog
        self.receiver.close_connections()
        clean = await self._drain(deadline)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        cancelled = await self.shipper.cancel_all()
        await self.shipper.close()
        await self.queue.flush()
        report = ShutdownReport(clean and cancelled == 0, self.queue.backlog_chunks, self.queue.backlog_bytes)
        if report.unshipped_bytes and isinstance(self.queue, DiskSpool):
            log.info(
                "%d lines (%d bytes) not shipped yet: kept in the spool for the next start",
                self.queue.unacked_lines(), report.unshipped_bytes,
            )
        elif report.unshipped_bytes:
            lost_lines = self.queue.unacked_lines()
            metrics.LOST_LINES.labels(reason="shutdown_deadline").inc(lost_lines)
            log.error(
                "shutdown deadline reached: %d lines (%d bytes) were not shipped and are lost "
                "(the memory queue does not survive a restart)", lost_lines, report.unshipped_bytes,
            )
        await self.queue.close()
        await self.status.close()
        await self.notifier.close()
        if self.output.ram_role is not None:
            await self.output.ram_role.close()
        return report

    async def _drain(self, deadline: float) -> bool:
        durable = isinstance(self.queue, DiskSpool)
        # The memory queue must be emptied or its lines are lost; the spool keeps its
        # backlog for the next start, so only what was already taken is shipped.
        while not durable and time.monotonic() < deadline:
            if self.queue.unread == 0 or self._consumer is None or self._consumer.done():
                break
            await asyncio.sleep(0.01)
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        self.joiner.flush_all()  # open multiline groups ship with the rest
        publish_join_counts(self.joiner.counts, self._totals.publish)
        self.batcher.close_all()
        if durable:
            self.shipper.stop_retrying()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self.shipper.wait_idle(), remaining)
        except asyncio.TimeoutError:
            return False
        return self.queue.backlog_chunks == 0


def _format_sockname(name) -> str:
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(name)


async def run(config: Config, config_path: Path | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (SIGHUP reloads ``config_path``); returns the process exit code."""
    agent = Agent(config, config_path)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(exits.FORCED)
        log.info("%s received", signal.Signals(signum).name)
        agent.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: spawn(agent.reload(), name="reload"))
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP: no config file to reload"))
    try:
        await agent.start()
    except SpoolError as exc:
        log.critical("cannot open the spool: %s", exc)
        return exits.FAILURE
    except OSError as exc:
        log.critical("cannot start: %s: %s", exc.filename or config.input.listen, exc.strerror or exc)
        await agent.queue.close()
        return exits.FAILURE
    await agent.wait_stopped()
    report = await agent.shutdown()
    if agent.failed:
        return exits.FAILURE
    if report.clean:
        log.info("stopped cleanly")
    return exits.OK
