"""Controlled egress: a sandbox with network "egress" reaches only the hosts it was allowed.

The sandbox keeps its own network namespace with loopback only, as with "none". A proxy of
ours runs on the host, one process per sandbox (`python -m tumbler.runtime.egress`): it makes
its listening socket *inside* the sandbox's namespace (127.0.0.1:3128 there, bound from a
thread that entered the namespace with setns; the socket stays there, the process does not),
and it connects out from the host's namespace. So the only way out of the sandbox is one
socket whose far end is code that checks every request:

    CONNECT host:port          (HTTPS and anything tunnelled)   } allowed only when an
    GET http://host:port/path  (plain HTTP, absolute form)      }  `egress` rule names it

Rules: "name" (ports 80 and 443), "name:port", "*.name" (its subdomains, not name itself),
"*.name:port", an IPv4 address or "[v6]" with a port. Names are matched lower-case, without a
trailing dot, after a strict syntax check: nothing that is not a plain DNS name or a canonical
IP literal passes (no userinfo, no percent-escapes, no integer or octal IPs). Names are
resolved by the host's resolver, never the sandbox's: there is none in the sandbox, and what
it asks for is a name on the list or nothing. Every process in the sandbox gets HTTP_PROXY,
HTTPS_PROXY (both cases) pointing at the proxy, and NO_PROXY for its own loopback (the model
endpoint lives there). Denials go to the sandbox folder's egress.log (capped).

The process runtime starts the proxy with the sandbox (`start`) and kills it when the sandbox
stops (`stop`); so does the docker runtime, with the container's pid as the engine reports it
(a local engine only). The proxy also exits by itself once the sandbox's init is gone.
"""
from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tumbler.errors import InvalidRequest, RuntimeFailure

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
NO_PROXY = "127.0.0.1,localhost,::1"
PID_FILE = "egress.pid"
LOG_FILE = "egress.log"
LOG_MAX_BYTES = 1 << 20
MAX_HEAD = 64 << 10          # bytes of a request's line and headers
BUFFER = 1 << 20             # bytes a stream buffers before it stops reading (fewer pauses)
MAX_CONNECTIONS = 128        # at once, per sandbox
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 300.0       # a tunnel with no bytes either way this long is closed
READY_TIMEOUT_S = 10.0
CLONE_NEWNET = 0x40000000
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def proxy_env() -> dict[str, str]:
    """What every process of an egress sandbox gets, so pip, curl, npm and the rest use the proxy."""
    env = {}
    for key in ("HTTP_PROXY", "HTTPS_PROXY"):
        env[key] = env[key.lower()] = PROXY_URL
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    return env


@dataclass(frozen=True)
class Rule:
    host: str            # a name, "*.suffix", or an IP literal (v6 without brackets)
    ports: frozenset[int]

    def allows(self, host: str, port: int) -> bool:
        if port not in self.ports:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host


def parse_rules(entries: list[str]) -> list[Rule]:
    """The rules of an `egress` list; InvalidRequest naming the entry that is wrong."""
    rules = []
    for entry in entries:
        wild = entry.startswith("*.")
        host, port = _split(entry[2:] if wild else entry, default=None)
        if host is None or (wild and _ip(host) is not None):
            raise InvalidRequest(f"egress rule {entry!r}: use name, name:port, *.name[:port], "
                                 "IPv4:port or [IPv6]:port")
        if port is None and _ip(host) is not None:
            raise InvalidRequest(f"egress rule {entry!r}: an address needs a port")
        ports = frozenset({80, 443} if port is None else {port})
        rules.append(Rule(("*." if wild else "") + host, ports))
    return rules


def allowed(rules: list[Rule], target: str, default_port: int | None = None) -> tuple[str, int] | None:
    """(host, port) of a request's target when a rule allows it, else None."""
    host, port = _split(target, default=default_port)
    if host is None or port is None:
        return None
    return (host, port) if any(r.allows(host, port) for r in rules) else None


def _split(text: str, default: int | None) -> tuple[str | None, int | None]:
    """(host, port) of "host[:port]" or "[v6][:port]", strictly; (None, None) if malformed."""
    text = text.lower()
    if text.startswith("["):
        inside, close, rest = text[1:].partition("]")
        if not close or _ip(inside) is None or _ip(inside).version != 6:
            return None, None
        host, port_text = inside, rest[1:] if rest.startswith(":") else (None if not rest else "x")
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
        host = host[:-1] if host.endswith(".") else host
        if _ip(host) is None and not _is_name(host):
            return None, None
    if port_text is None:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536 or port_text.startswith("0"):
        return None, None
    return host, int(port_text)


def _ip(text: str):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip if str(ip) == text else None   # canonical only: no 0x7f.1, 127.1, 2130706433


def _is_name(host: str) -> bool:
    labels = host.split(".")
    return (0 < len(host) <= 253 and len(labels) >= 1 and all(_LABEL.match(x) for x in labels)
            and not labels[-1].isdigit())    # 127.1 and friends are not names


