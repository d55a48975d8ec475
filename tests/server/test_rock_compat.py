"""ROCK compatibility: ROCK's real, unmodified SDK (rl-rock, in /opt/peers-venv) against
Tumbler's /apis/envs/sandbox/v1 routes, plus the envelope's error conventions over plain HTTP.

The SDK runs in tests/server/rock_client.py under the peers' venv (it is not installed in
Tumbler's); `bash scripts/peers-venv.sh` makes that venv. Contract: docs/ROCK_COMPAT.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from checks import IMAGE
from server_process import TOKEN, ServerProcess, sweep
from tumbler.sdk import core

PEERS_PYTHON = Path(os.environ.get("PEERS_VENV", "/opt/peers-venv")) / "bin" / "python"
CLIENT = Path(__file__).with_name("rock_client.py")
CLIENT_TIMEOUT_S = 300.0
PREFIX = "/apis/envs/sandbox/v1"


def _have_rock() -> str | None:
    """Why the ROCK SDK cannot be used, or None."""
    if not PEERS_PYTHON.exists():
        return f"{PEERS_PYTHON} is missing: run `bash scripts/peers-venv.sh` to install rl-rock"
    probe = subprocess.run([str(PEERS_PYTHON), "-c", "import rock.sdk.sandbox.client"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"rl-rock is not importable in {PEERS_PYTHON}: {probe.stderr[-300:]}"
    return None


needs_rock = pytest.mark.skipif(bool(_have_rock()), reason=_have_rock() or "")


@pytest.fixture(scope="module")
def rock_server(runtime, tmp_path_factory):
    """A server that runs ROCK's image names ("python:3.11") on the test image, by the
    operator's explicit mapping, TUMBLER_ROCK_DEFAULT_IMAGE."""
    saved = os.environ.get("TUMBLER_ROCK_DEFAULT_IMAGE")
    os.environ["TUMBLER_ROCK_DEFAULT_IMAGE"] = IMAGE      # the child inherits it at spawn
    try:
        srv = ServerProcess(tmp_path_factory.mktemp("rock-server")).start()
    finally:
        if saved is None:
            os.environ.pop("TUMBLER_ROCK_DEFAULT_IMAGE")
        else:
            os.environ["TUMBLER_ROCK_DEFAULT_IMAGE"] = saved
    client = srv.tracker = srv.client()     # ids the SDK made go to client.made: leak-checked
    yield srv
    sweep(client, runtime, client.made)
    client.close()
    srv.terminate()


