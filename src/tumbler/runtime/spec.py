"""What a sandbox is asked to be (`SandboxSpec`), what it is (`SandboxInfo`), and its life cycle."""
from __future__ import annotations

import enum
import re
import secrets

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tumbler.errors import Conflict

_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_MEM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def parse_bytes(value: int | str) -> int:
    """512, "512m", "2GiB" -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"cannot read {value!r} as a size; write e.g. 536870912, '512m' or '2g'")
    m = _MEM_RE.match(value.strip())
    if not m:
        raise ValueError(f"cannot read {value!r} as a size; write e.g. 536870912, '512m' or '2g'")
    return int(float(m.group(1)) * _MEM_UNITS[m.group(2).lower()])


DEFAULT_INODES = 131072


class Limits(BaseModel):
    """Resource limits of one sandbox, enforced by its cgroup."""

    model_config = ConfigDict(extra="forbid")

    memory: int = Field(default=512 << 20, description="memory limit in bytes, or a size such as "
                        "'512m', '2g' (no swap on top)")
    cpus: float = Field(default=1.0, description="CPU time, in cores (0.5 = half a core)")
    pids: int = Field(default=512, description="most processes and threads at once")
    nofile: int = Field(default=1024, description="open file descriptors per process")
    disk: int = Field(default=2 << 30, description="bytes the sandbox may write, or a size such "
                      "as '2g' (its own filesystem: writes past it fail with ENOSPC inside)")
    inodes: int = Field(default=DEFAULT_INODES, description="files and directories the sandbox "
                        "may create (default 131072, or one per 4 KiB of a smaller disk)")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v):
        v = parse_bytes(v)
        if v < 16 << 20:
            raise ValueError(f"memory limit {v} bytes is below the 16 MiB a shell needs")
        return v

    @field_validator("disk", mode="before")
    @classmethod
    def _disk(cls, v):
        v = parse_bytes(v)
        if not 64 << 20 <= v <= 16 << 40:
            raise ValueError(f"disk limit {v} bytes must be between 64 MiB and 16 TiB")
        return v

    @field_validator("inodes")
    @classmethod
    def _inodes(cls, v, info):
        disk = info.data.get("disk")
        if not 1024 <= v <= 1 << 28:
            raise ValueError(f"inodes must be between 1024 and 268435456, not {v}")
        # ext4 keeps at most one inode per 4 KiB block
        if disk is not None and v > disk // 4096:
            raise ValueError(f"{v} inodes do not fit a {disk}-byte disk (one per 4 KiB at most): "
                             "raise disk or lower inodes")
        return v

    @model_validator(mode="after")
    def _default_inodes_fit(self):
        # The default count must fit a small disk too: a 64 MiB disk holds 16384 inodes. An
        # unvalidated default used to pass here and fail when the record was read back.
        if "inodes" not in self.model_fields_set:
            self.inodes = min(DEFAULT_INODES, self.disk // 4096)
        return self

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v):
        if not 0.01 <= v <= 1024:
            raise ValueError(f"cpus must be between 0.01 and 1024 cores, not {v}")
        return v

    @field_validator("pids")
    @classmethod
    def _pids(cls, v):
        if not 8 <= v <= 1 << 20:
            raise ValueError(f"pids must be between 8 and 1048576, not {v}")
        return v

    @field_validator("nofile")
    @classmethod
    def _nofile(cls, v):
        if not 64 <= v <= 1 << 20:
            raise ValueError(f"nofile must be between 64 and 1048576, not {v}")
        return v


class SandboxSpec(BaseModel):
    """Everything a runtime needs to create a sandbox."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(default="debian", description="image name in the runtime's store")
    hostname: str = Field(default="sandbox", description="the sandbox's own hostname")
    env: dict[str, str] = Field(default_factory=dict, description="environment of every process")
    cwd: str = Field(default="/root", description="working directory of sessions and exec")
    network: str = Field(default="none", description="'none' (own namespace, loopback only), "
                         "'egress' (as none, plus a proxy that reaches only the hosts in "
                         "`egress`: runtime/egress.py) or 'host'")
    egress: list[str] = Field(default_factory=list, description="with network 'egress': the "
                              "hosts it may reach: name, name:port, *.name[:port], IP:port")
    limits: Limits = Field(default_factory=Limits)
    labels: dict[str, str] = Field(default_factory=dict, description="free-form, for the caller")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v):
        if not _HOST_RE.match(v):
            raise ValueError(f"bad hostname {v!r}: 1-63 letters, digits and '-'")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v):
        for k, val in v.items():
            if not _ENV_NAME_RE.match(k):
                raise ValueError(f"bad environment variable name {k!r}")
            if "\0" in val:
                raise ValueError(f"environment variable {k} contains a NUL byte")
        return v

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, v):
        if not v.startswith("/") or "\0" in v:
            raise ValueError(f"cwd must be an absolute path, not {v!r}")
        return v

    @field_validator("network")
    @classmethod
    def _network(cls, v):
        if v not in ("none", "egress", "host"):
            raise ValueError(f"network must be 'none', 'egress' or 'host', not {v!r}")
        return v

    @model_validator(mode="after")
    def _egress(self):
        if self.network == "egress" and not self.egress:
            raise ValueError("network 'egress' needs the hosts it may reach: egress=[...]")
        if self.egress and self.network != "egress":
            raise ValueError(f"egress hosts are for network 'egress', not {self.network!r}")
        if self.egress:
            from tumbler.runtime.egress import parse_rules
            try:
                parse_rules(self.egress)
            except Exception as exc:   # InvalidRequest: the message names the entry
                raise ValueError(str(exc)) from None
        return self


