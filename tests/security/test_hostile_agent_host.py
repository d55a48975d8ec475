"""The host treats its own agent as hostile (issue 23, item 2): whatever a taken-over agent sends
back, the host reads no more than the call asked for, within the call's one deadline, and unpacks
its tars with the strict routine. Each test fails on the code before that issue."""
from __future__ import annotations

import asyncio
import io
import lzma
import os
import tarfile
import time

import pytest

from hostile_agent import HEADER, HostileAgent, drip, reply
from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.agentclient.blocking import AgentClient, AgentGone
from tumbler.errors import InvalidRequest

pytestmark = [pytest.mark.security]


class Counting:
    """A handler that claims a huge body and counts how much of it the host took."""

    def __init__(self, claim: int = 512 << 20):
        self.claim, self.sent = claim, 0

    def __call__(self, sock, header, _body):
        head = f'{{"id":{header["id"]},"ok":true,"result":{{}}}}'.encode()
        sock.sendall(HEADER.pack(len(head), self.claim) + head)
        chunk = bytes(1 << 20)
        while self.sent < self.claim:
            sock.sendall(chunk)
            self.sent += len(chunk)


def test_blocking_client_reads_no_more_than_asked(tmp_path):
    """read_bytes(length=16) took the host process from 32 to 2,080 MiB."""
    big = Counting()
    with HostileAgent(tmp_path / "a.sock", {"file.read": big}) as agent:
        with pytest.raises(AgentGone, match="over the 16 bytes"):
            AgentClient(agent.path).call("file.read", {"path": "/x", "length": 16}, timeout=30)
    assert big.sent < 16 << 20, f"the host read {big.sent >> 20} MiB of a reply it capped at 16 bytes"


def test_blocking_client_caps_ops_that_return_no_data(tmp_path):
    big = Counting()
    with HostileAgent(tmp_path / "a.sock", {"file.stat": big}) as agent:
        with pytest.raises(AgentGone):
            AgentClient(agent.path).call("file.stat", {"path": "/x"}, timeout=30)
    assert big.sent < 16 << 20


def test_blocking_client_deadline_bounds_the_whole_call(tmp_path):
    """An agent dripping one event at a time kept run(timeout=2) blocked as long as it liked."""
    with HostileAgent(tmp_path / "a.sock", {"session.run": drip(0.1)}) as agent:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            AgentClient(agent.path).call("session.run", {"name": "s", "command": "x"},
                                         timeout=1.0, on_event=lambda *_: None)
        took = time.monotonic() - started
    assert took < 10, f"a 1 s call lasted {took:.1f} s"   # not a timing assert: the old code never returned


def test_blocking_client_caps_streamed_events(tmp_path):
    """All of a call's events together are held to its output cap too."""
    with HostileAgent(tmp_path / "a.sock", {"session.run": drip(0)}) as agent:
        with pytest.raises(AgentGone, match="may still receive"):
            AgentClient(agent.path).call("session.run", {"name": "s", "command": "x",
                                                         "max_output": 1000},
                                         timeout=60, on_event=lambda *_: None)


def test_async_client_refuses_a_frame_over_what_was_asked(tmp_path):
    """Two hostile sandboxes answering with 512 MiB frames took the server to 1.1 GiB resident."""
    big = Counting()

    async def go():
        client = AsyncAgentClient(str(tmp_path / "a.sock"))
        try:
            with pytest.raises(AgentGone, match="at most 16 bytes"):
                await client.call("file.read", {"path": "/x", "length": 16}, timeout=30)
        finally:
            await client.close()

    with HostileAgent(tmp_path / "a.sock", {"file.read": big}):
        asyncio.run(go())
    assert big.sent < 16 << 20, f"the server read {big.sent >> 20} MiB of a reply capped at 16 bytes"


def test_async_client_deadline_bounds_a_dripping_agent(tmp_path):
    async def go():
        client = AsyncAgentClient(str(tmp_path / "a.sock"))
        try:
            with pytest.raises(TimeoutError):
                await client.call("session.run", {"name": "s", "command": "x"}, timeout=1.0,
                                  on_event=lambda *_: None)
        finally:
            await client.close()

    with HostileAgent(tmp_path / "a.sock", {"session.run": drip(0.1)}):
        asyncio.run(go())


