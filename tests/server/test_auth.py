"""Bearer tokens: a request without the right one reaches nothing; no open server off loopback."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from checks import IMAGE
from tumbler.errors import Unauthorized
from tumbler.sdk import Client
from tumbler.server.config import ServerConfig


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"},
                                     {"authorization": "Basic dGVzdA=="}])
def test_missing_or_wrong_token_is_401(server, headers):
    before = httpx.get(f"{server.url}/v1/sandboxes", headers={"authorization": f"Bearer {server.token}"}).json()
    for method, path in [("GET", "/v1/sandboxes"), ("POST", "/v1/sandboxes"), ("GET", "/metrics"),
                         ("GET", "/docs"), ("DELETE", "/v1/sandboxes/x")]:
        resp = httpx.request(method, server.url + path, headers=headers, json={"image": IMAGE})
        assert resp.status_code == 401, path
        assert resp.json()["error"]["kind"] == "unauthorized"
    after = httpx.get(f"{server.url}/v1/sandboxes", headers={"authorization": f"Bearer {server.token}"}).json()
    assert before == after   # the unauthenticated create made nothing


def test_sdk_maps_401(server):
    with Client(server.url, "wrong") as client, pytest.raises(Unauthorized):
        client.list()


def test_health_and_docs(server, api):
    assert httpx.get(server.url + "/healthz").json()["ok"] is True
    auth = {"authorization": f"Bearer {server.token}"}
    assert httpx.get(server.url + "/docs", headers=auth).status_code == 200
    paths = httpx.get(server.url + "/openapi.json", headers=auth).json()["paths"]
    assert "/v1/sandboxes/{sandbox_id}/sessions/{name}/run" in paths
    api.list()
    metrics = httpx.get(server.url + "/metrics", headers=auth).text
    assert 'tumbler_sandboxes{state="running"}' in metrics
    assert "tumbler_request_seconds_bucket" in metrics
    rss = next(line for line in metrics.splitlines()
               if line.startswith('tumbler_process_memory_bytes{part="rss"}'))
    assert float(rss.split()[-1]) > 10 << 20     # a Python server is at least this big
    assert 'tumbler_process_memory_bytes{part="heap_in_use"}' in metrics   # glibc here


def test_refuses_open_non_loopback_bind():
    with pytest.raises(ValueError, match="TUMBLER_TOKEN"):
        ServerConfig(host="0.0.0.0", tokens=[])
    ServerConfig(host="0.0.0.0", tokens=["t"])      # with a token: allowed
    ServerConfig(host="::1", tokens=[])             # loopback: auth may be off
    proc = subprocess.run([sys.executable, "-m", "tumbler.cli.serve", "--host", "0.0.0.0",
                           "--port", "1"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "without auth" in proc.stderr and "TUMBLER_TOKEN" in proc.stderr
