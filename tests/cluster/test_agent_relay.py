"""A node host's agent relay (no Ray): the server's cluster mode reaches a sandbox's agent over
one TCP connection to the host, opened with the host's secret. Exact bytes both ways (a
streamed command, a file larger than the relay's buffers), and nothing for a caller without the
secret, for a sandbox the host does not run, or for a line that never ends; the host's close
drops every connection."""
from __future__ import annotations

import asyncio
import os
import socket

import pytest

from checks import IMAGE, leftovers
from tumbler import ops
from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.agentclient.blocking import AgentGone
from tumbler.cluster import NodeHost, agentrelay, host_id_for
from tumbler.cluster.agentrelay import dial, opening
from tumbler.runtime.spec import Limits, SandboxSpec

SPEC = SandboxSpec(image=IMAGE, limits=Limits(memory="128m"))


def _client(info, sandbox_id: str, token: str | None = None) -> AsyncAgentClient:
    return AsyncAgentClient(f"relay {info.agents}",
                            connect=dial(info.agents, token or info.agents_token, sandbox_id))


async def _do(client: AsyncAgentClient, op: ops.Op, on_event=None):
    return op.parse(*await client.call(op.name, op.args, op.body, timeout=op.timeout,
                                       on_event=on_event))


def _raw(address: str, data: bytes, wait_s: float = 5.0) -> bytes:
    """Send `data` to the relay and read until it closes -> what came back."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
        return got


def test_the_relay_carries_an_agent_exactly_and_only_with_the_secret(runtime):
    async def scenario():
        host = NodeHost(host_id_for("test", f"relay-{os.getpid()}"))
        [sid, other] = await host.create([SPEC, SPEC])
        try:
            info = await host.info()
            assert info.agents and info.agents_token
            assert "agents_token" not in info.model_dump()          # never in what is shown
            client = _client(info, sid)
            result = await _do(client, ops.run("printf 'a\\tb\\r\\n'; (exit 3)"))
            assert (result.output_bytes, result.exit_code) == (b"a\tb\r\n", 3)
            events = []
            streamed = await _do(client, ops.run("for i in 1 2 3; do echo $i; sleep 0.05; done",
                                                 stream=True),
                                 on_event=lambda h, chunk: events.append(chunk))
            assert streamed.exit_code == 0 and b"".join(events) == b"1\n2\n3\n"
            # more than the relay's write buffer and the sockets' (flow control, nothing lost)
            blob = os.urandom(3 * agentrelay.HIGH_WATER + 12345)
            await _do(client, ops.write_file("/tmp/blob", blob))
            assert await _do(client, ops.read_file("/tmp/blob")) == blob
            assert host._relay.connections == 1                     # noqa: SLF001
            await client.close()

            for bad in (_client(info, sid, token="0" * 64),          # a wrong secret
                        _client(info, "nosuch"),                     # no such sandbox here
                        _client(info, "../" + sid)):                 # not an id
                with pytest.raises(AgentGone):
                    await _do(bad, ops.health())
                await bad.close()
            # a line with no end is cut at its cap; a bare token without the magic is refused
            assert await asyncio.to_thread(_raw, info.agents, b"x" * (agentrelay.MAX_LINE + 10)) == b""
            assert await asyncio.to_thread(_raw, info.agents, info.agents_token.encode() + b"\n") == b""

            # a stopped sandbox is not reached; the other one is, on its own connection
            await host.runtime_calls([(sid, ("stop", (sid,)))])
            stopped = _client(info, sid)
            with pytest.raises(AgentGone):
                await _do(stopped, ops.health())
            await stopped.close()
            alive = _client(info, other)
            assert (await _do(alive, ops.run("echo $HOSTNAME"))).exit_code == 0
        finally:
            assert await host.remove([sid, other]) == [None, None]
        # the host's close drops what is still connected and stops listening
        with pytest.raises(AgentGone):
            await _do(alive, ops.health())
        await alive.close()
        assert await host.close() == 0
        with pytest.raises(OSError):
            await asyncio.to_thread(_raw, info.agents, opening(info.agents_token, other))
        for each in (sid, other):
            assert leftovers(runtime, each) == []
    asyncio.run(scenario())


def test_a_silent_connection_is_dropped(runtime, monkeypatch):
    monkeypatch.setattr(agentrelay, "OPEN_TIMEOUT_S", 0.3)

    async def scenario():
        host = NodeHost(host_id_for("test", f"relay-silent-{os.getpid()}"))
        info = await host.info()
        try:
            # closed by the relay at its opening timeout (_raw's own 5 s wait would raise)
            assert await asyncio.to_thread(_raw, info.agents, b"TUMBLER-AGENT1 ") == b""
        finally:
            assert await host.close() == 0
    asyncio.run(scenario())