def _forged_tar() -> bytes:
    """The CVE-2025-4517 shape: `filter="data"` on Python 3.11.7 let it write outside."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        path, comp, steps = "", "d" * 247, "abcdefghijklmnop"
        for step in steps:
            d = tarfile.TarInfo(os.path.join(path, comp))
            d.type = tarfile.DIRTYPE
            tar.addfile(d)
            s = tarfile.TarInfo(os.path.join(path, step))
            s.type, s.linkname = tarfile.SYMTYPE, comp
            tar.addfile(s)
            path = os.path.join(path, comp)
        link = tarfile.TarInfo(os.path.join(*steps, "l" * 254))
        link.type, link.linkname = tarfile.SYMTYPE, "../" * len(steps)
        tar.addfile(link)
        esc = tarfile.TarInfo("escape")
        esc.type, esc.linkname = tarfile.SYMTYPE, link.name + "/../../outside"
        tar.addfile(esc)
        f = tarfile.TarInfo("escape/pwned")
        f.size = 5
        tar.addfile(f, io.BytesIO(b"owned"))
    return buf.getvalue()


def _dir_stat(sock, header, _body):
    reply({"path": header["args"]["path"], "type": "dir", "size": 0, "mode": 0o40755,
           "uid": 0, "gid": 0, "mtime": 0.0})(sock, header, _body)


@pytest.mark.parametrize("body,what", [
    (_forged_tar(), "a forged tar with a symlink chain out"),
    (lzma.compress(bytes(64 << 20)), "a 64 MiB bomb in a small xz body"),
])
def test_local_download_of_a_forged_tar_writes_nothing_outside(make_sandbox, tmp_path, body, what):
    """LocalSandbox.download() of a directory, with the sandbox's agent taken over."""
    sb = make_sandbox()
    base = tmp_path / "host"
    (base / "outside").mkdir(parents=True)
    with HostileAgent(tmp_path / "a.sock", {"file.stat": _dir_stat,
                                            "file.download_tar": reply({"size": len(body)}, body)}) as agent:
        real, sb._agent = sb._agent, AgentClient(agent.path)
        try:
            with pytest.raises(InvalidRequest):
                sb.download("/root/project", base / "dest")
        finally:
            sb._agent.close()
            sb._agent = real
    assert list((base / "outside").iterdir()) == [], what
    written = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
    assert written == 0, f"{what}: {written} bytes written on the host"


def test_async_client_started_requests_and_cancelled_calls_leave_nothing_behind(tmp_path):
    """start()/outcome(), the server run stream's way (no task per request), say what call()
    says, and neither they nor a cancelled call leave a pending entry or timer behind."""
    async def go():
        client = AsyncAgentClient(str(tmp_path / "a.sock"))
        request = ("session.run", {"name": "s", "command": "x"})
        try:
            assert client.start(*request, timeout=5) is None   # no connection open yet
            assert await client.call("file.stat", {"path": "/x"}, timeout=5) == ({"size": 1}, b"")
            started = client.start("file.stat", {"path": "/x"}, timeout=5)
            await asyncio.wait([started])
            assert client.outcome(started, "file.stat") == ({"size": 1}, b"")
            silent = client.start(*request, timeout=0.3)   # the agent never answers it
            await asyncio.wait([silent])
            with pytest.raises(TimeoutError):
                client.outcome(silent, "session.run")
            hung = asyncio.ensure_future(client.call(*request, timeout=30))
            await asyncio.sleep(0.2)
            hung.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hung
            await asyncio.sleep(0)
            assert client._pending == {}, client._pending
            huge = client.start("file.read", {"path": "/x", "length": 16}, timeout=30)
            await asyncio.wait([huge])
            with pytest.raises(AgentGone, match="at most 16 bytes"):
                client.outcome(huge, "file.read")
            await asyncio.sleep(0)
            assert client._pending == {}, client._pending
        finally:
            await client.close()

    handlers = {"file.stat": reply({"size": 1}), "session.run": lambda *_: None,
                "file.read": Counting()}
    with HostileAgent(tmp_path / "a.sock", handlers):
        asyncio.run(go())
