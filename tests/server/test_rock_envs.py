"""ROCK's env API: the real, unmodified `rock.sdk.envs.RockEnv` (rl-rock, in /opt/peers-venv)
against Tumbler's /apis/v1/envs/gem routes, plus those routes' shapes over plain HTTP.

RockEnv runs in tests/server/rock_env_client.py under the peers' venv. It reads its base URL from
ROCK_BASE_URL and sends no auth header, so this module runs its own server without tokens
(loopback only) instead of the shared, token-protected one. Contract: docs/ROCK_COMPAT.md,
"Env routes".
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tumbler.runtime.pip_images import GEM_IMAGE
from server_process import ServerProcess, sweep

PEERS_PYTHON = Path(os.environ.get("PEERS_VENV", "/opt/peers-venv")) / "bin" / "python"
CLIENT = Path(__file__).with_name("rock_env_client.py")
CLIENT_TIMEOUT_S = 300.0
GEM = "/apis/v1/envs/gem"


def _have_rock_env() -> str | None:
    """Why ROCK's RockEnv cannot be used, or None."""
    if not PEERS_PYTHON.exists():
        return f"{PEERS_PYTHON} is missing: run `bash scripts/peers-venv.sh` to install rl-rock"
    probe = subprocess.run([str(PEERS_PYTHON), "-c", "import rock.sdk.envs"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"rl-rock's rock.sdk.envs is not importable in {PEERS_PYTHON}: {probe.stderr[-300:]}"
    return None


WHY_NOT = _have_rock_env()
needs_rock = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")


@pytest.fixture(scope="module")
def env_server(runtime, tmp_path_factory):
    """A server without tokens (RockEnv cannot send one) whose env sandboxes use the image with
    gem-llm (GEM ids run GEM's own envs), built by `make gem-image`."""
    if not runtime.images.exists(GEM_IMAGE):
        pytest.skip(f"no image {GEM_IMAGE!r}: `make gem-image` builds it")
    saved = os.environ.get("TUMBLER_ROCK_ENV_IMAGE")
    os.environ["TUMBLER_ROCK_ENV_IMAGE"] = GEM_IMAGE    # the child inherits it at spawn
    try:
        srv = ServerProcess(tmp_path_factory.mktemp("rock-env-server"), tokens=[]).start()
    finally:
        if saved is None:
            os.environ.pop("TUMBLER_ROCK_ENV_IMAGE")
        else:
            os.environ["TUMBLER_ROCK_ENV_IMAGE"] = saved
    srv.tracker = srv.client(token=None)
    yield srv
    sweep(srv.tracker, runtime, srv.tracker.made)
    srv.tracker.close()
    srv.terminate()


@pytest.fixture
def http(env_server):
    with httpx.Client(base_url=env_server.url, timeout=60) as client:
        yield client


def run_client(env_server, *args: str) -> dict:
    proc = subprocess.run([str(PEERS_PYTHON), str(CLIENT), *args[:1], env_server.url, *args[1:]],
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S,
                          env={**os.environ, "ROCK_BASE_URL": env_server.url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("sandbox_id"):
        env_server.tracker.made.append(out["sandbox_id"])    # leak-checked on teardown
    return out


def env_sandboxes(http) -> list[dict]:
    return [s for s in http.get("/v1/sandboxes").json()["sandboxes"]
            if "rock.gem_env" in s["labels"]]


def raised(value) -> bool:
    return isinstance(value, dict) and "raised" in value


@needs_rock
def test_rock_env_plays_guess_the_number(env_server, http):
    """GEM's id runs GEM's own GuessTheNumber (image gem): its easy range, 1..10 in 4 turns."""
    out = run_client(env_server, "play", "game:GuessTheNumber-v0-easy")
    assert out["is_rock_env"] and out["sandbox_id"], out
    obs, info = out["reset"]
    assert "between 1 and 10" in obs and isinstance(info, dict)
    assert out["reset_again"] == out["reset"]                     # same seed, same instance
    last = out["steps"][-1]
    assert last[1] == 1.0 and last[2] is True and last[3] is False, out["steps"]
    assert len(out["steps"]) <= 4
    assert all(isinstance(s[4], dict) for s in out["steps"])
    assert out["close"] is None and out["close_again"] is None
    assert env_sandboxes(http) == []                              # close removed its sandbox


@needs_rock
def test_rock_env_bad_input(env_server, http):
    out = run_client(env_server, "bad")
    assert raised(out["unknown"]), out
    assert "HTTP error 500" in out["unknown"]["message"] and "NoSuchGame" in out["unknown"]["message"]
    assert not raised(out["make"]), out
    assert raised(out["early_step"]) and "reset" in out["early_step"]["message"]
    assert out["close"] is None
    assert raised(out["step_after_close"]) and "HTTP error 500" in out["step_after_close"]["message"]
    assert env_sandboxes(http) == []          # the failed make and the closed env left nothing


def test_gem_routes_shapes_over_http(env_server, http):
    """What RockEnv relies on: raw JSON, no envelope; ROCK admin's failure forms."""
    made = http.post(f"{GEM}/make", json={"env_id": "game:GuessTheNumber-v0-hard"})
    assert made.status_code == 200, made.text
    sid = made.json()["sandbox_id"]
    env_server.tracker.made.append(sid)
    assert set(made.json()) == {"sandbox_id"}
    assert http.post(f"{GEM}/list", json={"sandbox_id": sid}).json()["env_id"][:2] == [
        "game:GuessTheNumber-v0-easy", "game:GuessTheNumber-v0-hard"]
    reset = http.post(f"{GEM}/reset", json={"sandbox_id": sid, "seed": 1})
    assert set(reset.json()) == {"observation", "info"} and "between 1 and 50" in reset.json()["observation"]
    step = http.post(f"{GEM}/step", json={"sandbox_id": sid, "action": "\\boxed{25}"}).json()
    assert set(step) == {"observation", "reward", "terminated", "truncated", "info"}
    assert isinstance(step["reward"], float)

    # validation: HTTP 200 with the admin's Failed envelope; runtime failures: 500 {detail, traceback}
    invalid = http.post(f"{GEM}/step", json={"sandbox_id": sid})
    assert invalid.status_code == 200
    assert invalid.json() == {"status": "Failed", "message": "invalid parameter",
                              "error": "body.action: Field required", "result": None}
    for path, body in (("make", {}), ("list", {}), ("reset", {"sandbox_id": "nosuchbox"})):
        failed = http.post(f"{GEM}/{path}", json=body)
        assert failed.status_code == 500 and set(failed.json()) == {"detail", "traceback"}, failed.text

    assert http.post(f"{GEM}/close", json={"sandbox_id": sid}).json() == {"sandbox_id": sid}
    assert env_sandboxes(http) == []


def test_an_id_names_one_env(env_server, http):
    """GEM's id gets GEM's env (its own observation text); Tumbler's look-alike only by name."""
    for env_id, words in (("game:GuessTheNumber-v0-easy", "At turn 1, you guessed"),
                          ("tumbler:game:GuessTheNumber-v0-easy", "Lower")):
        made = http.post(f"{GEM}/make", json={"env_id": env_id})
        assert made.status_code == 200, made.text
        sid = made.json()["sandbox_id"]
        env_server.tracker.made.append(sid)
        http.post(f"{GEM}/reset", json={"sandbox_id": sid, "seed": 3})
        step = http.post(f"{GEM}/step", json={"sandbox_id": sid, "action": "\\boxed{10}"}).json()
        assert words.lower() in step["observation"].lower() or step["terminated"], (env_id, step)
        assert http.post(f"{GEM}/close", json={"sandbox_id": sid}).status_code == 200
