"""Drives Tumbler's ROCK-compatible routes with ROCK's real, unmodified SDK (rl-rock).

Runs under the peers' venv, not Tumbler's: /opt/peers-venv/bin/python rock_client.py SCENARIO
BASE_URL [TOKEN]. Prints one JSON object: what each SDK call returned (or raised), for
test_rock_compat.py to assert on. Every SDK call is bounded by a timeout of its own.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time

from rock.actions import (Command, CreateBashSessionRequest, ReadFileRequest, UploadRequest,
                          WriteFileRequest)
from rock.actions.sandbox.request import CloseBashSessionRequest
from rock.sdk.sandbox.client import Sandbox
from rock.sdk.sandbox.config import SandboxConfig

CALL_TIMEOUT_S = 60.0
log = logging.getLogger("rock_client")


async def call(out: dict, key: str, coro, timeout: float = CALL_TIMEOUT_S):
    """Await `coro`; record its result (pydantic dumped) or the exception it raised under `key`."""
    start = time.monotonic()
    try:
        value = await asyncio.wait_for(coro, timeout)
        out[key] = value.model_dump() if hasattr(value, "model_dump") else value
    except Exception as exc:  # the test asserts on which calls raise
        value = None
        out[key] = {"raised": type(exc).__name__, "message": str(exc)[:500]}
    out.setdefault("_seconds", {})[key] = round(time.monotonic() - start, 3)
    return value


def config(base_url: str, token: str | None, **kw) -> SandboxConfig:
    """The token goes in extra_headers (Authorization), or "xrl:T" in xrl_authorization."""
    if token and token.startswith("xrl:"):
        kw["xrl_authorization"] = token.removeprefix("xrl:")
    elif token:
        kw["extra_headers"] = {"Authorization": f"Bearer {token}"}
    return SandboxConfig(base_url=base_url, memory="512m", cpus=1, startup_timeout=60, **kw)


async def full(base_url: str, token: str | None) -> dict:
    """start, commands in every form, files, sessions, stop, delete."""
    out: dict = {}
    sb = Sandbox(config(base_url, token))       # image: the SDK's default, "python:3.11"
    await call(out, "start", sb.start())
    out["sandbox_id"] = sb.sandbox_id
    if not sb.sandbox_id:
        return out
    try:
        await commands(sb, out)
        await sessions(sb, out)
        await nohup(sb, out)
        await files(sb, out)
    finally:
        await call(out, "stop", sb.stop())
        await call(out, "status_after_stop", sb.get_status())
        await call(out, "delete", sb.delete())
        await call(out, "delete_again", sb.delete())
    return out


async def commands(sb: Sandbox, out: dict) -> None:
    await call(out, "is_alive", sb.is_alive())
    await call(out, "status", sb.get_status())
    await call(out, "exec_list", sb.execute(Command(command=["echo", "exec-ok"])))
    await call(out, "exec_string", sb.execute(Command(command="echo hi && echo err >&2")))
    await call(out, "exec_fail", sb.execute(Command(command=["false"])))
    await call(out, "exec_env_cwd", sb.execute(Command(command="echo $RC_X $(pwd)",
                                                       env={"RC_X": "7"}, cwd="/tmp")))


async def sessions(sb: Sandbox, out: dict) -> None:
    await call(out, "create_session", sb.create_session(
        CreateBashSessionRequest(session="main", env={"RC_S": "s1"})))
    await call(out, "create_session_dup", sb.create_session(CreateBashSessionRequest(session="main")))
    await call(out, "arun_state", sb.arun("cd /tmp && export X=42", session="main"))
    await call(out, "arun_echo", sb.arun("echo $X $(pwd) $RC_S", session="main"))
    await call(out, "arun_multiline", sb.arun("printf 'a\\nb\\n'", session="main"))
    await call(out, "arun_false", sb.arun("false", session="main"))
    await call(out, "arun_exit3", sb.arun("(exit 3)", session="main"))
    await call(out, "arun_tmp_session", sb.arun("echo tmp-session"))
    await call(out, "arun_unknown_session", sb.arun("echo x", session="nope"))
    await call(out, "close_session", sb.close_session(CloseBashSessionRequest(session="main")))
    await call(out, "arun_after_close", sb.arun("echo x", session="main"))


async def nohup(sb: Sandbox, out: dict) -> None:
    await call(out, "nohup_ok", sb.arun("sleep 1; echo done-nohup", mode="nohup", wait_interval=5,
                                        wait_timeout=60), timeout=90)
    await call(out, "nohup_fails", sb.arun("bash -c 'echo before-fail; exit 5'", mode="nohup",
                                           wait_interval=5, wait_timeout=60), timeout=90)
    await call(out, "nohup_head", sb.arun("seq 1 1000", mode="nohup", wait_interval=5,
                                          wait_timeout=60, response_limited_bytes_in_nohup=6),
               timeout=90)
    await call(out, "nohup_output_file", sb.arun("echo to-file", mode="nohup", wait_interval=5,
                                                 wait_timeout=60, output_file="/tmp/rc/nohup.log"),
               timeout=90)
    await call(out, "nohup_file_content", sb.read_file(ReadFileRequest(path="/tmp/rc/nohup.log")))


async def files(sb: Sandbox, out: dict) -> None:
    await call(out, "write_file", sb.write_file(WriteFileRequest(content="hello\nworld\n",
                                                                 path="/tmp/rc/a.txt")))
    await call(out, "read_file", sb.read_file(ReadFileRequest(path="/tmp/rc/a.txt")))
    await call(out, "read_missing", sb.read_file(ReadFileRequest(path="/tmp/rc/missing.txt")))
    await call(out, "write_relative", sb.write_file(WriteFileRequest(content="x", path="rel.txt")))
    data = os.urandom(4096)
    with tempfile.NamedTemporaryFile("wb", suffix=".bin", delete=False) as f:
        f.write(data)
    try:
        await call(out, "upload", sb.upload(UploadRequest(source_path=f.name,
                                                          target_path="/tmp/rc/up/up.bin")))
    finally:
        os.unlink(f.name)
    await call(out, "upload_size", sb.execute(Command(command=["stat", "-c", "%s", "/tmp/rc/up/up.bin"])))
    await call(out, "upload_sha", sb.execute(Command(command=["sha256sum", "/tmp/rc/up/up.bin"])))
    import hashlib
    out["upload_sha_expected"] = hashlib.sha256(data).hexdigest()


async def start_only(base_url: str, token: str | None) -> dict:
    """start() as a plain call (auth checks); stop and delete when it worked."""
    out: dict = {}
    sb = Sandbox(config(base_url, token))
    await call(out, "start", sb.start())
    out["sandbox_id"] = sb.sandbox_id
    if sb.sandbox_id:
        await call(out, "exec_list", sb.execute(Command(command=["echo", "auth-ok"])))
        await call(out, "delete", sb.delete())
    return out


async def chosen_id(base_url: str, token: str | None) -> dict:
    """A caller-chosen sandbox_id, then attach() from a second client, then a taken id."""
    out: dict = {}
    name = f"rock-chosen-{os.getpid()}"
    sb = Sandbox(config(base_url, token, sandbox_id=name))
    await call(out, "start", sb.start())
    out["sandbox_id"] = sb.sandbox_id
    other = Sandbox(config(base_url, token))
    await call(out, "attach", other.attach(name))
    await call(out, "exec_attached", other.execute(Command(command=["echo", "attached"])))
    again = Sandbox(config(base_url, token, sandbox_id=name))
    await call(out, "start_taken", again.start())
    await call(out, "delete", sb.delete())
    return out


async def lifecycle(base_url: str, token: str | None) -> dict:
    """restart, commit, archive and restore through the SDK; list and batch status by HTTP
    (the SDK has no call for them; ROCK's admin serves them to its console and scripts)."""
    import httpx
    out: dict = {}
    cfg = config(base_url, token, experiment_id=f"lc-{os.getpid()}")
    sb = Sandbox(cfg)
    await call(out, "start", sb.start())
    out["sandbox_id"] = sb.sandbox_id
    if not sb.sandbox_id:
        return out
    await call(out, "write", sb.write_file(WriteFileRequest(content="kept", path="/root/k.txt")))
    await call(out, "restart_running", sb.restart())
    await sb.stop()
    await call(out, "restart", sb.restart())
    await call(out, "read_after_restart", sb.read_file(ReadFileRequest(path="/root/k.txt")))
    await call(out, "commit", sb.commit("tumbler-test/committed:1", "", ""))
    await call(out, "commit_status", sb.get_commit_status())
    await call(out, "archive_running", sb.archive())
    await sb.stop()
    await call(out, "archive", sb.archive())
    await call(out, "status_archived", sb.get_status(include_all_states=True))
    await call(out, "restart_archived", sb.restart())
    await call(out, "read_after_restore", sb.read_file(ReadFileRequest(path="/root/k.txt")))
    await call(out, "status_restored", sb.get_status(include_all_states=True))
    other = Sandbox(cfg)
    await call(out, "start_other", other.start())
    out["other_id"] = other.sandbox_id
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=f"{base_url}/apis/envs/sandbox/v1", headers=headers,
                                 timeout=CALL_TIMEOUT_S) as http:
        page = await http.get("/sandboxes", params={"experiment_id": cfg.experiment_id,
                                                    "page_size": 1})
        out["list_page1"] = page.json()
        page = await http.get("/sandboxes", params={"experiment_id": cfg.experiment_id,
                                                    "page_size": 1, "page": 2})
        out["list_page2"] = page.json()
        out["list_stopped"] = (await http.get("/sandboxes", params={
            "experiment_id": cfg.experiment_id, "state": "stopped"})).json()
        out["batch"] = (await http.post("/sandboxes/batch", json={
            "sandbox_ids": [sb.sandbox_id, other.sandbox_id, "no-such-sandbox"]})).json()
    await call(out, "delete_other", other.delete())
    await call(out, "delete", sb.delete())
    return out


SCENARIOS = {"full": full, "start_only": start_only, "chosen_id": chosen_id,
             "lifecycle": lifecycle}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    scenario, base_url = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    result = asyncio.run(SCENARIOS[scenario](base_url, token))
    sys.stdout.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
