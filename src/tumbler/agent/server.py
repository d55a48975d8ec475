"""The agent's server: accept connections on a unix socket, read frames, dispatch ops.

One thread per connection reads requests; an op that may block runs in a thread of its own, so
one connection can carry many requests at once (replies are matched by id). Replies and events
are written under a per-connection lock. A bad request gets an "invalid" reply, a failing
handler an "internal" one; neither disturbs other requests, connections or sessions.

Started in a sandbox as (the host passes an already-listening socket as fd 3):

    python3 -I -S -c "import sys; sys.path.insert(0, '/.tumbler'); from agent.server import main; main()" --listen-fd 3
"""
from __future__ import annotations

from . import logs
import os
import signal
import socket
import sys
import threading
import time

from . import sessions as sessions_mod
from . import args as a
from .protocol import (INTERNAL, INVALID, NOT_FOUND, PROTOCOL_VERSION, AgentRequestError,
                       BadHeader, ProtocolError, parse_header, read_raw_frame, send_frame)

log = logs.get("tumbler.agent.server")

AGENT_VERSION = "0.1.0"
# Ops answered on the connection's reader thread: they never block.
INLINE_OPS = frozenset({"health", "session.list", "model.respond"})
USAGE = "usage: agent (--listen-fd N | --socket PATH) [--subreaper] [--log-level LEVEL]"


