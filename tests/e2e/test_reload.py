"""``slsfwd reload`` (SIGHUP) on the real agent: new routes, processors, [sls] and listen addresses
in force without closing a connection or losing a line; an invalid config changes nothing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, free_port, run_cli, sls_section
from tests.support.relp_client import Client
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e


def config_text(agent: AgentProcess, standin: PutLogsStandin, *, store: str, cfg: str, drop_noise: bool,
                listen_port: int | None = None, relp_port: int | None = None, extra: str = "") -> str:
    relp = f'relp_listen = "127.0.0.1:{relp_port}"\n' if relp_port else ""
    noise = ('[[processors]]\nname = "no-noise"\ntype = "drop"\nkey = "app-name"\nequals = "noise"\n'
             if drop_noise else "")
    return (
        f'[input]\nlisten = "127.0.0.1:{listen_port or agent.port}"\n{relp}'
        f'[batch]\nlinger_ms = 100\n[spool]\ndir = "{agent.spool_dir}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{agent.metrics_port}"\n'
        + sls_section(standin)
        + f'[[routes]]\ntag = "t"\nlogstore = "{store}"\n'
        + f'[[processors]]\nname = "mark"\ntype = "add_fields"\nfields = {{ cfg = "{cfg}" }}\n' + noise + extra
    )


def line(i: int, *, app: str = "app", what: str = "tcp") -> bytes:
    return f"0.1 t {int(time.time())} 127.0.0.1 web-1 user.info 0 {app} 1 -  {what} {i}\n".encode()


async def reload(agent: AgentProcess, text: str) -> tuple[int, str, str]:
    agent.config_path.write_text(text)
    return await run_cli("reload", "--config", str(agent.config_path), "--pid", str(agent.pid))


async def test_twenty_reloads_under_load_lose_nothing_and_close_no_connection(tmp_path: Path) -> None:
    relp_port = free_port()
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path)
        configs = [config_text(agent, standin, store="store-a", cfg="A", drop_noise=False, relp_port=relp_port),
                   config_text(agent, standin, store="store-b", cfg="B", drop_noise=True, relp_port=relp_port)]
        agent.config_text = configs[0]
        async with agent:
            _, tcp = await asyncio.open_connection("127.0.0.1", agent.port)
            relp = await Client.connect(relp_port)
            await relp.open()
            sent = {"tcp": 0, "noise": 0}
            stop = asyncio.Event()

            async def send_tcp() -> None:  # 50 lines every 10 ms: about 5,000 lines/s
                i = 0
                while not stop.is_set():
                    batch = b"".join(line(i + k, app="noise" if (i + k) % 10 == 0 else "app") for k in range(50))
                    tcp.write(batch)
                    await tcp.drain()
                    i += 50
                    await asyncio.sleep(0.01)
                sent["tcp"] = i

            async def send_relp() -> int:
                txnrs: list[int] = []
                i = 0
                while not stop.is_set():
                    txnrs += await relp.send_many([line(i + k, what="relp")[:-1] for k in range(20)])
                    i += 20
                    await asyncio.sleep(0.02)
                await relp.read(1 + len(txnrs) - len(relp.frames), timeout=20)  # the open's answer, then an ack each
                return i

            senders = asyncio.gather(send_tcp(), send_relp())
            connections = []
            for n in range(20):
                await asyncio.sleep(0.15)
                code, out, err = await reload(agent, configs[(n + 1) % 2])
                assert code == 0, err
                assert out.strip().endswith("reloaded")
                connections.append(await asyncio.to_thread(agent.metric, "slsfwd_input_connections"))
            stop.set()
            _, relp_lines = await senders
            assert not tcp.is_closing() and not relp.reader.at_eof()
            tcp.write(line(10**6, what="after"))  # the same connection still carries lines
            await tcp.drain()
            required = {f"tcp {i}" for i in range(sent["tcp"]) if i % 10} | {f"relp {i}" for i in range(relp_lines)}
            required.add("after 1000000")
            deadline = time.monotonic() + 60
            while not required <= {log.contents["msg"] for log in standin.logs} and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # noise lines of config A still in flight
            dropped = agent.metric("slsfwd_processor_events_total", processor="no-noise", result="dropped")
            assert agent.metric("slsfwd_config_reloads_total", result="success") == 20
            tcp.close()
            relp.close()
    assert connections == [1.0] * 20  # the TCP connection was never closed (RELP sessions have their own gauge)
    by_msg: dict[str, set[str]] = {}
    for log in standin.logs:
        # Route and processors of one line come from one config: store-a carries A's mark, store-b B's.
        assert (log.logstore, log.contents["cfg"]) in {("store-a", "A"), ("store-b", "B")}, log
        assert not (log.contents["cfg"] == "B" and log.contents["app-name"] == "noise")
        by_msg.setdefault(log.contents["msg"], set()).add(log.logstore)
    assert required <= set(by_msg)  # every line that no config drops arrived
    noise = {f"tcp {i}" for i in range(0, sent["tcp"], 10)}
    noise_delivered = len(noise & set(by_msg))
    assert noise_delivered + dropped >= len(noise)  # a noise line was shipped (config A) or counted as dropped (B)
    assert {s for stores in by_msg.values() for s in stores} == {"store-a", "store-b"}


async def test_an_invalid_config_keeps_the_running_one(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path)
        agent.config_text = config_text(agent, standin, store="store-a", cfg="A", drop_noise=False)
        async with agent:
            broken = agent.config_text + '[[processors]]\nname = "bad"\ntype = "mask"\npattern = "(a)\\\\1"\n'
            code, out, err = await reload(agent, broken)
            assert code == 1
            assert "processors[1].pattern: not a pattern RE2 accepts" in err
            assert "not reloaded; the agent runs on its previous config" in err
            assert "reload refused: " in agent.stderr() and "processors[1].pattern" in agent.stderr()
            assert agent.metric("slsfwd_config_reloads_total", result="failure") == 1
            assert agent.metric("slsfwd_config_last_reload_successful") == 0
            await agent.send(line(1))
            await standin.wait_for_logs(1, timeout=15)
    (log,) = standin.logs
    assert (log.logstore, log.contents["cfg"]) == ("store-a", "A")


async def test_a_new_listen_address_accepts_before_the_old_one_closes(tmp_path: Path) -> None:
    new_port = free_port()
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path)
        agent.config_text = config_text(agent, standin, store="store-a", cfg="A", drop_noise=False)
        async with agent:
            _, old_connection = await asyncio.open_connection("127.0.0.1", agent.port)
            old_connection.write(line(1))
            await old_connection.drain()
            code, _, err = await reload(agent, config_text(agent, standin, store="store-a", cfg="A", drop_noise=False,
                                                            listen_port=new_port))
            assert code == 0, err
            _, new_connection = await asyncio.open_connection("127.0.0.1", new_port)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", agent.port)
            old_connection.write(line(2))  # opened before the reload: still read
            new_connection.write(line(3))
            await asyncio.gather(old_connection.drain(), new_connection.drain())
            await standin.wait_for_logs(3, timeout=15)
            old_connection.close()
            new_connection.close()
            agent.port = new_port  # where the agent listens now (AgentProcess checks it on stop)
    assert sorted(log.contents["msg"] for log in standin.logs) == ["tcp 1", "tcp 2", "tcp 3"]


async def test_a_reload_during_an_outage_sends_the_backlog_to_the_new_endpoint(tmp_path: Path) -> None:
    """Refused for credentials, the agent holds the backlog and retries every 30 s; a reload that
    fixes the output is tried at once."""
    async with PutLogsStandin() as down, PutLogsStandin() as healthy:
        down.faults.when(lambda _i: True, Fault.error(401, "Unauthorized"))
        agent = AgentProcess(tmp_path)
        agent.config_text = config_text(agent, down, store="store-a", cfg="A", drop_noise=False)
        async with agent:
            await agent.send(b"".join(line(i) for i in range(2000)))
            await agent.wait_for_metric("slsfwd_spool_backlog_lines", 2000)
            await agent.wait_for_metric("slsfwd_ship_retries_total", 1, reason="hold")
            code, _, err = await reload(agent, config_text(agent, healthy, store="store-b", cfg="B", drop_noise=False))
            assert code == 0, err
            started = time.monotonic()
            await healthy.wait_for_logs(2000, timeout=30)
            assert time.monotonic() - started < 10  # paused retries try the new endpoint at once
    assert down.log_count == 0
    assert {log.contents["msg"] for log in healthy.logs} == {f"tcp {i}" for i in range(2000)}
    # Parsed before the reload, so they keep the destination and marks they were given.
    assert {(log.logstore, log.contents["cfg"]) for log in healthy.logs} == {("store-a", "A")}


async def test_keys_that_need_a_restart_are_refused_and_the_rest_applies(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path)
        agent.config_text = config_text(agent, standin, store="store-a", cfg="A", drop_noise=False)
        async with agent:
            moved = config_text(agent, standin, store="store-b", cfg="B", drop_noise=False).replace(
                f'dir = "{agent.spool_dir}"', f'dir = "{tmp_path / "elsewhere"}"'
            )
            code, out, err = await reload(agent, moved)
            assert code == 0, err
            assert "spool.dir: changed, takes effect after a restart" in out
            assert agent.metric("slsfwd_config_restart_pending") == 1
            await agent.send(line(1))
            await standin.wait_for_logs(1, timeout=15)
            agent.config_path.write_text(agent.config_text)  # as it was, for the stop
    (log,) = standin.logs
    assert (log.logstore, log.contents["cfg"]) == ("store-b", "B")
    assert not (tmp_path / "elsewhere").exists()


async def test_reload_signals_only_an_agent(tmp_path: Path) -> None:
    """The status file names the pid to signal; a file that names another process is not obeyed."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "reload-status.json").write_text(f'{{"pid": {os.getpid()}, "generation": 0}}')
    config = tmp_path / "slsfwd.toml"
    config.write_text(f'[spool]\ndir = "{state}"\n')
    code, _, err = await run_cli("reload", "--config", str(config))
    assert code == 1
    assert f"pid {os.getpid()} in {state / 'reload-status.json'} is not a running `slsfwd run`" in err
