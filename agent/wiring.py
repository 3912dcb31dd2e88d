"""The agent's parts as a config describes them: built at start, and again by a reload."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

from agent.output.console import ConsoleSink
from agent.output.credentials import EcsRamRoleProvider
from agent.output.putlogs import ClockOffsetSigner, client_for
from agent.output.ship import PutLogsSink, Sink
from agent.pipeline import join
from agent.pipeline.batch import Destination
from agent.pipeline.parse import LineFormat, build_format_table
from agent.pipeline.processors import RESULTS, ChainSet, build_chain_set
from agent.pipeline.transform import Router
from agent.spool.queue import ChunkQueue, MemoryQueue

from .config import Config, SlsConfig, SpoolConfig
from .ops import hostinfo, metrics
from .ops.wakeups import GRID_S
from .spool import DiskSpool


class Output(NamedTuple):
    sink: Sink
    signer: ClockOffsetSigner | None  # PutLogs only: corrected from the service's clock
    ram_role: EcsRamRoleProvider | None  # the caller starts and closes it


def make_output(sls: SlsConfig | None) -> Output:
    if sls is None:
        return Output(ConsoleSink(), None, None)
    client, ram_role = client_for(sls)
    return Output(PutLogsSink(client), client.signer, ram_role)


async def close_output(output: Output) -> None:
    await output.sink.close()
    if output.ram_role is not None:
        await output.ram_role.close()


def make_queue(spool: SpoolConfig) -> ChunkQueue:
    if spool.type == "memory":
        return MemoryQueue(spool.max_bytes)
    return DiskSpool(
        Path(spool.dir), max_bytes=spool.max_bytes, fsync_ms=spool.fsync_ms, full_policy=spool.full_policy,
        segment_bytes=spool.segment_bytes, read_ahead_bytes=spool.read_ahead_bytes,
    )


def make_router(config: Config) -> Router:
    sls = config.sls
    if sls is None:
        return Router(Destination("console", "console", ""), {})
    default = Destination(sls.project, sls.logstore, sls.topic)
    by_tag = {r.tag: Destination(r.project or sls.project, r.logstore, r.topic or sls.topic) for r in config.routes}
    return Router(default, by_tag)


def make_formats(config: Config) -> dict[bytes, LineFormat]:
    return build_format_table({f.version: f.fields for f in config.input.formats})


def host_ip_for(config: Config) -> str:
    return config.sls.source_ip if config.sls and config.sls.source_ip else hostinfo.primary_ipv4()


def make_processors(config: Config, counts: Counter | None = None) -> ChainSet:
    processors = build_chain_set(config.processors, counts)
    for processor in config.processors:  # every series exists from the start, for dashboards and alerts
        name = processor.name
        if processor.type != "multiline":
            for result in RESULTS:
                metrics.PROCESSOR_EVENTS.labels(processor=name, result=result)
            continue
        for counter in (metrics.MULTILINE_GROUPS, metrics.MULTILINE_JOINED_LINES, metrics.MULTILINE_TIMER_FLUSHES):
            counter.labels(processor=name)
        for reason in ("max_lines", "max_bytes"):
            metrics.MULTILINE_CUT_GROUPS.labels(processor=name, reason=reason)
    return processors


def read_delay_s(config: Config) -> float:
    """How late the input may read a line that arrived (read coalescing, on the timer grid)."""
    return config.input.read_coalesce_ms / 1000.0 + GRID_S


_JOIN_COUNTERS = {
    join.GROUPS: (metrics.MULTILINE_GROUPS, {}),
    join.JOINED_LINES: (metrics.MULTILINE_JOINED_LINES, {}),
    join.TIMER_FLUSHES: (metrics.MULTILINE_TIMER_FLUSHES, {}),
    join.CUT_MAX_LINES: (metrics.MULTILINE_CUT_GROUPS, {"reason": "max_lines"}),
    join.CUT_MAX_BYTES: (metrics.MULTILINE_CUT_GROUPS, {"reason": "max_bytes"}),
}


def publish_join_counts(counts: Counter, publish: Callable[..., None]) -> None:
    """The joiner's running totals to their counters (``publish``: TotalsMirror.publish)."""
    for (name, event), total in counts.items():
        counter, labels = _JOIN_COUNTERS[event]
        publish(counter, total, processor=name, **labels)
