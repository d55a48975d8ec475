"""Bash sessions: one interactive bash per session, on its own pty, driven through a pipe.

Bash gets the pty slave as its terminal (0, 1, 2) and the read end of a pipe as fd 5. To run a
command the agent writes it, NUL-terminated, into the pipe and writes one short trigger line on
the pty: the line makes bash `read` the command from fd 5, `eval` it and print a sentinel
`\\x1e<nonce>:<status>\\x1e`. Because the command never crosses the tty, any length and any
number of lines work, and a command's own `read x` reads the terminal (fed by `input`).

A reader thread per session reads the pty master, hands bytes to the running command (capped,
counted, optionally streamed) and watches for the sentinel. Bytes that arrive between commands
(a background job's output, job notices) are kept for the next command.
"""
from __future__ import annotations

import fcntl
from . import logs
import os
import re
import select
import signal
import termios
import threading
import time

from . import children, processes
from .protocol import CONFLICT, EXISTS, INVALID, NOT_FOUND, AgentRequestError

log = logs.get("tumbler.agent.sessions")

BASH = "/bin/bash"
COMMAND_FD = 5                    # bash reads commands from this fd (the pipe's read end)
DEFAULT_TIMEOUT = 300.0           # seconds
MAX_TIMEOUT = 7 * 24 * 3600.0     # seconds
DEFAULT_MAX_OUTPUT = 64 << 20     # bytes kept per command
MAX_OUTPUT_CEILING = 256 << 20    # bytes; no caller may ask for more
INIT_TIMEOUT = 10.0               # seconds for bash to start and print the init sentinel
INTERRUPT_GRACE = 0.3             # seconds after ^C before the marker line is sent
KILL_ROUNDS = 10                  # rounds of SIGKILL to the foreground group ...
KILL_ROUND_WAIT = 0.2             # ... seconds each, before the session is given up
RECLAIM_POLL = 0.005              # seconds between looks at who holds the terminal after a stop
READ_CHUNK = 1 << 16              # bytes per read of the pty master
DRAIN_TIME = 0.1                  # seconds spent reading what a dead bash left in the pty
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# A sentinel is \x1e, a 16-hex-digit nonce, ':', the status, \x1e. The nonce is new for every
# command, so neither user output nor a late sentinel of an earlier command can end this one.
SENTINEL = re.compile(rb"\x1e([0-9a-f]{16}):(-?\d{1,11})\x1e")
PARTIAL = re.compile(rb"\x1e[0-9a-f]{0,16}(?::-?\d{0,11})?")
SENTINEL_MAX = 1 + 16 + 1 + 12 + 1

# $? is restored right before eval (not after the command), because the `read` that starts the
# next line would otherwise reset it to 0 and `false` then `echo $?` would print 0.
# The command goes into the pipe behind its nonce, and __tmb_get skips what lacks it: a ^C that
# lands before (or during) bash's `read` leaves that command, or its tail, in the pipe, and the
# next trigger would otherwise run it ("bash: leep: command not found" after `sleep 60`).
# The loop is a function defined once, so the trigger line holds no reserved word: right after a
# syntax error in eval (`[[ 1`) bash's parser may not take the next line's words as such.
TRIGGER = (
    "__tmb_get %(nonce)s; __tmb_rc \"${__tmb_s:-0}\"; builtin eval \"$__tmb_c\"; "
    "__tmb_s=$?; builtin printf '\\036%%s:%%d\\036' %(nonce)s \"$__tmb_s\"\n"
)
INIT = (
    "PS1=''; PS2=''; PS0=''; unset PROMPT_COMMAND MAILCHECK; set +o history; "
    "__tmb_rc() { return $1; }; "
    "__tmb_get() { while IFS= builtin read -r -d '' -u %(fd)d __tmb_c; do "
    "if builtin [ \"${__tmb_c:0:16}\" = \"$1\" ]; then __tmb_c=${__tmb_c:16}; return 0; fi; done; "
    "__tmb_c=''; return 1; }; builtin printf '\\036%(nonce)s:0\\036'\n"
)
MARKER = "builtin printf '\\036%s:130\\036'\n"


