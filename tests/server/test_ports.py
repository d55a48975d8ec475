"""A server inside a sandbox reached from outside: the HTTP proxy (Tumbler's route and ROCK's),
TCP over a WebSocket, and `tumbler sandbox forward`; the caller's token never reaches it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest

from checks import IMAGE, wait_for
from server_process import TOKEN
from tumbler import Sandbox
from tumbler.sdk.forward import Forward

# Echoes the request's method, path, headers and body: what reached the sandbox.
ECHO = r'''
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "body": self.rfile.read(n).decode()}).encode()
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("x-from-sandbox", "yes")
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = _answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
'''


@pytest.fixture
def web(api):
    sb = Sandbox(IMAGE, client=api)
    sb.write_file("/root/echo.py", ECHO)
    sb.run("nohup python3 /root/echo.py >/dev/null 2>&1 &")
    wait_for(lambda: sb.exec(["python3", "-c", "import socket; socket.create_connection"
                              "(('127.0.0.1', 8000), 1)"]).exit_code == 0, 30, "the server")
    yield sb
    sb.remove()


def test_http_proxy_passes_requests_not_credentials(server, web):
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Custom": "kept"}
    r = httpx.post(f"{server.url}/v1/sandboxes/{web.id}/ports/8000/http/some/path?q=1",
                   content=b"payload", headers=auth)
    assert r.status_code == 201 and r.headers["x-from-sandbox"] == "yes"
    seen = r.json()
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/some/path?q=1", "payload")
    assert seen["headers"]["x-custom"] == "kept"
    assert "authorization" not in seen["headers"]                 # the token stays outside
    big = httpx.post(f"{server.url}/v1/sandboxes/{web.id}/ports/8000/http/big",
                     content=b"x" * (1 << 20), headers=auth, timeout=60)
    assert big.status_code == 201 and len(big.json()["body"]) == 1 << 20
    rock = httpx.get(f"{server.url}/apis/envs/sandbox/v1/sandboxes/{web.id}/proxy/port/8000/x",
                     headers=auth)
    assert rock.status_code == 201 and rock.json()["path"] == "/x"
    nothing = httpx.get(f"{server.url}/v1/sandboxes/{web.id}/ports/8001/http/", headers=auth)
    assert nothing.status_code == 400 and "nothing listens on port 8001" in nothing.text
    assert httpx.get(f"{server.url}/v1/sandboxes/{web.id}/ports/8000/http/").status_code == 401


def test_forward_serves_the_port_here(server, web):
    with Forward(server.url, TOKEN, web.id, 8000) as fwd:
        for _ in range(3):                                       # a connection each time
            r = httpx.get(f"http://127.0.0.1:{fwd.port}/via-forward")
            assert r.status_code == 201 and r.json()["path"] == "/via-forward"
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=10) as raw:
            raw.sendall(b"GET /raw HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := raw.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.0 201") and b'"/raw"' in data


def test_cli_forward(server, web):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TUMBLER_URL": server.url, "TUMBLER_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "tumbler.cli", "sandbox", "forward", web.id,
                             "8000", "--local-port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def answers():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/cli", timeout=5).status_code == 201
            except httpx.TransportError:
                return False
        wait_for(answers, 60, "the CLI's forward")
    finally:
        proc.terminate()
        proc.wait(30)
