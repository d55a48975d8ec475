"""Envs hosted in a sandbox, driven over HTTP through both route sets: /v1/sandboxes/{id}/envs
and ROCK's /env/make|reset|step|close|list (rocklet's shapes: keyed by sandbox_id, failures as
HTTP 511 rockletexception); plus bad input (unknown env id, step before reset, unknown handle)."""
from __future__ import annotations

import httpx
import pytest

from checks import IMAGE
from tumbler import Sandbox

TIMEOUT_S = 60.0


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S,
                      headers={"authorization": f"Bearer {server.token}"}) as client:
        yield client


@pytest.fixture
def sandbox_id(api):
    return Sandbox(IMAGE, client=api).id


def play_guess(step) -> dict:
    """Binary search over 1..100 with `step(action) -> step reply`; the last reply."""
    low, high = 1, 100
    for _ in range(7):
        guess = (low + high) // 2
        reply = step(str(guess))
        if reply["terminated"] or reply["truncated"]:
            return reply
        if "higher" in str(reply["obs"]).lower():
            low = guess + 1
        else:
            high = guess - 1
    return reply


def test_v1_routes_make_reset_step_close_list(http, sandbox_id):
    base = f"/v1/sandboxes/{sandbox_id}/envs"
    made = http.post(base, json={"env_id": "GuessTheNumber-v0"})
    assert made.status_code == 201, made.text
    handle = made.json()["handle"]
    listed = http.get(base).json()
    assert "GuessTheNumber-v0" in listed["games"]
    assert [e["handle"] for e in listed["open"]] == [handle]

    first = http.post(f"{base}/{handle}/reset", json={"seed": 7}).json()
    again = http.post(f"{base}/{handle}/reset", json={"seed": 7}).json()
    assert first["obs"] == again["obs"] and isinstance(first["info"], dict)
    last = play_guess(lambda a: http.post(f"{base}/{handle}/step", json={"action": a}).json())
    assert last["terminated"] is True and last["reward"] == 1.0

    after = http.post(f"{base}/{handle}/step", json={"action": "50"})
    assert after.status_code == 409 and "reset" in after.json()["error"]["message"]
    assert http.delete(f"{base}/{handle}").status_code == 200
    assert http.get(base).json()["open"] == []


def test_rock_routes_make_reset_step_close_list(http, sandbox_id):
    """rocklet's shapes: the env is keyed by sandbox_id; `observation`, not `obs`."""
    ref = {"sandbox_id": sandbox_id}
    made = http.post("/env/make", json={**ref, "env_id": "GuessTheNumber-v0"})
    assert made.status_code == 200, made.text
    assert made.json() == ref
    listed = http.post("/env/list").json()
    assert "GuessTheNumber-v0" in listed["env_id"] and "game:GuessTheNumber-v0-easy" in listed["env_id"]

    reset = http.post("/env/reset", json={**ref, "seed": 3}).json()
    assert set(reset) == {"observation", "info"} and isinstance(reset["info"], dict)

    def step(action):
        reply = http.post("/env/step", json={**ref, "action": action}).json()
        assert set(reply) == {"observation", "reward", "terminated", "truncated", "info"}
        return {**reply, "obs": reply["observation"]}
    last = play_guess(step)
    assert last["terminated"] is True and last["reward"] == 1.0

    assert http.post("/env/close", json=ref).json() == ref
    assert http.get(f"/v1/sandboxes/{sandbox_id}/envs").json()["open"] == []
    gone = http.post("/env/step", json={**ref, "action": "50"})
    assert gone.status_code == 511 and gone.json()["rockletexception"]["class_path"] == "builtins.KeyError"


def test_bad_input(http, sandbox_id):
    base = f"/v1/sandboxes/{sandbox_id}/envs"
    unknown = http.post(base, json={"env_id": "NoSuchGame-v0"})
    assert unknown.status_code in (400, 404), unknown.text
    assert "NoSuchGame" in unknown.json()["error"]["message"]
    rock_unknown = http.post("/env/make", json={"sandbox_id": sandbox_id, "env_id": "NoSuchGame-v0"})
    assert rock_unknown.status_code == 511, rock_unknown.text     # rocklet's transferred exception
    exc = rock_unknown.json()["rockletexception"]
    assert exc["class_path"] == "builtins.ValueError" and "NoSuchGame" in exc["message"]

    handle = http.post(base, json={"env_id": "Sokoban-v0"}).json()["handle"]
    early = http.post(f"{base}/{handle}/step", json={"action": "up"})
    assert early.status_code == 409 and "reset" in early.json()["error"]["message"]
    rock_made = http.post("/env/make", json={"sandbox_id": sandbox_id, "env_id": "Sokoban-v0"})
    assert rock_made.status_code == 200, rock_made.text
    rock_early = http.post("/env/step", json={"sandbox_id": sandbox_id, "action": "up"})
    assert rock_early.status_code == 511
    assert rock_early.json()["rockletexception"]["class_path"] == "builtins.RuntimeError"
    assert "reset" in rock_early.json()["rockletexception"]["message"]
    http.post("/env/close", json={"sandbox_id": sandbox_id})

    for resp in (http.post(f"{base}/env-999/reset", json={}),
                 http.post(f"{base}/env-999/step", json={"action": "up"}),
                 http.delete(f"{base}/env-999")):
        assert resp.status_code == 404, resp.text
        assert "env-999" in resp.json()["error"]["message"]

    assert http.post(base, json={"env_id": "Sokoban-v0", "bogus": 1}).status_code == 400
    for path, body in (("/env/make", {"env_id": "Sokoban-v0"}), ("/env/reset", {"sandbox_id": " "}),
                       ("/env/step", {"sandbox_id": sandbox_id})):
        invalid = http.post(path, json=body)                  # FastAPI's 422, as rocklet answers
        assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"][0] == "body"
    for path in ("/env/reset", "/env/close"):                  # rocklet: KeyError for an unknown key
        unknown_box = http.post(path, json={"sandbox_id": "nosuchbox"})
        assert unknown_box.status_code == 511
        assert unknown_box.json()["rockletexception"]["class_path"] == "builtins.KeyError"
    gone = http.post("/v1/sandboxes/nosuchbox/envs", json={"env_id": "Sokoban-v0"})
    assert gone.status_code == 404
