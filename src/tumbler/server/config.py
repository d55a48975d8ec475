"""The server's configuration: one validated model, defaults that work on a laptop."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tumbler.config import Paths


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PoolConfig(BaseModel):
    """A warm pool the server starts with (more can be made at run time: PUT /v1/pools/NAME)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the pool's name")
    size: int = Field(default=0, ge=0, le=10_000, description="sandboxes to keep ready")
    per_node: int | None = Field(default=None, ge=0, le=10_000, description=(
        "instead of size: this many ready on each live node (cluster mode: the pool follows "
        "the nodes that join and leave)"))
    image: str = Field(default="debian", description="image of the pooled sandboxes "
                                                     "(other settings: the create defaults)")

    @classmethod
    def parse(cls, text: str) -> "PoolConfig":
        """NAME=SIZE[:IMAGE] or NAME=N/node[:IMAGE], as `tumbler serve --pool` takes it."""
        name, sep, rest = text.partition("=")
        size, _, image = rest.partition(":")
        per_node = size.removesuffix("/node")
        if not sep or not name or not per_node.isdigit():
            raise ValueError(f"pool {text!r} must be NAME=SIZE, NAME=N/node, or either with "
                             ":IMAGE, e.g. debian=8 or debian=2/node:python")
        count = {"per_node": int(per_node)} if per_node != size else {"size": int(size)}
        return cls(name=name, **count, **({"image": image} if image else {}))