class SandboxState(enum.StrEnum):
    """A sandbox's life cycle, the one vocabulary of the runtimes, the server, the node host and
    the wire (`TRANSITIONS` says which operation moves it where). A StrEnum: it compares equal
    to, and formats as, its value ("running")."""

    CREATED = "created"    # files prepared, nothing running
    RUNNING = "running"    # jail and agent up
    PAUSED = "paused"      # every process frozen (cgroup freezer): memory kept, no CPU used
    STOPPED = "stopped"    # nothing running, files kept (stopped, or its init died: see `error`)
    ERROR = "error"        # a record whose sandbox is gone from the runtime: only remove works
    ARCHIVED = "archived"  # its files saved as an image, nothing left in the runtime (server only)
    REMOVED = "removed"    # gone


# The states in which a sandbox holds its place in a node's budget (admission).
HOLDING = frozenset({SandboxState.CREATED, SandboxState.RUNNING, SandboxState.PAUSED})

_ANY = frozenset(SandboxState) - {SandboxState.REMOVED}
_ALIVE = frozenset({SandboxState.CREATED, SandboxState.RUNNING, SandboxState.PAUSED,
                    SandboxState.STOPPED})

# Which operation may move a sandbox from which state to which. `die` (its init exited while
# it ran) and `lose` (its record outlived it) are what a watcher finds, not what a caller asks.
TRANSITIONS: dict[str, tuple[frozenset[SandboxState], SandboxState]] = {
    "start": (frozenset({SandboxState.CREATED, SandboxState.STOPPED}), SandboxState.RUNNING),
    "stop": (_ALIVE, SandboxState.STOPPED),
    "reset": (_ALIVE, SandboxState.RUNNING),
    "pause": (frozenset({SandboxState.RUNNING}), SandboxState.PAUSED),
    "resume": (frozenset({SandboxState.PAUSED}), SandboxState.RUNNING),
    # The source of a fork keeps its state; the target is that of the new sandboxes.
    "fork": (frozenset({SandboxState.RUNNING, SandboxState.PAUSED}), SandboxState.RUNNING),
    # A stopped sandbox's files go to an archive and the sandbox leaves the runtime; restore
    # makes it again from that archive, under the same id (server/rock_archive.py).
    "archive": (frozenset({SandboxState.STOPPED}), SandboxState.ARCHIVED),
    "restore": (frozenset({SandboxState.ARCHIVED}), SandboxState.RUNNING),
    "die": (frozenset({SandboxState.RUNNING}), SandboxState.STOPPED),
    "lose": (_ANY - {SandboxState.ERROR, SandboxState.ARCHIVED}, SandboxState.ERROR),
    "remove": (_ANY, SandboxState.REMOVED),
}

# What to do instead, where a refused operation has an obvious alternative.
HINTS = {("start", SandboxState.PAUSED): "resume it",
         ("resume", SandboxState.STOPPED): "start it",
         ("fork", SandboxState.STOPPED): "start it first",
         ("fork", SandboxState.CREATED): "start it first",
         ("archive", SandboxState.RUNNING): "stop it first",
         ("start", SandboxState.ARCHIVED): "restore it (ROCK's restart)"}


def transition(sandbox_id: str, state: SandboxState, op: str) -> SandboxState:
    """The state `op` moves a sandbox in `state` to; Conflict if the table does not allow it."""
    allowed, target = TRANSITIONS[op]
    if state not in allowed:
        hint = HINTS.get((op, state))
        raise Conflict(f"cannot {op} sandbox {sandbox_id}: it is {state.value}"
                       + (f" ({hint})" if hint else ""))
    return target


def new_sandbox_id() -> str:
    """A fresh sandbox id: 12 hex digits."""
    return secrets.token_hex(6)


class SandboxInfo(BaseModel):
    # Read back from sandbox.json on every life-cycle call: its values (ids, paths) never repeat,
    # so caching them would only fill pydantic-core's process-wide string cache (16,384 entries)
    # with dead sandboxes' ids; keys repeat and stay cached.
    model_config = ConfigDict(cache_strings="keys")

    id: str
    state: SandboxState
    spec: SandboxSpec
    created: float = Field(description="unix time, seconds")
    runtime: str


class SandboxStats(BaseModel):
    memory_bytes: int = Field(description="memory in use now, bytes")
    memory_limit_bytes: int
    cpu_seconds: float = Field(description="CPU time used since start, seconds")
    pids: int = Field(description="processes and threads now")
    pids_limit: int
