"""One user session played against LocalSandbox, a server's Sandbox and AsyncSandbox: the same
results and the same exception types (the handle issue's parity suite). The cluster transport's
share is in tests/cluster/test_cluster_handle.py."""
from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from checks import IMAGE
from tumbler import Sandbox
from tumbler.errors import Conflict, InvalidRequest, NotFound


class Blocking:
    """An AsyncSandbox (or AsyncSession) driven from this thread: each method awaited on the
    loop that made it, so the same script runs against it."""

    def __init__(self, target, loop):
        self._target, self._loop = target, loop

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run_coroutine_threadsafe(result, self._loop).result(120)
            if type(result).__name__ == "AsyncSession":
                return Blocking(result, self._loop)
            return result
        return call


def session(sb, tmp_path) -> dict:
    """A user's session; returns everything observable, errors as their types."""
    out: dict = {}

    def catch(key, fn):
        try:
            out[key] = fn()
        except Exception as exc:   # the type is what is compared
            out[key] = type(exc).__name__

    out["run"] = sb.run("cd /tmp && export G=hi; echo $G from $PWD; false").model_dump(exclude={"duration_s"})
    out["kept"] = sb.run("echo $G $PWD").output
    out["timeout"] = (lambda r: (r.timed_out, r.exit_code, r.session_alive))(sb.run("sleep 30", timeout=0.3))
    out["after_timeout"] = sb.run("echo ok").output
    out["exit"] = sb.run("exit 3").model_dump(exclude={"duration_s"})
    out["fresh"] = sb.run("echo ${G:-fresh} $PWD").output
    s = sb.session("named", env={"W": "x"}, cwd="/etc")
    out["named"] = s.run("echo $W $PWD").output
    out["names"] = sorted(x["name"] for x in sb.sessions())

    # input to a command that waits for it, typed from another thread
    results = {}
    reader = threading.Thread(target=lambda: results.update(r=s.run("read x; echo got:$x", timeout=20)))
    reader.start()
    time.sleep(0.5)
    s.input("answer\n")
    reader.join(30)
    out["input"] = results["r"].output
    out["interrupt_idle"] = s.interrupt()
    s.close()
    catch("closed_session", lambda: s.run("true"))

    e = sb.exec(["sh", "-c", "printf 'a\\0b'; echo err >&2; exit 4"], stdin=b"")
    out["exec"] = (e.stdout_bytes, e.stderr_bytes, e.exit_code)
    out["exec_stdin"] = sb.exec(["cat"], stdin=b"\xff\x00in").stdout_bytes
    sb.write_file("/root/d/a.bin", bytes(range(256)), mode=0o600)
    out["read"] = sb.read_bytes("/root/d/a.bin", offset=250)
    out["stat"] = (lambda i: (i.type, i.size, i.mode & 0o777))(sb.stat("/root/d/a.bin"))
    out["list"] = [i.path.rsplit("/", 1)[-1] for i in sb.list_dir("/root/d")]
    src = tmp_path / "up"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("up")
    sb.upload(src, "/root/up")
    sb.download("/root/up", tmp_path / "down")
    out["roundtrip"] = (tmp_path / "down" / "sub" / "f.txt").read_text()
    out["ps"] = any("sleep" not in p.cmd for p in sb.processes())
    out["stats_pids"] = sb.stats().pids > 0

    catch("missing_file", lambda: sb.read_bytes("/nope"))
    catch("bad_timeout", lambda: sb.run("true", timeout=0))
    catch("bad_path", lambda: sb.stat("relative"))
    sb.reset()
    catch("after_reset", lambda: sb.read_bytes("/root/d/a.bin"))
    out["after_reset_run"] = sb.run("echo ${G:-clean}").output
    return out


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_local_server_and_async_sandboxes_behave_the_same(make_sandbox, api, new_aclient, loop, tmp_path):
    local = session(make_sandbox(), tmp_path / "local")
    remote = session(Sandbox(IMAGE, client=api), tmp_path / "remote")

    async def make():
        client = new_aclient()
        return client, await client.create(IMAGE)
    client, asb = asyncio.run_coroutine_threadsafe(make(), loop).result(60)
    try:
        aio = session(Blocking(asb, loop), tmp_path / "aio")
    finally:
        async def done():
            await asb.remove()
            await client.close()
        asyncio.run_coroutine_threadsafe(done(), loop).result(60)

    assert local["exit"]["session_alive"] is False and local["fresh"] == "fresh /root\n"
    assert local["missing_file"] == NotFound.__name__
    assert local["bad_timeout"] == InvalidRequest.__name__
    assert local["closed_session"] == NotFound.__name__ or local["closed_session"] == Conflict.__name__
    for key in local:
        assert remote[key] == local[key], (key, local[key], remote[key])
        assert aio[key] == local[key], (key, local[key], aio[key])
