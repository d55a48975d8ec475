"""Server-side escapes (issue 11, item 3): from inside a sandbox with the network off, as root
there, the server's API, its auth token and another sandbox's model-service endpoint are out of
reach. Traffic goes only to loopback. Rows in docs/SECURITY.md (server section).
"""
from __future__ import annotations

import json
import secrets
import shutil
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from checks import IMAGE, leftovers  # noqa: E402
from escape_probes import CONNECT  # noqa: E402
from server_process import ServerProcess  # noqa: E402

pytestmark = [pytest.mark.security]

# Walk everything visible inside the sandbox (and every visible process's environ and cmdline)
# for the secret; prints the paths where it was found.
GREP = r'''
import os, sys
secret = sys.stdin.buffer.read().strip()  # not in argv: our own cmdline would match
found = []
skip = {"/proc", "/sys", "/dev"}
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > 8 << 20:
                continue
            with open(path, "rb") as fh:
                if secret in fh.read():
                    found.append(path)
        except OSError:
            pass
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as fh:
                    if secret in fh.read():
                        found.append(f"/proc/{pid}/{what}")
            except OSError:
                pass
for path in ("/var/lib/tumbler", "/run/tumbler"):
    if os.path.exists(path):
        found.append("exists:" + path)
print("\n".join(found))
'''


def _sandbox(runtime, **kw):
    from tumbler.local import LocalSandbox
    return LocalSandbox(runtime=runtime, image=IMAGE, **kw)


@pytest.fixture
def sandboxes(runtime):
    made = []

    def make(**kw):
        sb = _sandbox(runtime, **kw)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.remove()
    for sb in made:
        assert leftovers(runtime, sb.id) == []


@pytest.fixture
def secret_server(runtime, monkeypatch):
    """A server whose token is in its config (argv), its environment and a file under the
    state dir /var/lib/tumbler/<...>."""
    token = "tok-" + secrets.token_hex(16)
    state = runtime.paths.home / f"test-server-{secrets.token_hex(4)}"
    state.mkdir(parents=True)
    (state / "token").write_text(token)
    monkeypatch.setenv("TUMBLER_TOKEN", token)
    srv = ServerProcess(state, tokens=[token]).start()
    yield srv, token
    srv.terminate()
    shutil.rmtree(state, ignore_errors=True)


def test_server_api_and_token_out_of_reach(secret_server, sandboxes):
    srv, token = secret_server
    port = srv.config["port"]
    # control: the host reaches the API with the token
    assert httpx.get(srv.url + "/v1/sandboxes", headers={"Authorization": f"Bearer {token}"},
                     timeout=5).status_code == 200
    sb = sandboxes()
    targets = [["api_v4", "AF_INET", ["127.0.0.1", port]], ["api_v6", "AF_INET6", ["::1", port]]]
    r = sb.exec(["python3", "-c", CONNECT, json.dumps(targets)], timeout=30)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"api_v4": "ConnectionRefusedError", "api_v6": "ConnectionRefusedError"}, out
    r = sb.exec(["python3", "-c", GREP], stdin=token, timeout=120)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "", f"the server's token is visible inside: {r.stdout}"
    # control: the walk finds the token where it is there to be found
    sb.write_file("/tmp/planted", token)
    r = sb.exec(["python3", "-c", GREP], stdin=token, timeout=120)
    assert r.stdout.split() == ["/tmp/planted"], r.stdout + r.stderr


def test_other_sandbox_model_endpoint_out_of_reach(sandboxes):
    pytest.importorskip("tumbler.agent.modelhost")
    a, b = sandboxes(), sandboxes()
    result, _ = a.call("model.enable", {"port": 8377})
    port = result.get("port", 8377)
    probe = json.dumps([["model", "AF_INET", ["127.0.0.1", port]]])
    # control: inside its own sandbox the endpoint answers
    r = a.exec(["python3", "-c", CONNECT, probe], timeout=30)
    assert json.loads(r.stdout) == {"model": "connected"}, r.stdout + r.stderr
    # from the neighbour (same port, its own loopback) and from the host's loopback: nothing
    r = b.exec(["python3", "-c", CONNECT, probe], timeout=30)
    assert json.loads(r.stdout) == {"model": "ConnectionRefusedError"}, r.stdout + r.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=3)
    a.call("model.disable", {})