class Agent:
    """The agent's state (sessions, start time) and its op table."""

    def __init__(self):
        self.sessions = sessions_mod.Sessions()
        self.started = time.monotonic()
        self.listener: socket.socket | None = None
        self._hosts: dict[str, object] = {}       # the env and model hosts, made at first use
        self._hosts_lock = threading.Lock()
        self.ops = {
            "health": self.health,
            "shutdown": self.shutdown,
            "session.create": self.session_create,
            "session.prestart": self.session_prestart,
            "session.run": self.session_run,
            "session.input": self.session_input,
            "session.interrupt": self.session_interrupt,
            "session.close": self.session_close,
            "session.list": self.session_list,
            "exec": _lazy("execs", "run"),
            "file.read": _lazy("files", "read"),
            "file.write": _lazy("files", "write"),
            "file.stat": _lazy("files", "stat"),
            "file.list": _lazy("files", "list_dir"),
            "file.remove": _lazy("files", "remove"),
            "file.chmod": _lazy("files", "chmod"),
            "file.mkdir": _lazy("files", "mkdir"),
            "file.upload_tar": _lazy("files", "upload_tar"),
            "file.download_tar": _lazy("files", "download_tar"),
            "proc.list": _lazy("processes", "list_processes"),
            "proc.signal": _lazy("processes", "send_signal"),
            "job.start": _lazy("jobs", "start"),
            "job.events": _lazy("jobs", "events"),
            "job.input": _lazy("jobs", "send_input"),
            "job.close_stdin": _lazy("jobs", "close_stdin"),
            "job.resize": _lazy("jobs", "resize"),
            "job.signal": _lazy("jobs", "send_signal"),
            "job.list": _lazy("jobs", "list_jobs"),
            "tcp.open": _lazy("relays", "open_"),
            "tcp.read": _lazy("relays", "read"),
            "tcp.write": _lazy("relays", "write"),
            "tcp.close": _lazy("relays", "close"),
            **{f"env.{op}": self._hosted("envhost", "EnvHost", op)
               for op in ("make", "reset", "step", "sample", "close", "list")},
            **{f"model.{op}": self._hosted("modelhost", "ModelHost", op)
               for op in ("enable", "disable", "next", "respond", "start", "stop")},
        }

    def _hosted(self, module: str, cls: str, method: str):
        """A handler on this agent's one `module.cls` (the env host, the model host), imported
        and made at the first op that needs it, to keep the agent's start lean."""
        def handler(req_args, body, emit):
            with self._hosts_lock:
                host = self._hosts.get(module)
                if host is None:
                    mod = __import__(f"{__package__}.{module}", fromlist=[cls])
                    host = self._hosts[module] = getattr(mod, cls)()
            return getattr(host, method)(req_args, body)
        return handler

    # -- ops ----------------------------------------------------------------------------------

    def health(self, args, body, emit):
        return {"version": PROTOCOL_VERSION, "agent_version": AGENT_VERSION, "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 3),
                "sessions": self.sessions.names()}, b""

    def shutdown(self, args, body, emit):
        self.sessions.close_all()
        return {}, b""

    def session_create(self, args, body, emit):
        name = a.get(args, "name", str)
        cwd = a.get(args, "cwd", str, None)
        self.sessions.create(name, a.env(args), cwd)
        return {"name": name}, b""

    def session_prestart(self, args, body, emit):
        """A spare bash for the first session of this env and cwd (a warm pool's sandbox)."""
        try:
            pid = self.sessions.prestart(a.env(args), a.get(args, "cwd", str, None))
        except AgentRequestError as e:   # bash did not start: the first session will say why
            return {"spare": False, "error": e.message}, b""
        return {"spare": pid is not None, "pid": pid}, b""

    def session_run(self, args, body, emit):
        name = a.get(args, "name", str)
        if a.get(args, "ensure", bool, False):   # the default session: made or remade here
            session = self.sessions.ensure(name, a.env(args), a.get(args, "cwd", str, None))
        else:
            session = self.sessions.get(name)
        command = a.get(args, "command", str)
        timeout = a.seconds(args, "timeout", sessions_mod.DEFAULT_TIMEOUT, sessions_mod.MAX_TIMEOUT)
        max_output = a.size(args, "max_output", sessions_mod.DEFAULT_MAX_OUTPUT,
                            sessions_mod.MAX_OUTPUT_CEILING)
        stream = a.get(args, "stream", bool, False)
        result, output = session.run(command, timeout, max_output, emit if stream else None)
        return result, b"" if stream else output

    def session_input(self, args, body, emit):
        self.sessions.get(a.get(args, "name", str)).input(body)
        return {}, b""

    def session_interrupt(self, args, body, emit):
        return self.sessions.get(a.get(args, "name", str)).interrupt(), b""

    def session_close(self, args, body, emit):
        self.sessions.close(a.get(args, "name", str))
        return {}, b""

    def session_list(self, args, body, emit):
        return {"sessions": self.sessions.list()}, b""

    # -- serving ------------------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        """Accept connections until the listener is shut down."""
        self.listener = listener
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(conn,), name="conn",
                             daemon=True).start()

    def stop(self) -> None:
        """Make `serve` return (a shut-down listening socket wakes accept)."""
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve_connection(self, conn: socket.socket) -> None:
        write_lock = threading.Lock()

        def send(header: dict, body: bytes = b"") -> None:
            with write_lock:
                send_frame(conn, header, body)

        try:
            while self._serve_frame(conn, send):
                pass
        finally:
            # A closed socket object refuses later sends (its fd is not reused under a handler).
            conn.close()

    def _serve_frame(self, conn: socket.socket, send) -> bool:
        """Read and dispatch one request; False once the connection is over."""
        try:
            head, body = read_raw_frame(conn)
        except (EOFError, OSError):
            return False
        except ProtocolError as e:
            log.warning("closing a connection: %s", e)
            return False
        try:
            header = parse_header(head)
        except BadHeader as e:
            _send_quietly(send, _error(None, INVALID, str(e)))
            return True
        rid, op, req_args = header.get("id"), header.get("op"), header.get("args")
        req_args = {} if req_args is None else req_args
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None or not isinstance(req_args, dict):
            problem = f"unknown op {op!r}" if handler is None else "args must be a JSON object"
            _send_quietly(send, _error(rid, INVALID, problem))
            return True
        if op in INLINE_OPS:
            self._handle(send, rid, op, handler, req_args, body)
        else:
            threading.Thread(target=self._handle, args=(send, rid, op, handler, req_args, body),
                             name=op, daemon=True).start()
        return True

    def _handle(self, send, rid, op: str, handler, req_args: dict, body: bytes) -> None:
        stream = _Stream(send, rid)
        out = b""
        try:
            result, out = handler(req_args, body, stream.emit)
            reply = {"id": rid, "ok": True, "result": result}
        except AgentRequestError as e:
            reply = _error(rid, e.kind, e.message)
        except Exception as e:  # a bug or an unexpected OS error: answer it, keep serving
            reply = _error_for(rid, op, e)
        _send_quietly(send, reply, out)
        if op == "shutdown":
            self.stop()


