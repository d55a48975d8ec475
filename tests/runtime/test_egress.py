"""network="egress": a sandbox reaches the hosts on its list through our proxy, and nothing else.

Servers live on 127.0.0.2 on the host (loopback, so nothing leaves the machine); inside the
sandbox 127.0.0.2 is its own loopback, where nothing listens: only the proxy leads out.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import socketserver
import subprocess
import threading
import zipfile

import pytest

from tumbler.errors import InvalidRequest
from tumbler.runtime.egress import allowed, parse_rules

HOST = "127.0.0.2"

# Run in the sandbox: raw requests to the proxy, one per probe; prints the status line of each.
PROBE = r'''
import json, socket, sys
def ask(raw):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(raw.encode())
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
    line = data.split(b"\r\n")[0].decode()
    if " 200 " in line + " " and raw.startswith("CONNECT"):   # a tunnel: talk through it
        s.sendall(b"GET /hello HTTP/1.0\r\nHost: x\r\n\r\n")
        while chunk := s.recv(4096): data += chunk
        line += " | " + data.decode(errors="replace").splitlines()[-1]
    return line
results = {name: ask(raw) for name, raw in json.loads(sys.argv[1]).items()}
def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=3); return "connected"
    except OSError as e: return type(e).__name__
results["direct"] = direct(sys.argv[2], int(sys.argv[3]))
try:
    socket.getaddrinfo("pypi.org", 443); results["dns"] = "resolved"
except OSError as e: results["dns"] = type(e).__name__
print(json.dumps(results))
'''


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.2 serving /hello and a PEP 503 index of one wheel."""
    wheel = _wheel()
    (tmp_path / "simple" / "tumblerdemo").mkdir(parents=True)
    (tmp_path / wheel[0]).write_bytes(wheel[1])
    (tmp_path / "simple" / "tumblerdemo" / "index.html").write_text(
        f'<a href="/{wheel[0]}">{wheel[0]}</a>')

    class Handler(_Hello, http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            http.server.SimpleHTTPRequestHandler.__init__(self, *a, directory=str(tmp_path), **kw)

        def do_GET(self):
            if self.path == "/hello":
                return _Hello.do_GET(self)
            return http.server.SimpleHTTPRequestHandler.do_GET(self)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
    srv = Server((HOST, 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _wheel() -> tuple[str, bytes]:
    files = {"tumblerdemo/__init__.py": b"WHERE = 'from the allowed host'\n",
             "tumblerdemo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tumblerdemo\nVersion: 1.0\n",
             "tumblerdemo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for n, d in files.items()) + "tumblerdemo-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in {**files, "tumblerdemo-1.0.dist-info/RECORD": record.encode()}.items():
            z.writestr(name, data)
    return "tumblerdemo-1.0-py3-none-any.whl", buf.getvalue()


def test_rules_match_strictly():
    rules = parse_rules(["pypi.org", "files.example:8443", "*.pythonhosted.org", "127.0.0.2:8000",
                         "[::1]:9000"])
    assert allowed(rules, "pypi.org:443") == ("pypi.org", 443)
    assert allowed(rules, "PyPI.org.:80") == ("pypi.org", 80)
    assert allowed(rules, "files.pythonhosted.org:443") and not allowed(rules, "pythonhosted.org:443")
    assert allowed(rules, "127.0.0.2:8000") and allowed(rules, "[::1]:9000")
    for target in ["pypi.org:22", "pypi.org", "pypi.org.evil.com:443", "evilpypi.org:443",
                   "pypi.org@evil.com:443", "evil.com#pypi.org:443", "pypi.org:0443",
                   "pypi.org%2e:443", "127.0.0.2:8001", "127.0.0.3:8000", "0x7f.0.0.2:8000",
                   "2130706434:8000", "127.2:8000", "[::ffff:127.0.0.2]:8000", "[::1]:9001",
                   "files.example:443", "pypi.org:443:443", " pypi.org:443", "[::1]x:9000"]:
        assert allowed(rules, target) is None, target
    for bad in ["", "a b", "1.2.3.4", "*.1.2.3.4:80", "x:99999", "http://x"]:
        with pytest.raises(InvalidRequest, match="egress rule"):
            parse_rules([bad])


def test_spec_refuses_half_configured_egress(make_sandbox):
    with pytest.raises(InvalidRequest, match="needs the hosts"):
        make_sandbox(network="egress")
    with pytest.raises(InvalidRequest, match="for network 'egress'"):
        make_sandbox(network="none", egress=["pypi.org"])
    with pytest.raises(InvalidRequest, match="egress rule"):
        make_sandbox(network="egress", egress=["127.1:80"])


def test_sandbox_reaches_only_its_hosts(make_sandbox, server):
    sb = make_sandbox(network="egress", egress=[f"{HOST}:{server}"])
    reaches_only_its_hosts(sb, server, sb.runtime.paths.sandboxes / sb.id / "egress.log")


def reaches_only_its_hosts(sb, port: int, log_path) -> None:
    probes = {
        "allowed_get": f"GET http://{HOST}:{port}/hello HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
        "allowed_connect": f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n",
        "other_port": f"CONNECT {HOST}:{port + 1} HTTP/1.1\r\n\r\n",
        "other_host": f"CONNECT 127.0.0.3:{port} HTTP/1.1\r\n\r\n",
        "host_loopback": f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n",
        "hex_ip": f"CONNECT 0x7f.0.0.2:{port} HTTP/1.1\r\n\r\n",
        "integer_ip": f"CONNECT 2130706434:{port} HTTP/1.1\r\n\r\n",
        "mapped_v6": f"CONNECT [::ffff:{HOST}]:{port} HTTP/1.1\r\n\r\n",
        "userinfo": f"GET http://{HOST}:{port}@127.0.0.3:{port}/ HTTP/1.1\r\n\r\n",
        "host_header_lie": f"GET http://127.0.0.3:{port}/ HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n",
        "origin_form": f"GET /hello HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n",
        "name": f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n",
        "junk": "\x00\x01garbage\r\n\r\n",
    }
    result = sb.exec(["python3", "-c", PROBE, json.dumps(probes), HOST, str(port)], timeout=60)
    assert result.exit_code == 0, result.stderr
    got = json.loads(result.stdout)
    assert got.pop("allowed_get").startswith("HTTP/1.0 200")
    assert got.pop("allowed_connect").endswith("200 Connection Established | hello /hello")
    assert got.pop("direct") == "ConnectionRefusedError"     # the sandbox's own loopback
    assert got.pop("dns") == "gaierror"                      # no resolver, no route
    assert got.pop("junk").startswith("HTTP/1.1 400")
    assert got.pop("origin_form").startswith("HTTP/1.1 403")
    for name, line in got.items():
        assert line.startswith("HTTP/1.1 403"), (name, line)
    log = log_path.read_text()
    assert "127.0.0.3" in log and "not on this sandbox's egress list" in log


def test_pip_installs_from_an_allowed_index(make_sandbox, server):
    from tumbler.runtime.images import ImageStore
    from tumbler.runtime.pip_images import PIP_BASE, PIP_BASE_PACKAGES
    if not ImageStore().exists(PIP_BASE):
        ImageStore().build(PIP_BASE, packages=PIP_BASE_PACKAGES)
    port = server
    sb = make_sandbox(image=PIP_BASE, network="egress", egress=[f"{HOST}:{port}"])
    pip = ["python3", "-m", "pip", "install", "--break-system-packages", "--no-cache-dir",
           "--index-url", f"http://{HOST}:{port}/simple", "--trusted-host", HOST]
    done = sb.exec(pip + ["tumblerdemo"], timeout=120)
    assert done.exit_code == 0, done.stdout + done.stderr
    check = sb.exec(["python3", "-c", "import tumblerdemo; print(tumblerdemo.WHERE)"])
    assert check.stdout.strip() == "from the allowed host"
    # The same install from a host that is not on the list fails.
    denied = sb.exec(pip[:-3] + ["http://127.0.0.3:1/simple", "--trusted-host", "127.0.0.3",
                                 "--retries", "0", "--timeout", "5", "tumblerdemo==9"], timeout=120)
    assert denied.exit_code != 0


def proxies_of(sandbox_dir) -> list[str]:
    """The pids of the egress proxies serving the sandbox whose folder is `sandbox_dir`."""
    out = subprocess.run(["pgrep", "-f", f"tumbler.runtime.egress {sandbox_dir}"],
                         capture_output=True, text=True).stdout
    return out.split()


def test_proxy_goes_with_its_sandbox(make_sandbox, server):
    sb = make_sandbox(network="egress", egress=[f"{HOST}:{server}"])
    sdir = sb.runtime.paths.sandboxes / sb.id

    def proxies():
        return proxies_of(sdir)
    assert len(proxies()) == 1
    sb.stop()
    assert proxies() == []
    sb.start()
    assert len(proxies()) == 1
    assert sb.exec(["python3", "-c", f"import urllib.request; print(urllib.request.urlopen("
                    f"'http://{HOST}:{server}/hello', timeout=10).read().decode())"]).stdout.strip() \
        == "hello /hello"
    sb.remove()
    assert proxies() == []


def test_the_docker_backend_has_egress_too(server):
    """The same proxy, in a Podman container's network namespace (found by its pid); it stops
    and starts with the container, and a reset gets a new one."""
    from test_backends import _docker_runtime
    from tumbler.local import LocalSandbox
    rt = _docker_runtime()
    sb = LocalSandbox("debian", runtime=rt, network="egress", egress=[f"{HOST}:{server}"])
    sdir = rt._dir(sb.id)

    def proxies():
        return proxies_of(sdir)
    fetch = ["python3", "-c", f"import urllib.request; print(urllib.request.urlopen("
             f"'http://{HOST}:{server}/hello', timeout=10).read().decode())"]
    try:
        reaches_only_its_hosts(sb, server, sdir / "egress.log")
        assert len(proxies()) == 1
        sb.stop()
        assert proxies() == []
        sb.start()
        assert sb.exec(fetch).stdout.strip() == "hello /hello" and len(proxies()) == 1
        sb.reset()
        assert sb.exec(fetch).stdout.strip() == "hello /hello" and len(proxies()) == 1
    finally:
        sb.remove()
    assert proxies() == []


def test_egress_on_an_engine_elsewhere_says_why(server, tmp_path):
    """Podman reached over TCP (a relay on loopback to its socket) is not known to be on this
    host: its containers' namespaces cannot be entered, and egress is refused, saying why."""
    import socket
    from test_backends import _docker_runtime
    from tumbler.runtime.docker import DockerRuntime
    from tumbler.runtime.spec import SandboxSpec
    local = _docker_runtime()
    relay = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                client, _ = relay.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(local.url.removeprefix("unix://"))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    try:
        rt = DockerRuntime(f"tcp://127.0.0.1:{relay.getsockname()[1]}")
        with pytest.raises(InvalidRequest, match="needs the container engine on this host"):
            rt.create(SandboxSpec(image="debian", network="egress", egress=[f"{HOST}:{server}"]))
    finally:
        relay.close()


def _pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(2)
            except OSError:
                pass