def run_client(scenario: str, url: str, token: str | None) -> dict:
    proc = subprocess.run([str(PEERS_PYTHON), str(CLIENT), scenario, url, token or ""],
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def full_run(rock_server, runtime):
    """One full scenario with the SDK; the tests below each check a part of what it saw."""
    out = run_client("full", rock_server.url, TOKEN)
    if out.get("sandbox_id"):
        rock_server.tracker.made.append(out["sandbox_id"])
    return out


def raised(value) -> bool:
    return isinstance(value, dict) and "raised" in value


# -- the SDK, end to end ------------------------------------------------------------------------

@needs_rock
def test_start_and_status(full_run):
    assert full_run["start"] is None, full_run["start"]          # start() returns None on success
    assert full_run["sandbox_id"]
    assert full_run["_seconds"]["start"] < 3.0                   # alive at the first poll: no 3 s sleep
    assert full_run["is_alive"]["is_alive"] is True
    status = full_run["status"]
    assert status["state"] == "running" and status["image"] == "python:3.11"
    assert status["status"]["docker_run"]["status"] == "success"


@needs_rock
def test_execute(full_run):
    assert full_run["exec_list"] == {"stdout": "exec-ok\n", "stderr": "", "exit_code": 0}
    assert full_run["exec_string"] == {"stdout": "hi\n", "stderr": "err\n", "exit_code": 0}
    assert full_run["exec_fail"]["exit_code"] == 1                 # not an error: a result
    assert full_run["exec_env_cwd"]["stdout"] == "7 /tmp\n"


@needs_rock
def test_sessions(full_run):
    assert full_run["create_session"] == {"output": "", "session_type": "bash"}
    dup = full_run["create_session_dup"]
    assert raised(dup) and "already exists" in dup["message"]
    assert full_run["arun_echo"]["output"] == "42 /tmp s1"          # cwd and exports kept, env applied
    assert full_run["arun_echo"]["exit_code"] == 0
    assert full_run["arun_multiline"]["output"] == "a\nb"
    assert full_run["arun_tmp_session"]["output"] == "tmp-session"  # session=None: a temp session
    for key, text in [("arun_false", "exit code 1"), ("arun_exit3", "exit code 3"),
                      ("arun_unknown_session", "no session"), ("arun_after_close", "no session")]:
        assert raised(full_run[key]) and text in full_run[key]["message"], key
    assert full_run["close_session"] == {"session_type": "bash"}


@needs_rock
def test_nohup(full_run):
    ok = full_run["nohup_ok"]
    assert ok["exit_code"] == 0 and ok["output"] == "done-nohup", ok
    # `kill -0` of the finished process must fail so that the SDK's polling ends at once,
    # not after wait_timeout (60 s): the first check comes at once, the next after 5 s.
    assert full_run["_seconds"]["nohup_ok"] < 10
    fails = full_run["nohup_fails"]       # the SDK does not report the command's exit code
    assert fails["exit_code"] == 0 and fails["output"] == "before-fail", fails
    assert full_run["_seconds"]["nohup_fails"] < 10
    assert full_run["nohup_head"]["output"] == "1\n2\n3"           # head -c 6
    assert full_run["nohup_output_file"]["output"] == "to-file"
    assert full_run["nohup_file_content"]["content"] == "to-file\n"


@needs_rock
def test_files(full_run):
    assert full_run["write_file"]["success"] is True
    assert full_run["read_file"]["content"] == "hello\nworld\n"
    assert full_run["read_missing"]["content"] == ""
    assert full_run["write_relative"]["success"] is False
    assert "absolute" in full_run["write_relative"]["message"]
    assert full_run["upload"]["success"] is True, full_run["upload"]
    assert full_run["upload_size"]["stdout"] == "4096\n"
    assert full_run["upload_sha"]["stdout"].split()[0] == full_run["upload_sha_expected"]


@needs_rock
def test_stop_and_delete(full_run, rock_server):
    assert full_run["stop"] is None
    after = full_run["status_after_stop"]
    assert after["is_alive"] is False and after["state"] == "stopped"
    assert full_run["delete"] is None and full_run["delete_again"] is None   # idempotent
    assert full_run["sandbox_id"] not in [s.id for s in rock_server.tracker.list()]


@needs_rock
def test_caller_chosen_id_and_attach(rock_server):
    out = run_client("chosen_id", rock_server.url, TOKEN)
    assert out["start"] is None and out["sandbox_id"].startswith("rock-chosen-"), out
    assert out["attach"] is None
    assert out["exec_attached"]["stdout"] == "attached\n"
    assert raised(out["start_taken"]) and out["start_taken"]["raised"] == "BadRequestRockError"
    assert out["delete"] is None


@needs_rock
@pytest.mark.parametrize("token,ok", [(TOKEN, True), ("xrl:" + TOKEN, True), (None, False),
                                      ("wrong", False), ("xrl:wrong", False)])
def test_auth_through_the_sdk(rock_server, token, ok):
    """A token in extra_headers (Authorization) or the deprecated xrl_authorization field."""
    out = run_client("start_only", rock_server.url, token)
    if ok:
        assert out["start"] is None and out["exec_list"]["stdout"] == "auth-ok\n", out
        assert out["delete"] is None
    else:
        assert raised(out["start"]) and "401" in out["start"]["message"], out
        assert out["sandbox_id"] is None


# -- the envelope over plain HTTP -----------------------------------------------------------------

@pytest.fixture
def rock_http(rock_server):
    with httpx.Client(base_url=rock_server.url + PREFIX, timeout=60,
                      headers={"authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_failures_are_200_failed(rock_http):
    for method, path, kwargs in [
            ("POST", "/execute", {"content": b"{not json"}),
            ("POST", "/execute", {"json": {"sandbox_id": "x"}}),                 # no command
            ("POST", "/execute", {"json": {"sandbox_id": "nosuch", "command": ["true"]}}),
            ("GET", "/get_status?sandbox_id=nosuch&include_all_states=False", {}),
            ("POST", "/run_in_session", {"json": {"sandbox_id": "nosuch", "command": "true",
                                                  "check": "maybe"}}),
            ("POST", "/stop", {"json": {"sandbox_id": "nosuch"}}),
            ("POST", "/upload", {"data": {"sandbox_id": "nosuch"}})]:
        resp = rock_http.request(method, path, **kwargs)
        assert resp.status_code == 200, (path, resp.text)
        body = resp.json()
        assert body["status"] == "Failed" and body["error"] and body["result"] is None, (path, body)


def test_read_file_failure_still_has_content(rock_http):
    body = rock_http.post("/read_file", json={"sandbox_id": "nosuch", "path": "/etc/hostname"}).json()
    assert body["status"] == "Failed" and body["result"] == {"content": ""}


def test_start_and_delete_failures_carry_codes(rock_http):
    bad = rock_http.post("/start_async", json={"image": IMAGE, "memory": "lots"}).json()
    assert bad["status"] == "Failed" and bad["result"]["code"] == 4000, bad
    gone = rock_http.post("/delete", json={"sandbox_id": "nosuch"}).json()
    assert gone["status"] == "Success"                         # deleting twice is fine
    assert rock_http.get("/get_token?account=primary").json()["status"] == "Success"


def test_unknown_image_without_mapping_is_a_clear_failure(server):
    if os.environ.get("TUMBLER_ROCK_DEFAULT_IMAGE") or os.environ.get("TUMBLER_ROCK_IMAGES"):
        pytest.skip("this environment maps ROCK images")
    body = httpx.post(server.url + PREFIX + "/start_async", timeout=60,
                      headers={"authorization": f"Bearer {server.token}"},
                      json={"image": "ubuntu:22.04", "memory": "256m", "cpus": 1}).json()
    assert body["status"] == "Failed" and body["result"]["code"] == 4000, body
    assert "ubuntu:22.04" in body["error"] and "TUMBLER_ROCK_DEFAULT_IMAGE" in body["error"]


def test_rocks_default_image_runs_out_of_the_box(server, api):
    """Issue 22: ROCK's SDK starts python:3.11 unless told otherwise; a server with no mapping
    set runs it on the default image (bookworm's python3 is 3.11) instead of refusing it."""
    if os.environ.get("TUMBLER_ROCK_DEFAULT_IMAGE") or os.environ.get("TUMBLER_ROCK_IMAGES"):
        pytest.skip("this environment maps ROCK images")
    headers = {"authorization": f"Bearer {server.token}"}
    body = httpx.post(server.url + PREFIX + "/start_async", timeout=60, headers=headers,
                      json={"image": "python:3.11", "memory": "256m", "cpus": 1}).json()
    assert body["status"] == "Success", body
    sid = body["result"]["sandbox_id"]
    api.made.append(sid)
    record = api.send(core.get(sid))
    assert record.image == "debian" and record.labels.get("rock.image") == "python:3.11"
    ran = httpx.post(server.url + PREFIX + "/execute", timeout=60, headers=headers,
                     json={"sandbox_id": sid, "command": ["python3", "--version"]}).json()
    assert ran["status"] == "Success" and "Python 3.11" in ran["result"]["stdout"], ran


def test_xrl_authorization_header_and_401(rock_server):
    url = rock_server.url + PREFIX + "/get_status?sandbox_id=x"
    assert httpx.get(url, headers={"XRL-Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(url, headers={"XRL-Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url).status_code == 401


def test_session_timeouts_hangups_and_startup_source(rock_http, rock_server):
    """A command past its timeout is Failed; a client that hangs up frees its session;
    startup_source files are sourced; remote_user other than root is refused."""
    started = rock_http.post("/start_async", json={"image": IMAGE, "memory": "256m", "cpus": 1}).json()
    sid = started["result"]["sandbox_id"]
    rock_server.tracker.made.append(sid)
    ref = {"sandbox_id": sid}
    try:
        wrote = rock_http.post("/write_file", json={**ref, "path": "/tmp/rc.sh",
                                                    "content": "export FROM_RC=yes\n"}).json()
        assert wrote["status"] == "Success"
        made = rock_http.post("/create_session", json={**ref, "session": "s",
                                                       "startup_source": ["/tmp/rc.sh"]}).json()
        assert made["status"] == "Success", made
        refused = rock_http.post("/create_session",
                                 json={**ref, "session": "u", "remote_user": "bob"}).json()
        assert refused["status"] == "Failed" and "remote_user" in refused["error"]

        run = {**ref, "session": "s", "check": "raise"}
        slow = rock_http.post("/run_in_session", json={**run, "command": "sleep 30", "timeout": 1}).json()
        assert slow["status"] == "Failed" and "timeout" in slow["error"], slow
        with pytest.raises(httpx.ReadTimeout):
            rock_http.post("/run_in_session", json={**run, "command": "sleep 60"}, timeout=1)
        after = free_session_reply(rock_http, {**run, "command": "echo $FROM_RC"})
        assert after["status"] == "Success" and after["result"]["output"] == "yes", after
        silent = rock_http.post("/run_in_session",
                                json={**run, "command": "false", "check": "silent"}).json()
        assert silent["result"]["exit_code"] == 1
        ignored = rock_http.post("/run_in_session",
                                 json={**run, "command": "false", "check": "ignore"}).json()
        assert ignored["status"] == "Success" and ignored["result"]["exit_code"] is None
    finally:
        rock_http.post("/delete", json=ref)


def free_session_reply(rock_http, body: dict, within_s: float = 15.0) -> dict:
    """The reply to `body` once the session is no longer busy (the server interrupts the
    command of a client that hung up as soon as it notices the hang-up)."""
    deadline = time.monotonic() + within_s
    while True:
        reply = rock_http.post("/run_in_session", json=body, timeout=30).json()
        if "busy" not in (reply.get("error") or "") or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)