def _nonce() -> str:
    return os.urandom(8).hex()


class _Command:
    """One running command: its output (first `cap` bytes kept, all counted) and its end."""

    def __init__(self, nonce: bytes, cap: int, on_output):
        self.end_nonce = nonce
        self.stale_nonces: set[bytes] = set()
        self.cap = cap
        self.on_output = on_output
        self.output = bytearray()
        self.total = 0
        self.status: int | None = None
        self.done = threading.Event()

    def add(self, data: bytes) -> bytes:
        """Keep what fits under the cap; returns the part kept (what a stream may show)."""
        self.total += len(data)
        room = self.cap - len(self.output)
        kept = data[:room] if room < len(data) else data
        if kept:
            self.output += kept
        return kept


class Session:
    """An interactive bash on a pty. Thread-safe: one command at a time, input at any time."""

    def __init__(self, name: str, env: dict[str, str], cwd: str | None):
        self.name = name
        self._lock = threading.Lock()
        self._current: _Command | None = None
        self._idle = bytearray()         # output seen while no command ran
        self._idle_total = 0             # bytes seen while idle, kept or not
        self._held = b""                 # a possible sentinel prefix at the end of the last read
        self.alive = True
        self.closed = False
        self.exit_code: int | None = None
        self._exited = threading.Event()
        self.pid, self._master, self._slave, self._cmd_w = self._start(env, cwd)
        self._pidfd = _pidfd(self.pid)
        self._reader = threading.Thread(target=self._read_loop, name=f"session-{name}", daemon=True)
        self._reader.start()
        self._initialize()

    # -- start --------------------------------------------------------------------------------

    def _start(self, env: dict[str, str], cwd: str | None) -> tuple[int, int, int, int]:
        """Fork bash; returns its pid, the pty master, our copy of the slave, the pipe's write end.

        The agent keeps the slave open (close-on-exec) to flush stale input before each command.
        """
        if not os.path.exists(BASH):
            # The protocol relies on bash's `read -d '' -u N`, which a POSIX sh lacks; exec works.
            raise AgentRequestError(INVALID, f"this image has no {BASH}, which sessions run on; "
                                    "use exec (e.g. [\"sh\", \"-c\", ...]) or add bash to the image")
        master, slave = os.openpty()
        _configure_tty(slave)
        cmd_r, cmd_w = os.pipe()
        full_env = dict(os.environ)
        full_env.update({"TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat", "HISTFILE": "/dev/null"})
        full_env.update(env)
        argv = [BASH, "--noediting", "--noprofile", "--norc", "-i"]
        try:
            pid = children.spawn(lambda: _fork_bash(argv, full_env, cwd, slave, cmd_r))
        except BaseException:
            for fd in (master, slave, cmd_w):
                os.close(fd)
            raise
        finally:
            os.close(cmd_r)
        return pid, master, slave, cmd_w

    def _initialize(self) -> None:
        nonce = _nonce()
        cmd = _Command(nonce.encode(), DEFAULT_MAX_OUTPUT, None)
        with self._lock:
            self._current = cmd
        os.write(self._master, (INIT % {"fd": COMMAND_FD, "nonce": nonce}).encode())
        if not cmd.done.wait(INIT_TIMEOUT) or not self.alive:
            self.close()
            raise AgentRequestError(CONFLICT, f"session {self.name!r}: bash did not start: "
                                    f"{bytes(cmd.output[-500:]).decode(errors='replace')!r}")
        # The default prompt printed before the init line is of no interest to anyone.
        with self._lock:
            self._idle.clear()
            self._idle_total = 0

    # -- running ------------------------------------------------------------------------------

    def run(self, command: str, timeout: float, max_output: int, on_output=None) -> tuple[dict, bytes]:
        """Run one command; returns (result, output bytes). See `tumbler.agent` for the shape."""
        data = command.encode("utf-8", "surrogateescape")
        if b"\0" in data:
            raise AgentRequestError(INVALID, "command contains a NUL byte")
        nonce = _nonce()
        cmd = _Command(nonce.encode(), max_output, on_output)
        started = time.monotonic()
        with self._lock:
            self._check_usable()
            if self._current is not None:
                raise AgentRequestError(CONFLICT, f"session {self.name!r} is busy: a command is still "
                                        "running (interrupt it or wait)")
            self._current = cmd
            pending = bytes(self._idle)
            cmd.total = self._idle_total - len(pending)
            self._idle.clear()
            self._idle_total = 0
            # Streamed under the lock so that it precedes anything the reader emits for cmd.
            kept = cmd.add(pending) if pending else b""
            if kept and on_output:
                on_output(kept)
        try:
            # Input typed for an earlier command and never read would be run as a command, or
            # would glue itself to the trigger line: throw it away.
            termios.tcflush(self._slave, termios.TCIFLUSH)
            # The trigger goes first: bash reads the pipe only after reading it, so a command
            # longer than the pipe's buffer does not block this write forever.
            self._write_tty((TRIGGER % {"nonce": nonce}).encode())
            self._write_all(self._cmd_w, nonce.encode() + data + b"\0")
        except BaseException as e:
            with self._lock:
                self._current = None
            if isinstance(e, OSError):
                raise AgentRequestError(CONFLICT, f"session {self.name!r}: bash is gone ({e})") from None
            raise
        timed_out = not cmd.done.wait(timeout)
        if timed_out:
            self._stop(cmd)
        return self._result(cmd, started, timed_out=timed_out, interrupted=False), bytes(cmd.output)

    def interrupt(self) -> dict:
        """^C the running command (then SIGKILL its process group if it ignores SIGINT)."""
        with self._lock:
            self._check_usable()
            cmd = self._current
        if cmd is not None:
            self._stop(cmd)
        return {"interrupted": cmd is not None}

    def input(self, data: bytes) -> None:
        """Write bytes to the terminal, as if typed (a command's `read x` gets them)."""
        with self._lock:
            self._check_usable()
            if self._current is None:
                raise AgentRequestError(CONFLICT, f"session {self.name!r} is not running a command: "
                                        "bash would run the input as a command; use session.run")
        self._write_tty(data)

    def _result(self, cmd: _Command, started: float, timed_out: bool, interrupted: bool) -> dict:
        alive = self.alive and not self.closed
        if not alive and cmd.status is None and not timed_out:
            exit_code = self.exit_code
        elif timed_out:
            exit_code = None
        else:
            exit_code = cmd.status
        with self._lock:
            if self._current is cmd:
                self._current = None
        return {
            "exit_code": exit_code,
            "output_size": cmd.total,
            "truncated": cmd.total > len(cmd.output),
            "timed_out": timed_out,
            "session_alive": alive,
            "duration_s": round(time.monotonic() - started, 6),
        }

    def _stop(self, cmd: _Command) -> None:
        """End `cmd`: ^C, then a marker line, then SIGKILL of the foreground group; else close."""
        self._write_tty(b"\x03")
        if cmd.done.wait(INTERRUPT_GRACE):
            return self._reclaim_terminal()
        # An interactive bash drops the rest of the line when its foreground job dies of SIGINT,
        # so the sentinel may never come: a fresh marker line tells when bash reads again.
        marker = _nonce()
        with self._lock:
            if cmd.done.is_set():
                return
            cmd.stale_nonces.add(cmd.end_nonce)
            cmd.end_nonce = marker.encode()
        self._write_tty((MARKER % marker).encode())
        for _ in range(KILL_ROUNDS):
            if cmd.done.wait(KILL_ROUND_WAIT):
                return self._reclaim_terminal()
            self._kill_foreground()
        if not cmd.done.is_set():
            log.warning("session %s: bash itself does not stop; closing the session", self.name)
            self.close()

    def _reclaim_terminal(self) -> None:
        """Kill a job that still holds the terminal once the stopped command has ended.

        A ^C that lands between bash's fork of a command and the child's taking of the terminal
        is handled by bash as if at the prompt: it answers the marker line, and only then waits
        for the child, which goes on running as the terminal's foreground (a `sleep 60` that
        held up the next command). Bash takes the terminal back when that job is gone; the
        newline it prints then lands in the next command's output (rare, and not worth a second
        marker round trip on every stop)."""
        deadline = time.monotonic() + KILL_ROUNDS * KILL_ROUND_WAIT
        # SIGINT first: of a job killed by SIGKILL, bash prints "Killed" into the next command.
        sig = signal.SIGINT
        while self._kill_foreground(sig) and time.monotonic() < deadline:
            sig = signal.SIGKILL
            time.sleep(RECLAIM_POLL)

    def _kill_foreground(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the terminal's foreground group unless it is bash's own; True if it was not."""
        try:
            pgrp = os.tcgetpgrp(self._master)
        except OSError:
            return False
        if pgrp <= 1 or pgrp == self.pid:  # bash's own group is the session: never kill it here
            return False
        try:
            os.killpg(pgrp, sig)
        except ProcessLookupError:
            pass
        return True

    def _check_usable(self) -> None:
        if self.closed:
            raise AgentRequestError(CONFLICT, f"session {self.name!r} is closed")
        if not self.alive:
            raise AgentRequestError(CONFLICT, f"session {self.name!r} has ended (bash exited with "
                                    f"{self.exit_code}); close it and create a new one")

    def _write_tty(self, data: bytes) -> None:
        try:
            self._write_all(self._master, data)
        except OSError as e:
            raise AgentRequestError(CONFLICT, f"session {self.name!r}: terminal closed ({e})") from None

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    # -- reading ------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        master_open = True
        while True:
            # Without a pidfd, poll with a timeout to notice bash's exit while jobs keep the pty open.
            ready = {fd for fd, _ in poller.poll(None if self._pidfd is not None else 100)}
            if master_open and self._master in ready:
                try:
                    data = os.read(self._master, READ_CHUNK)
                except OSError:  # EIO: no process holds the slave any more
                    data = b""
                if data:
                    self._feed(data)
                    continue
                poller.unregister(self._master)
                master_open = False
            if self._pidfd is not None and self._pidfd not in ready:
                continue
            code = children.wait(self.pid, 0 if self._pidfd is not None else os.WNOHANG)
            if code is None:
                continue
            self._drain()
            self._on_exit(code)
            return

    def _drain(self) -> None:
        """Read what bash wrote before it exited (bounded: its jobs may write on forever)."""
        deadline = time.monotonic() + DRAIN_TIME
        while time.monotonic() < deadline and select.select([self._master], [], [], 0)[0]:
            try:
                data = os.read(self._master, READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            self._feed(data)

    def _on_exit(self, code: int) -> None:
        with self._lock:
            self.exit_code = code
            self.alive = False
            cmd = self._current
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set()
        if cmd is not None:
            cmd.done.set()

    def _feed(self, data: bytes) -> None:
        """Route bytes read from the pty to the running command (or keep them) and spot sentinels."""
        streams = []
        finished = None
        with self._lock:
            buf = self._held + data if self._held else data
            self._held = b""
            pos = 0
            if b"\x1e" in buf:
                for m in SENTINEL.finditer(buf):
                    finished = self._on_sentinel(m, buf, pos, streams) or finished
                    pos = m.end()
                tail = buf[pos:]
                cut = tail.rfind(b"\x1e", max(0, len(tail) - SENTINEL_MAX))
                if cut >= 0 and PARTIAL.fullmatch(tail, cut):
                    self._held = tail[cut:]
                    tail = tail[:cut]
            else:
                tail = buf
            if tail:
                self._emit(tail, streams)
        for cmd, chunk in streams:
            cmd.on_output(chunk)
        if finished is not None:
            finished.done.set()

    def _on_sentinel(self, m, buf: bytes, pos: int, streams: list) -> _Command | None:
        cmd = self._current
        nonce = m.group(1)
        if cmd is None or (nonce != cmd.end_nonce and nonce not in cmd.stale_nonces):
            self._emit(buf[pos:m.end()], streams)  # looks like a sentinel, is not ours
            return None
        self._emit(buf[pos:m.start()], streams)
        if nonce in cmd.stale_nonces:
            cmd.status = int(m.group(2))
            return None
        if cmd.status is None or not cmd.stale_nonces:
            cmd.status = int(m.group(2))
        self._current = None
        return cmd

    def _emit(self, data: bytes, streams: list) -> None:
        if not data:
            return
        cmd = self._current
        if cmd is None:
            self._idle_total += len(data)
            room = MAX_OUTPUT_CEILING - len(self._idle)
            self._idle += data[:room]
            return
        kept = cmd.add(data)
        if kept and cmd.on_output:
            streams.append((cmd, kept))

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in bash's session (background jobs included), and reap bash."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            cmd = self._current
        _kill_session(self.pid)
        self._exited.wait(INIT_TIMEOUT)
        os.close(self._cmd_w)
        if cmd is not None:
            cmd.done.set()
        self._reader.join(1.0)
        os.close(self._master)
        os.close(self._slave)

    def info(self) -> dict:
        return {"name": self.name, "pid": self.pid, "busy": self._current is not None,
                "alive": self.alive and not self.closed}


class Sessions:
    """The agent's named sessions, and at most one spare bash started ahead of them.

    A warm pool's sandbox is handed over with a spare (`prestart`): the first session made
    with the same env and cwd (the default session at the first command) takes it over
    instead of starting bash then, which is most of a first command's cost. The spare is no
    session: it is not listed and has no name until it is taken.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._by_name: dict[str, Session] = {}
        self._spare: tuple[tuple, Session] | None = None   # (env and cwd it has, the bash)
        self._prestarting = threading.Lock()

    def prestart(self, env: dict[str, str], cwd: str | None) -> int | None:
        """Start a spare bash with `env` in `cwd` unless one of those is up; its pid, or None
        if the image has no bash (sessions will say so; exec still works)."""
        if not os.path.exists(BASH):
            return None
        key = (tuple(sorted(env.items())), cwd)
        with self._prestarting:   # one at a time: a second one finds the first's spare
            with self._lock:
                current = self._spare
                if current is not None and current[0] == key and current[1].alive \
                        and not current[1].closed:
                    return current[1].pid
                self._spare = None
            if current is not None:
                current[1].close()
            spare = Session("spare", env, cwd)
            with self._lock:
                self._spare = (key, spare)
            return spare.pid

    def _take_spare(self, name: str, env: dict[str, str], cwd: str | None) -> Session | None:
        """The spare as session `name` if it was made for this env and cwd (else it stays
        for a session that is)."""
        with self._lock:
            spare = self._spare
            if spare is None or spare[0] != (tuple(sorted(env.items())), cwd):
                return None
            self._spare = None
        session = spare[1]
        if session.alive and not session.closed:
            session.name = name
            session._reader.name = f"session-{name}"
            return session
        session.close()   # its bash exited meanwhile
        return None

    def create(self, name: str, env: dict[str, str], cwd: str | None) -> Session:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise AgentRequestError(INVALID, f"bad session name {name!r}: use 1-64 characters of "
                                    "A-Z a-z 0-9 _ . -")
        if cwd is not None and not os.path.isdir(cwd):
            raise AgentRequestError(INVALID, f"cwd {cwd!r} is not a directory")
        with self._lock:
            if name in self._by_name:
                raise AgentRequestError(EXISTS, f"session {name!r} already exists; close it or "
                                        "pick another name")
            self._by_name[name] = None  # reserved while bash starts
        try:
            session = self._take_spare(name, env, cwd) or Session(name, env, cwd)
        except BaseException:
            with self._lock:
                del self._by_name[name]
            raise
        with self._lock:
            self._by_name[name] = session
        return session

    def ensure(self, name: str, env: dict[str, str], cwd: str | None) -> Session:
        """The live session `name`, made (again) if it is missing or its bash has exited.

        The policy of a default session, in one place and one round trip: made on the first
        command, made anew after `exit` (agents under RL type it often).
        """
        with self._lock:
            current = self._by_name.get(name)
        if current is not None and current.alive and not current.closed:
            return current
        if current is not None:
            try:
                self.close(name)
            except AgentRequestError:
                pass
        try:
            return self.create(name, env, cwd)
        except AgentRequestError as e:
            if e.kind != EXISTS:   # else a concurrent first command made it: use that one
                raise
        for _ in range(100):   # it may still be starting (reserved): wait for it, briefly
            with self._lock:
                current = self._by_name.get(name)
            if current is not None:
                return current
            time.sleep(0.01)
        raise AgentRequestError(CONFLICT, f"session {name!r} is still starting")

    def get(self, name: str) -> Session:
        with self._lock:
            session = self._by_name.get(name)
        if session is None:
            raise AgentRequestError(NOT_FOUND, f"no session named {name!r}")
        return session

    def close(self, name: str) -> None:
        session = self.get(name)
        with self._lock:
            if self._by_name.get(name) is session:
                del self._by_name[name]
        session.close()

    def names(self) -> list[str]:
        with self._lock:
            return [n for n, s in self._by_name.items() if s is not None]

    def list(self) -> list[dict]:
        with self._lock:
            sessions = [s for s in self._by_name.values() if s is not None]
        return [s.info() for s in sessions]

    def close_all(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare[1].close()
        for name in self.names():
            try:
                self.close(name)
            except AgentRequestError:
                pass


def _configure_tty(fd: int) -> None:
    """No echo, no output translation; keep ISIG (^C is SIGINT) and ICANON (`read x` reads lines)."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    attrs[3] &= ~(termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL | termios.ECHOCTL)
    # NOFLSH: a ^C must not throw away output the command wrote before it died.
    attrs[3] |= termios.ISIG | termios.ICANON | termios.NOFLSH
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, b"\x18\x00\x50\x00\x00\x00\x00\x00")  # 24 rows, 80 columns


def _fork_bash(argv: list[str], env: dict[str, str], cwd: str | None, slave: int, cmd_r: int):
    pid = os.fork()
    if pid:
        return pid, pid
    try:  # the child: only async-signal-safe-ish calls, then exec
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        # Move both above the target numbers first: either may be 0-2 or 5 already, and
        # dup2 onto itself would neither move it nor clear its close-on-exec flag.
        slave_hi = fcntl.fcntl(slave, fcntl.F_DUPFD, 10)
        cmd_hi = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        for fd in (0, 1, 2):
            os.dup2(slave_hi, fd)
        os.dup2(cmd_hi, COMMAND_FD)  # dup2 leaves the copy inheritable: bash keeps it
        os.close(slave_hi)
        os.close(cmd_hi)
        if cwd is not None:
            os.chdir(cwd)
        # Python ignores these; bash and its commands must get the default back.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)


def _pidfd(pid: int) -> int | None:
    """A pidfd for `pid` (readable once it exits), or None where the kernel or seccomp refuses."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_session(sid: int) -> None:
    """SIGKILL every process group whose session id is `sid`."""
    groups = processes.session_groups(sid)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
