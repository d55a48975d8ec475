"""The official `e2b` SDK (pinned in the dev extra), unmodified, against a real `tumbler serve`
with real sandboxes: the control plane and envd's data plane (docs/E2B_COMPAT.md)."""
from __future__ import annotations

import time

import httpx
import pytest

from checks import wait_for
from server_process import TOKEN

e2b = pytest.importorskip("e2b")
from e2b import (CommandExitException, NotFoundException, PtySize, Sandbox,  # noqa: E402
                 SandboxQuery)


@pytest.fixture
def e2b_env(server, api, monkeypatch):
    """Point the SDK at the test server: one URL for the API and every sandbox."""
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", TOKEN)
    return server


@pytest.fixture
def sbx(e2b_env):
    sb = Sandbox.create(timeout=300, envs={"FROM_CREATE": "yes"}, metadata={"suite": "e2b"})
    yield sb
    try:
        sb.kill()
    except Exception:
        pass


def test_commands_foreground_background_stdin_and_exit_codes(sbx):
    r = sbx.commands.run("echo out $FROM_CREATE; echo err >&2; pwd")
    assert (r.stdout, r.stderr, r.exit_code) == ("out yes\n/root\n", "err\n", 0)
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo nope; exit 3")
    assert info.value.exit_code == 3 and info.value.stdout == "nope\n"

    seen = []
    r = sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.1; done",
                         on_stdout=seen.append, envs={"X": "1"})
    assert "".join(seen) == "line1\nline2\nline3\n" == r.stdout

    handle = sbx.commands.run("read a; echo got:$a", background=True, stdin=True)
    assert handle.pid in [p.pid for p in sbx.commands.list()]
    sbx.commands.send_stdin(handle.pid, "hello\n")
    assert handle.wait().stdout == "got:hello\n"

    late = sbx.commands.run("sleep 1; echo late", background=True)
    follower = sbx.commands.connect(late.pid)                   # envd's Connect: from now on
    assert follower.wait().stdout == "late\n"

    assert sbx.commands.run("id -un", user="root").stdout == "root\n"
    assert sbx.commands.run("id -un").stdout == "root\n"      # E2B's "user": root here

    sleeper = sbx.commands.run("sleep 30", background=True)
    assert sleeper.kill()
    with pytest.raises(CommandExitException):                   # killed: not a clean exit
        sleeper.wait()
    assert sleeper.pid not in [p.pid for p in sbx.commands.list()]