class _Stream:
    """Sends `output` events for one request; a client that went away just stops receiving."""

    def __init__(self, send, rid):
        self._send = send
        self._rid = rid
        self._broken = False

    def emit(self, chunk: bytes) -> None:
        if self._broken:
            return
        try:
            self._send({"id": self._rid, "event": "output"}, chunk)
        except OSError:
            self._broken = True


# Nothing is imported ahead of need: each op's module comes at its first use (`_lazy`), from
# the read-only mount that holds the agent's interpreter and stdlib, so there is nothing a
# sandbox could edit in between. An import-everything thread at start used to cost ~40 ms of
# CPU in every sandbox (a third of a cold start's own, charged to its CPU quota, so a 0.1-CPU
# sandbox answered later) and ~3 MiB of memory in every idle one, to save ~4 ms on a first exec.


def _not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: root inside (no CAP_SYS_PTRACE) can no longer ptrace the agent, nor
    read its memory or environment through /proc/1. Its children become dumpable again at exec."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)   # 4: PR_SET_DUMPABLE
    except (OSError, AttributeError):
        log.warning("could not make the agent non-dumpable")


def _normal_scheduling() -> None:
    """Back to the normal CPU policy if started under SCHED_BATCH (the server's policy, which
    runc and so this agent inherit: `server.scheduling`): the sandbox's programs are scheduled
    as they would be anywhere else."""
    batch = getattr(os, "SCHED_BATCH", None)
    try:
        if batch is not None and os.sched_getscheduler(0) == batch:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        log.warning("could not set the agent's scheduling policy back to SCHED_OTHER")


def _lazy(module: str, function: str):
    """A handler that imports its module on first use, to keep the agent's start lean."""
    def handler(req_args, body, emit):
        mod = __import__(f"{__package__}.{module}", fromlist=[function])
        return getattr(mod, function)(req_args, body)
    return handler


def _error(rid, kind: str, message: str) -> dict:
    return {"id": rid, "ok": False, "error": {"kind": kind, "message": message}}


def _error_for(rid, op: str, e: Exception) -> dict:
    """An error reply for an exception a handler did not turn into an AgentRequestError."""
    if isinstance(e, FileNotFoundError):
        return _error(rid, NOT_FOUND, f"{op}: {e.filename or ''}: no such file or directory")
    if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return _error(rid, INVALID, f"{op}: {e.filename or ''}: {e.strerror}")
    log.exception("op %s failed", op)
    return _error(rid, INTERNAL, f"{op} failed: {type(e).__name__}: {e}")


def _send_quietly(send, header: dict, body: bytes = b"") -> None:
    try:
        send(header, body)
    except OSError as e:
        log.info("reply to request %s not sent: %s", header.get("id"), e)


def _parse_argv(argv: list[str]) -> dict:
    opts = {"listen_fd": None, "socket": None, "subreaper": False, "log_level": "INFO"}
    it = iter(argv)
    for arg in it:
        if arg == "--listen-fd":
            fd = next(it, "")
            if not fd.isdigit():
                raise SystemExit(f"--listen-fd needs a file descriptor number\n{USAGE}")
            opts["listen_fd"] = int(fd)
        elif arg == "--socket":
            opts["socket"] = next(it, None)
        elif arg == "--subreaper":
            opts["subreaper"] = True
        elif arg == "--log-level":
            opts["log_level"] = next(it, "INFO").upper()
        else:
            raise SystemExit(f"unknown argument {arg!r}\n{USAGE}")
    if (opts["listen_fd"] is None) == (opts["socket"] is None):
        raise SystemExit(USAGE)
    return opts


def _listener(opts: dict) -> socket.socket:
    if opts["listen_fd"] is not None:
        sock = socket.socket(fileno=opts["listen_fd"])
        sock.set_inheritable(False)  # bash and execs must not hold the agent's socket
        return sock
    path = opts["socket"]
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(128)
    return sock


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Run the agent until shutdown or SIGTERM; sessions are closed on the way out."""
    opts = _parse_argv(sys.argv[1:] if argv is None else argv)
    _not_dumpable()
    logs.configure(opts["log_level"])
    _normal_scheduling()
    from . import children

    if opts["subreaper"]:
        children.become_subreaper()
    children.start_reaper()
    agent = Agent()
    listener = _listener(opts)
    # As PID 1 the agent gets no default action for SIGTERM: without a handler it would ignore it.
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGINT, _raise_exit)
    try:
        agent.serve(listener)
    finally:
        agent.sessions.close_all()
        listener.close()