# -- the proxy ----------------------------------------------------------------------------------

class _Proxy:
    def __init__(self, rules: list[Rule], log_path: Path | None):
        self.rules, self.log_path = rules, log_path
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.slots:
            try:
                await self._handle(reader, writer)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError):
                pass
            finally:
                writer.close()

    async def _handle(self, reader, writer) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        if len(head) > MAX_HEAD:
            return await self._refuse(writer, 431, "request head too large", "")
        line, _, rest = head.decode("latin-1").partition("\r\n")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return await self._refuse(writer, 400, "bad request line", line)
        method, target, version = parts
        if method == "CONNECT":
            where, tail = allowed(self.rules, target), None
        else:
            url = urlsplit(target)
            if url.scheme != "http" or url.username is not None or url.password is not None:
                return await self._refuse(writer, 403, "only http:// URLs without userinfo", line)
            where = allowed(self.rules, url.netloc, 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            headers = [h for h in rest.split("\r\n") if h and not h.lower().startswith(
                ("proxy-", "connection:", "keep-alive:"))]
            tail = f"{method} {path} {version}\r\n" + "\r\n".join(headers + ["Connection: close"])
        if where is None:
            return await self._refuse(writer, 403, "not on this sandbox's egress list", line)
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*where, limit=BUFFER), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            return await self._refuse(writer, 502, f"cannot reach {where[0]}:{where[1]}: {exc}", line)
        if tail is None:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(tail.encode("latin-1") + b"\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _refuse(self, writer, status: int, why: str, line: str) -> None:
        self._log(f"{status} {line[:300]!r}: {why}")
        body = f"tumbler egress: {why}\n".encode()
        writer.write(f"HTTP/1.1 {status} {'Forbidden' if status == 403 else 'Refused'}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    def _log(self, text: str) -> None:
        if self.log_path is None:
            return
        try:
            if self.log_path.exists() and self.log_path.stat().st_size > LOG_MAX_BYTES:
                return
            with open(self.log_path, "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
        except OSError:
            pass


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await asyncio.wait_for(src.read(BUFFER), IDLE_TIMEOUT_S):
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        try:
            dst.write_eof() if dst.can_write_eof() else dst.close()
        except OSError:
            dst.close()


def listen_in(netns: str, port: int = PROXY_PORT) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:port inside the network namespace at `netns`."""
    made: dict = {}

    def inside() -> None:   # setns moves this thread only; the socket keeps the namespace
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))
            sock.listen(256)
            made["sock"] = sock
        except OSError as exc:
            made["error"] = exc
    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["sock"]


async def serve(sock: socket.socket, rules: list[Rule], log_path: Path | None,
                alive=lambda: True) -> None:
    """Serve the proxy on `sock` while alive() holds (checked every second)."""
    proxy = _Proxy(rules, log_path)
    server = await asyncio.start_server(proxy.handle, sock=sock, limit=BUFFER)
    async with server:
        while alive():
            await asyncio.sleep(1.0)


# -- the runtime's side -------------------------------------------------------------------------

def start(sandbox_dir: Path, init_pid: int, entries: list[str]) -> int:
    """Start the sandbox's proxy; returns its pid once it listens (RuntimeFailure if it cannot)."""
    parse_rules(entries)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tumbler.runtime.egress", str(sandbox_dir), str(init_pid), *entries],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = b""
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline and proc.poll() is None:
        line += proc.stdout.read() or b""
        if b"ready" in line:
            break
        time.sleep(0.01)
    if b"ready" not in line:
        proc.kill()
        proc.wait(5)
        raise RuntimeFailure(f"the egress proxy did not start: {line.decode(errors='replace')[-500:]}")
    proc.stdout.close()
    (sandbox_dir / PID_FILE).write_text(str(proc.pid))
    return proc.pid


def stop(sandbox_dir: Path) -> None:
    """Kill the sandbox's proxy, if one runs (checked by its command line: pids get reused)."""
    pid_file = sandbox_dir / PID_FILE
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"tumbler.runtime.egress" in cmdline and str(sandbox_dir).encode() in cmdline:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid)
    pid_file.unlink(missing_ok=True)


def _reap(pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:   # not our child: its parent (or init) reaps it
            return
        if done:
            return
        time.sleep(0.01)


def _main(argv: list[str]) -> None:
    sandbox_dir, init_pid, entries = Path(argv[0]), int(argv[1]), argv[2:]
    netns = f"/proc/{init_pid}/ns/net"
    ns_id = os.stat(netns).st_ino
    sock = listen_in(netns)

    def alive() -> bool:   # the sandbox's init still holds the namespace we serve
        try:
            return os.stat(netns).st_ino == ns_id
        except OSError:
            return False
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    asyncio.run(serve(sock, parse_rules(entries), sandbox_dir / LOG_FILE, alive))


if __name__ == "__main__":
    _main(sys.argv[1:])
