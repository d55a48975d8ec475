"""`tumbler serve --config FILE`: the server's settings from a YAML, TOML or JSON file (keyed by
ServerConfig's field names), the environment and the command line's options over it; a key it
does not have is an error naming the key, and so is a bad value."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from server_process import free_port
from tumbler.server.config import PoolConfig, ServerConfig

YAML = """\
host: 127.0.0.1
port: 8123
ray: auto
placement: pack
node_memory_bytes: 2g
max_upload_bytes: 64m
reap_interval_s: 2
pools:
  - {name: small, size: 2, image: debian}
cluster:
  namespace: team-a
  start_concurrency: 8
"""

TOML = """\
port = 8124
ray = "10.0.0.5:6379"
node_memory_bytes = 1073741824

[[pools]]
name = "p"
size = 1

[cluster]
namespace = "team-b"
"""


def _file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_toml_and_json_give_the_same_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("TUMBLER_TOKEN", raising=False)
    monkeypatch.delenv("TUMBLER_DB_URL", raising=False)
    c = ServerConfig.from_file(_file(tmp_path, "s.yaml", YAML))
    assert (c.port, c.ray, c.placement, c.node_memory_bytes, c.max_upload_bytes) == \
        (8123, "auto", "pack", 2 << 30, 64 << 20)
    assert [(p.name, p.size, p.image) for p in c.pools] == [("small", 2, "debian")]
    assert c.cluster == {"namespace": "team-a", "start_concurrency": 8}
    t = ServerConfig.from_file(_file(tmp_path, "s.toml", TOML))
    assert (t.port, t.ray, t.node_memory_bytes, t.cluster) == (8124, "10.0.0.5:6379", 1 << 30,
                                                               {"namespace": "team-b"})
    assert [(p.name, p.size, p.image) for p in t.pools] == [("p", 1, "debian")]
    j = ServerConfig.from_file(_file(tmp_path, "s.json", json.dumps({"port": 8125, "ray": "auto"})))
    assert (j.port, j.ray) == (8125, "auto")
    assert ServerConfig.from_file(_file(tmp_path, "empty.yaml", "")).port == 8040


def test_the_environment_and_the_options_override_the_file(tmp_path, monkeypatch):
    path = _file(tmp_path, "s.yaml", YAML + "tokens: [from-file]\n")
    monkeypatch.setenv("TUMBLER_TOKEN", "from-env")
    c = ServerConfig.from_file(path, port=9000, placement=None)   # None: the option is unset
    assert (c.port, c.placement, c.tokens) == (9000, "pack", ["from-env"])


@pytest.mark.parametrize("text, name, message", [
    ("rya: auto\n", "s.yaml", "unknown setting 'rya' (did you mean 'ray'?)"),
    ("port: 1\nfoo_bar: 2\n", "s.yaml", "unknown setting 'foo_bar'"),
    ("pools:\n  - {name: p, size: 1, imag: debian}\n", "s.yaml", "pools.0.imag: Extra inputs"),
    ("cluster:\n  namespac: x\n", "s.yaml", "cluster: cluster.namespac: Extra inputs"),
    ("cluster:\n  owner: x\n", "s.yaml", "cluster.owner is the server's to set"),
    ("port: eighty\n", "s.yaml", "port: Input should be a valid integer"),
    ("node_memory_bytes: lots\n", "s.yaml", "node_memory_bytes"),
    ("placement: scatter\n", "s.yaml", "placement: Input should be 'spread' or 'pack'"),
    ("- port: 1\n", "s.yaml", "must be a mapping of names to values, not a list"),
    ("port: [1\n", "s.yaml", "not valid YAML"),
    ("port = \n", "s.toml", "not valid TOML"),
    ("port: 1\n", "s.ini", "a configuration is .yaml, .yml, .toml or .json"),
])
def test_a_bad_file_is_an_error_that_names_the_key(tmp_path, text, name, message):
    path = _file(tmp_path, name, text)
    with pytest.raises(ValueError) as err:
        ServerConfig.from_file(path)
    assert message in str(err.value) and str(path) in str(err.value), str(err.value)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ValueError, match="cannot read the configuration .*nope.yaml"):
        ServerConfig.from_file(tmp_path / "nope.yaml")


def _serve(*args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tumbler.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def test_serve_refuses_a_file_with_an_unknown_key(tmp_path):
    proc = _serve("--config", str(_file(tmp_path, "s.yaml", "port: 1\nnode_memroy_bytes: 2g\n")))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "unknown setting 'node_memroy_bytes' (did you mean 'node_memory_bytes'?)" in out, out


def test_serve_runs_what_its_file_says(tmp_path):
    port = free_port()
    path = _file(tmp_path, "server.toml", f'port = {port}\ntokens = ["file-token"]\n'
                 f'state_dir = "{tmp_path}"\nlog_level = "warning"\n'
                 '[[pools]]\nname = "warm"\nsize = 1\n')
    proc = _serve("--config", str(path), env={"TUMBLER_TOKEN": ""})
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer file-token"}
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        assert httpx.get(url + "/v1/pools", timeout=10).status_code == 401   # the file's token
        pools = httpx.get(url + "/v1/pools", headers=headers, timeout=10).json()
        assert [p["name"] for p in (pools if isinstance(pools, list) else pools["pools"])] == ["warm"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_pools_per_node_in_a_file_and_on_the_command_line(tmp_path):
    c = ServerConfig.from_file(_file(tmp_path, "s.yaml", "pools:\n  - {name: w, per_node: 3}\n"))
    assert [(p.name, p.size, p.per_node) for p in c.pools] == [("w", 0, 3)]
    assert PoolConfig.parse("w=2/node:python") == PoolConfig(name="w", per_node=2, image="python")
    assert PoolConfig.parse("w=8") == PoolConfig(name="w", size=8)
    with pytest.raises(ValueError, match="NAME=N/node"):
        PoolConfig.parse("w=two/node")
