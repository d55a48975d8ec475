"""Bad input and faults: each gets a clear error, and everything else keeps working."""
from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from checks import IMAGE
from tumbler import Sandbox
from tumbler.errors import AgentDied, NotFound, TooLarge


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.token}"}, timeout=30) as client:
        yield client


def error_of(resp: httpx.Response) -> dict:
    return resp.json()["error"]


def test_malformed_json_and_wrong_types(http, api):
    sb = Sandbox(IMAGE, client=api)
    resp = http.post(f"/v1/sandboxes/{sb.id}/run", content=b'{"command": "echo', 
                     headers={"content-type": "application/json"})
    assert resp.status_code == 400 and error_of(resp)["kind"] == "invalid"
    assert "json" in error_of(resp)["message"].lower()
    resp = http.post(f"/v1/sandboxes/{sb.id}/run", json={"command": "true", "timeout": "soon"})
    assert resp.status_code == 400 and "timeout" in error_of(resp)["message"]
    resp = http.post(f"/v1/sandboxes/{sb.id}/run", json={"command": "true", "timout": 3})
    assert resp.status_code == 400 and "timout" in error_of(resp)["message"]
    resp = http.post("/v1/sandboxes", json={"image": IMAGE, "limits": {"memory": "lots"}})
    assert resp.status_code == 400 and "memory" in error_of(resp)["message"]
    resp = http.post("/v1/sandboxes", json={"image": "no-such-image"})
    assert resp.status_code == 404 and "no-such-image" in error_of(resp)["message"]
    resp = http.post("/v1/sandboxes", content=b'{"image": "deb', headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "json" in error_of(resp)["message"].lower()
    resp = http.post("/v1/sandboxes", json={"image": IMAGE, "ttl_s": "soon", "colour": 1})
    assert resp.status_code == 400 and "ttl_s" in error_of(resp)["message"]
    assert "colour" in error_of(resp)["message"]


def test_a_create_answers_the_records_document(http, api):
    """POST /v1/sandboxes is served on the fast path (fastpath.py): its 201 reply is the same
    document FastAPI's GET route gives for the same sandbox."""
    resp = http.post("/v1/sandboxes", json={"image": IMAGE, "labels": {"k": "é"}, "ttl_s": 600})
    assert resp.status_code == 201 and resp.headers["content-type"] == "application/json"
    made = resp.json()
    api.made.append(made["id"])
    got = http.get(f"/v1/sandboxes/{made['id']}").json()
    assert made.keys() == got.keys()
    assert {k: v for k, v in made.items() if k != "last_active"} == \
        {k: v for k, v in got.items() if k != "last_active"}
    assert made["spec"]["labels"] == {"k": "é"} and made["state"] == "running"


def test_unknown_ids_are_404(http, api):
    sb = Sandbox(IMAGE, client=api)
    for method, path in [("GET", "/v1/sandboxes/nope"), ("DELETE", "/v1/sandboxes/nope"),
                         ("POST", "/v1/sandboxes/nope/reset"), ("GET", "/v1/sandboxes/nope/stats"),
                         ("GET", "/v1/sandboxes/nope/files/stat?path=/"),
                         ("GET", "/v1/no/such/route")]:
        resp = http.request(method, path)
        assert resp.status_code == 404, (method, path)
        assert error_of(resp)["kind"] == "not_found"
    resp = http.post(f"/v1/sandboxes/{sb.id}/sessions/nosuch/run", json={"command": "true"})
    assert resp.status_code == 404 and "nosuch" in error_of(resp)["message"]
    with pytest.raises(NotFound):
        sb.session("ghost", create=False).run("true")


def test_huge_bodies_are_413(http, api):
    sb = Sandbox(IMAGE, client=api)
    resp = http.post(f"/v1/sandboxes/{sb.id}/run", json={"command": "x" * (128 << 10)})
    assert resp.status_code == 413 and error_of(resp)["kind"] == "too_large"
    with pytest.raises(TooLarge):
        sb.write_file("/tmp/big", b"\0" * ((8 << 20) + 1))

    def chunks():   # no content-length: the limit is counted as the body streams in
        for _ in range(20):
            yield b"\0" * (1 << 20)
    resp = http.put(f"/v1/sandboxes/{sb.id}/files/content", params={"path": "/tmp/big"}, content=chunks())
    assert resp.status_code == 413
    sb.write_file("/tmp/ok", b"\0" * (4 << 20))        # under the limit: fine
    assert sb.stat("/tmp/ok").size == 4 << 20


def test_dead_agent_is_502_and_others_carry_on(api, runtime):
    victim = Sandbox(IMAGE, client=api)
    bystander = Sandbox(IMAGE, client=api)
    victim.run("echo warm")
    os.kill(runtime.init_pid(victim.id), signal.SIGKILL)
    with pytest.raises(AgentDied) as caught:
        victim.run("echo hi")
    assert caught.value.status == 502 and "reset" in caught.value.message
    assert bystander.run("echo fine").output == "fine\n"
    victim.reset()                                       # the fix the error names
    assert victim.run("echo back").output == "back\n"


def test_killed_mid_request(api, runtime):
    victim = Sandbox(IMAGE, client=api)
    box = {}

    def long_command():
        try:
            victim.run("sleep 30", timeout=60)
        except Exception as exc:
            box["exc"] = exc
    t = threading.Thread(target=long_command)
    t.start()
    time.sleep(0.5)
    os.kill(runtime.init_pid(victim.id), signal.SIGKILL)
    t.join(30)
    assert isinstance(box.get("exc"), AgentDied)
