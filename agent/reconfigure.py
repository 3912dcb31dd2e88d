"""A reload's valid config put in force on the running agent, part by part (see :mod:`agent.reload`).

New listen addresses are bound first: if one cannot be, nothing has changed
yet and the reload fails whole. Then, in one loop turn, the input limits, the
pipeline (formats, routes, processors, batch limits) and the output (``[sls]``)
are switched; the old output is closed once its requests in flight have had
their timeout.
"""

from __future__ import annotations

import asyncio
import logging

from agent.ops.supervise import spawn

from .config import Config, split_host_port
from .wiring import (
    Output,
    close_output,
    host_ip_for,
    make_formats,
    make_output,
    make_processors,
    make_router,
    read_delay_s,
)

log = logging.getLogger("slsfwd")


async def apply_config(agent, new: Config) -> None:
    """Put ``new`` in force on ``agent`` (an :class:`agent.app.Agent`); OSError if a new address cannot be bound."""
    old = agent.config
    tcp_server = relp_server = None
    if new.input.listen != old.input.listen:
        tcp_server = await agent.receiver.open_server(*split_host_port(new.input.listen))
    if new.input.relp_listen and new.input.relp_listen != old.input.relp_listen:
        fresh = agent.relp is None
        if fresh:
            agent.relp = agent.make_relp(new)
        try:
            relp_server = await agent.relp.open_server(*split_host_port(new.input.relp_listen))
        except OSError:
            if fresh:
                agent.relp = None
            if tcp_server is not None:
                tcp_server.close()
            raise
    if tcp_server is not None:
        agent.receiver.switch_to(tcp_server)
    if relp_server is not None:
        agent.relp.switch_to(relp_server)
    elif old.input.relp_listen and not new.input.relp_listen:
        await _stop_relp(agent)
    _apply_input(agent, new)
    _apply_pipeline(agent, new)
    if new.sls != old.sls:
        await _apply_output(agent, new)
    logging.getLogger().setLevel(new.log_level.upper())
    agent.config = new


def _apply_input(agent, new: Config) -> None:
    agent.receiver.max_connections = new.input.max_connections
    agent.receiver.coalesce_s = new.input.read_coalesce_ms / 1000.0
    agent.joiner.read_delay_s = read_delay_s(new)
    agent.receiver.set_max_line_bytes(new.input.max_line_bytes)
    if agent.relp is not None:
        agent.relp.max_connections = new.input.max_connections
        agent.relp.max_unacked_frames = new.input.relp_max_unacked_frames
        agent.relp.max_unacked_bytes = new.input.relp_max_unacked_bytes


def _apply_pipeline(agent, new: Config) -> None:
    agent.batcher.max_logs = new.batch.max_logs
    agent.batcher.max_bytes = new.batch.max_bytes
    agent.batcher.linger = new.batch.linger_ms / 1000.0
    agent.processors = make_processors(new, agent.processors.counts)
    agent.transformer.reconfigure(
        formats=make_formats(new), router=make_router(new), host_ip=host_ip_for(new), processors=agent.processors
    )


async def _apply_output(agent, new: Config) -> None:
    output = make_output(new.sls)
    if output.ram_role is not None:
        await output.ram_role.start()
    previous, agent.output = agent.output, output
    await agent.shipper.use_output(
        output.sink,
        signer=output.signer,
        refresh_credentials=output.ram_role.force_refresh if output.ram_role else None,
        max_in_flight=new.sls.max_in_flight if new.sls else 1,
    )
    grace = agent.config.sls.request_timeout_s if agent.config.sls else 0.0
    spawn(_retire(previous, grace), name="retire-output")


async def _retire(output: Output, grace_s: float) -> None:
    await asyncio.sleep(grace_s)  # a request already sent finishes (or times out) on the old connection
    await close_output(output)


async def _stop_relp(agent) -> None:
    relp, agent.relp = agent.relp, None
    relp.stop_accepting()
    await relp.close()  # the serverclose hint: rsyslog resends what was not acknowledged
    log.info("RELP input stopped (input.relp_listen removed)")