def test_pty_runs_an_interactive_shell_and_resizes(sbx):
    out = bytearray()
    term = sbx.pty.create(PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(term.pid, b"stty size; tty; exit 7\n")
    with pytest.raises(CommandExitException) as info:
        term.wait(on_pty=out.extend)
    assert info.value.exit_code == 7
    assert b"30 100" in out and b"/dev/pts/" in out

    out.clear()
    term = sbx.pty.create(PtySize(rows=30, cols=100))
    sbx.pty.resize(term.pid, PtySize(rows=40, cols=120))
    sbx.pty.send_stdin(term.pid, b"stty size; exit\n")
    assert term.wait(on_pty=out.extend).exit_code == 0
    assert b"40 120" in out


def test_files_write_read_list_and_errors(sbx):
    info = sbx.files.write("/root/dir/a.txt", "hello")
    assert info.path == "/root/dir/a.txt"
    assert sbx.files.read("/root/dir/a.txt") == "hello"
    assert sbx.files.read("dir/a.txt") == "hello"                  # relative to the home
    sbx.files.write("/root/bin.dat", b"\x00\xff" * 1000)
    assert sbx.files.read("/root/bin.dat", format="bytes") == b"\x00\xff" * 1000
    names = {e.name: e for e in sbx.files.list("/root")}
    assert names["dir"].type.value == "dir" and names["bin.dat"].size == 2000
    assert sbx.files.exists("/root/dir/a.txt") and not sbx.files.exists("/root/none")
    assert sbx.files.make_dir("/root/new") is True
    assert sbx.files.make_dir("/root/new") is False                # exists already
    sbx.files.rename("/root/dir/a.txt", "/root/new/b.txt")
    assert sbx.files.read("/root/new/b.txt") == "hello"
    sbx.files.remove("/root/new")
    assert not sbx.files.exists("/root/new/b.txt")
    with pytest.raises(NotFoundException):
        sbx.files.read("/root/missing.txt")
    assert sbx.commands.run("cat /root/bin.dat | wc -c").stdout.strip() == "2000"
    big = bytes(range(256)) * 4096                             # 1 MiB: past the JSON body limit
    sbx.files.write("/root/big.bin", big)
    assert sbx.files.read("/root/big.bin", format="bytes") == big


def test_watch_dir_sees_creates_writes_and_removes(sbx):
    sbx.files.make_dir("/root/w")
    watch = sbx.files.watch_dir("/root/w")
    sbx.files.write("/root/w/f.txt", "1")
    events = wait_for(lambda: watch.get_new_events(), 10, "a create event")
    assert ("f.txt", "create") in {(e.name, e.type.value) for e in events}
    sbx.commands.run("sleep 1.1; echo more >> /root/w/f.txt; rm -f /root/w/gone; touch /root/w/gone")
    sbx.commands.run("rm /root/w/gone")
    kinds = set()
    wait_for(lambda: kinds.update(e.type.value for e in watch.get_new_events()) or "write" in kinds,
             10, "a write event")
    watch.stop()


def test_list_timeout_pause_resume_connect_and_kill(sbx, e2b_env):
    listed = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b"})).next_items()]
    assert sbx.sandbox_id in listed
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": "other"})).next_items() == []
    info = sbx.get_info()
    assert info.metadata == {"suite": "e2b"} and info.state.value == "running"

    sbx.set_timeout(60)
    end = Sandbox.get_info(sbx.sandbox_id).end_at.timestamp()
    assert 50 < end - time.time() <= 61

    sbx.commands.run("echo kept > /root/k")
    assert sbx.pause()
    assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
    assert sbx.sandbox_id in [s.sandbox_id for s in Sandbox.list(
        query=SandboxQuery(state=[e2b.SandboxState.PAUSED])).next_items()]
    again = Sandbox.connect(sbx.sandbox_id)                      # resumes a paused one
    assert again.commands.run("cat /root/k").stdout == "kept\n"
    assert again.is_running()
    metrics = again.get_metrics()
    assert metrics and metrics[-1].mem_used > 0
    again.kill()
    assert not Sandbox.kill(sbx.sandbox_id)                        # gone already
    with pytest.raises(Exception):
        Sandbox.connect(sbx.sandbox_id)


def test_envd_token_opens_only_its_own_sandbox(sbx, e2b_env, api):
    other = Sandbox.create(timeout=60)
    try:
        url = e2b_env.url + "/filesystem.Filesystem/Stat"
        body = {"path": "/root"}
        token = sbx._envd_access_token
        ok = httpx.post(url, json=body, headers={"E2b-Sandbox-Id": sbx.sandbox_id,
                                                "X-Access-Token": token})
        assert ok.status_code == 200 and ok.json()["entry"]["type"] == "FILE_TYPE_DIRECTORY"
        wrong = httpx.post(url, json=body, headers={"E2b-Sandbox-Id": other.sandbox_id,
                                                   "X-Access-Token": token})
        assert wrong.status_code == 401
        control = httpx.get(e2b_env.url + "/v1/sandboxes", headers={"X-Access-Token": token,
                                                                   "E2b-Sandbox-Id": sbx.sandbox_id})
        assert control.status_code == 401                         # no way into the control plane
        assert httpx.get(e2b_env.url + "/v2/sandboxes", headers={"X-API-Key": "wrong"}).status_code == 401
    finally:
        other.kill()


def test_fork_and_snapshot(sbx, e2b_env):
    from tumbler.runtime.images import ImageStore
    sbx.files.write("/root/prepared.txt", "state")
    forks = sbx.fork(count=2, timeout=60)
    try:
        assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks)
        assert [f.files.read("/root/prepared.txt") for f in forks] == ["state", "state"]
        assert len({f.sandbox_id for f in forks} | {sbx.sandbox_id}) == 3
    finally:
        for f in forks:
            if isinstance(f, Sandbox):
                f.kill()
    snap = sbx.create_snapshot()
    try:
        from_snap = Sandbox.create(template=snap.snapshot_id, timeout=60)
        assert from_snap.files.read("/root/prepared.txt") == "state"
        from_snap.kill()
    finally:
        ImageStore().remove(snap.snapshot_id)


def test_async_sdk_streams_watch_events_and_stdin(e2b_env):
    import asyncio
    from e2b import AsyncSandbox

    async def main():
        sb = await AsyncSandbox.create(timeout=120)
        try:
            events = []
            watch = await sb.files.watch_dir("/root", on_event=events.append)
            await sb.files.write("/root/x.txt", "1")
            for _ in range(100):
                if any(e.name == "x.txt" for e in events):
                    break
                await asyncio.sleep(0.05)
            await watch.stop()
            assert ("x.txt", "create") in {(e.name, e.type.value) for e in events}
            cat = await sb.commands.run("cat", background=True, stdin=True)
            await sb.commands.send_stdin(cat.pid, "abc\n")
            await sb.commands.close_stdin(cat.pid)
            assert (await cat.wait()).stdout == "abc\n"
        finally:
            await sb.kill()
    asyncio.run(main())


def test_bad_envd_requests_get_clear_errors(sbx, e2b_env):
    url, auth = e2b_env.url, {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(url + "/filesystem.Filesystem/Stat", json={"path": "/"}, headers=auth)
    assert r.status_code == 400 and "E2b-Sandbox-Id" in r.json()["message"]
    here = {**auth, "E2b-Sandbox-Id": sbx.sandbox_id}
    r = httpx.post(url + "/filesystem.Filesystem/Nope", json={}, headers=here)
    assert r.status_code == 501 and r.json()["code"] == "unimplemented"
    r = httpx.post(url + "/filesystem.Filesystem/Stat", content=b"{not json",
                   headers={**here, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    r = httpx.post(url + "/process.Process/SendSignal", headers=here,
                   json={"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"})
    assert r.status_code == 404 and "999999" in r.json()["message"]
    r = httpx.post(url + "/process.Process/Start", headers={**here, "Content-Type":
                   "application/connect+json"}, content=b"\x00\x00\x00\x00\x09{truncated")
    assert r.status_code == 200 and b"invalid_argument" in r.content    # the stream's end says it
    gone = {**auth, "E2b-Sandbox-Id": "nosuchsandbox"}
    r = httpx.post(url + "/filesystem.Filesystem/Stat", json={"path": "/"}, headers=gone)
    assert r.status_code == 404