class ServerConfig(BaseModel):
    """Everything `tumbler serve` can be told. Env: TUMBLER_TOKEN, TUMBLER_DB_URL."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8040, ge=0, le=65535, description="TCP port (0: any free port)")
    tokens: list[str] = Field(default_factory=list,
                              description="bearer tokens accepted; empty: auth off (loopback only)")
    db_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite file "
                                                         "server.db in the state dir")
    state_dir: Path = Field(default_factory=lambda: Paths.from_env().home,
                            description="where server.db lives")
    max_json_bytes: int = Field(default=1 << 20, description="largest JSON request body, bytes")
    max_upload_bytes: int = Field(default=1 << 30, description="largest file/tar body, bytes")
    node_memory_bytes: int = Field(default=16 << 30, description="sum of sandbox memory limits "
                                                                "the node admits, bytes")
    node_pids: int = Field(default=1 << 20, description="sum of sandbox pids limits admitted")
    node_cpus: float = Field(default=1024.0, description="sum of sandbox cpu limits admitted, cores")
    cold_starts: int | None = Field(default=None, ge=1, description="cold creates under way at "
                                    "once; more wait their turn in arrival order. null: two per core")
    backend: Literal["process", "docker"] = Field(default="process", description="how this "
                                                  "machine's sandboxes are isolated: process "
                                                  "(runc, no daemon) or docker (containers of a "
                                                  "Docker-API engine: Docker or Podman; "
                                                  "docs/DOCKER.md); in cluster mode each node "
                                                  "host's, unless cluster.node_backends names it")
    engine: str | None = Field(default=None, description="backend docker: the engine's API URL "
                               "(in cluster mode on each node) "
                               "(unix:///run/tumbler/podman.sock); null: DOCKER_HOST, else "
                               "/var/run/docker.sock, else Tumbler's Podman socket")
    ray: str | None = Field(default=None, description="cluster mode: the Ray cluster to place "
                            "sandboxes on, 'auto' (the one this machine belongs to) or HOST:PORT; "
                            "null: this machine only (docs/CLUSTER.md)")
    placement: Literal["spread", "pack"] = Field(default="spread", description="cluster mode: "
                                                 "spread sandboxes over the nodes, or pack them")
    cluster: dict[str, Any] = Field(default_factory=dict, description="cluster mode: settings "
                                    "of the node hosts, as tumbler.cluster.ClusterConfig takes "
                                    "them (namespace, start_concurrency, home, timeouts)")
    default_ttl_s: float | None = Field(default=None, description="idle seconds before a "
                                                                 "sandbox is removed; null: never")
    default_max_lifetime_s: float | None = Field(default=None, description="seconds after "
                                                 "creation before removal; null: never")
    reap_interval_s: float = Field(default=5.0, gt=0, description="seconds between reaper passes")
    keep_sandboxes: bool = Field(default=False, description="leave sandboxes running at shutdown")
    pools: list[PoolConfig] = Field(default_factory=list, description="warm pools made at start")
    runs_dir: Path = Field(default=Path("runs"), description="where the trainer's run "
                           "directories are (each a `run_dir` of `tumbler train`), for "
                           "GET /v1/runs and the console; relative: to the server's cwd")
    batch_scheduling: bool = Field(default=True, description="run the server's threads under "
                                   "Linux's SCHED_BATCH policy: its wake-ups do not preempt the "
                                   "agents and clients it serves, so each turn of its event loop "
                                   "handles more of their messages (~5-10% less CPU a command, "
                                   "docs/BENCHMARKS.md); sandboxes still run under the normal "
                                   "policy (each agent resets it at start)")
    log_level: str = "info"

    @field_validator("node_memory_bytes", "max_json_bytes", "max_upload_bytes", mode="before")
    @classmethod
    def _size(cls, value):
        """A size in a configuration file may be written as `--node-memory` takes it: 16g, 512m."""
        if isinstance(value, str):
            from tumbler.runtime.spec import parse_bytes
            return parse_bytes(value)
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        for key in ("detached", "owner"):
            if key in value:
                raise ValueError(f"cluster.{key} is the server's to set, not the configuration's")
        # Imported only when cluster settings are given (the server imports cluster/ in
        # cluster mode only); cluster/config.py itself needs no Ray.
        from tumbler.cluster.config import ClusterConfig
        try:
            ClusterConfig(**value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"cluster.{where}: {first['msg']}") from None
        return value

    @model_validator(mode="after")
    def _auth_or_loopback(self):
        if not self.tokens and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve on {self.host} without auth: set TUMBLER_TOKEN (or --token) "
                "or bind to 127.0.0.1")
        return self

    @classmethod
    def from_env(cls, **overrides) -> "ServerConfig":
        """Defaults, then TUMBLER_* environment variables, then `overrides` (None = unset)."""
        return cls(**{**_env_settings(), **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_file(cls, path: Path, **overrides) -> "ServerConfig":
        """The settings of a YAML (.yaml, .yml), TOML (.toml) or JSON (.json) file, keyed by this
        model's field names, then the TUMBLER_* environment variables, then `overrides` (the
        command line's options; None = unset). A key the model does not have is an error naming
        it, as is a bad value (ValueError, with the file and the key's place)."""
        values = read_settings(Path(path))
        unknown = [k for k in values if k not in cls.model_fields]
        if unknown:
            import difflib
            close = difflib.get_close_matches(unknown[0], list(cls.model_fields), n=1)
            raise ValueError(f"{path}: unknown setting {unknown[0]!r}"
                             + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; the settings are {', '.join(cls.model_fields)}")
        try:
            return cls(**{**values, **_env_settings(),
                          **{k: v for k, v in overrides.items() if v is not None}})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the file"
            raise ValueError(f"{path}: {where}: {str(first['msg']).removeprefix('Value error, ')}") from None

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'server.db'}"


def _env_settings() -> dict[str, Any]:
    """What the TUMBLER_* environment variables set."""
    values: dict[str, Any] = {}
    if token := os.environ.get("TUMBLER_TOKEN"):
        values["tokens"] = [t for t in token.split(",") if t]
    if url := os.environ.get("TUMBLER_DB_URL"):
        values["db_url"] = url
    return values


def read_settings(path: Path) -> dict[str, Any]:
    """A configuration file's top-level mapping (YAML, TOML or JSON, by its suffix)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the configuration {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise ValueError(f"{path}: a configuration is .yaml, .yml, .toml or .json, not "
                         f"{suffix or 'a name without a suffix'!r}")
    try:
        if suffix == ".toml":
            import tomllib
            values = tomllib.loads(text)
        elif suffix == ".json":
            import json
            values = json.loads(text)
        else:
            import yaml
            values = yaml.safe_load(text)
    except Exception as exc:   # tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError
        kind = {".toml": "TOML", ".json": "JSON"}.get(suffix, "YAML")
        raise ValueError(f"{path}: not valid {kind}: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the settings must be a mapping of names to values, not a "
                         f"{type(values).__name__}")
    return values
