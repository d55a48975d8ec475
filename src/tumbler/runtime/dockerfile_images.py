"""Images from Dockerfiles for the process runtime: each step run in a sandbox, cached by step.

    build_dockerfile(Path("task/environment"), name="web")     # -> BuildResult(image="web", ...)
    tumbler image build-file task/environment --name web         # the same, with progress

FROM names a local image, or a public base name that `BASE_MAP` maps to one (`debian:*`,
`ubuntu:*`, `buildpack-deps:*` -> "debian"; `python:*` -> "debian-pip" with `python` and
`pip` on PATH and PIP_BREAK_SYSTEM_PACKAGES=1). Each RUN, COPY and ADD runs in a sandbox of the
image so far, with the host's network (a build is the task author's code, not the agent's) and
the host's proxies and CA bundle, and is saved as a layer image `build.<key>`, where the key
hashes the parent's key, the step's text after substitution, the ENV/ARG/WORKDIR/USER in force
and, for COPY/ADD, the bytes of the files copied. A step whose key has an image is not run
again. Each `FROM ... [AS name]` starts a stage (FROM may name an earlier one); `COPY
--from=name|index|image` copies from that stage's image, read in a sandbox of it (the key
takes the stage's key in place of the bytes); the last stage, or `target`, is the result.
ENV, WORKDIR and USER are kept in the image's meta.json ("config") and applied by whoever
starts the image (the task runner does); CMD, ENTRYPOINT, EXPOSE and the like are read and
ignored. A failing step raises RuntimeFailure naming the Dockerfile line, the step and the
last lines of its output.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import os
import shlex
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from pydantic import BaseModel, ConfigDict

from tumbler.errors import AlreadyExists, InvalidRequest, NotFound, RuntimeFailure
from tumbler.runtime.dockerfiles import LAYER_OPS, Instruction, parse_dockerfile, split_words, substitute

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 1800.0
BUILD_LIMITS = {"memory": "2g", "disk": "8g", "inodes": 524288, "cpus": 2.0, "pids": 1024}
OUTPUT_TAIL = 30          # lines of a failed step's output shown in its error
OUTPUT_MAX_BYTES = 1 << 20   # of a step's output kept by the agent (it streams all of it)
RUN_SCRIPT = "/tmp/.tumbler-run.sh"
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
PATH_DEFAULT = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where other installers look for a CA bundle (a TLS-inspecting proxy's CA is in the host's).
CA_ENV = ("NODE_EXTRA_CA_CERTS", "npm_config_cafile", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
          "SSL_CERT_FILE", "GIT_SSL_CAINFO")


@dataclass(frozen=True)
class BaseImage:
    """What a public base name becomes here: a local image, extra env, and a first step."""

    image: str
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""


_PYTHON = BaseImage("debian-pip", env={"PIP_BREAK_SYSTEM_PACKAGES": "1",
                                       "PIP_ROOT_USER_ACTION": "ignore"},
                    setup="ln -sf /usr/bin/python3 /usr/local/bin/python; "
                          "command -v pip >/dev/null || ln -sf /usr/bin/pip3 /usr/local/bin/pip")
BASE_MAP: dict[str, BaseImage] = {
    "debian": BaseImage("debian"), "ubuntu": BaseImage("debian"),
    "buildpack-deps": BaseImage("debian"), "python": _PYTHON,
}


class ImageConfig(BaseModel):
    """How a built image is meant to be started (Dockerfile ENV, WORKDIR, USER, CMD)."""

    model_config = ConfigDict(extra="ignore")

    env: dict[str, str] = {}
    workdir: str = "/"
    user: str = "root"
    cmd: list[str] | None = None


@dataclass
class BuildResult:
    image: str
    """The image to start: `name`, or the last step's cache image when no name was given."""
    config: ImageConfig
    steps: int
    cached: int
    seconds: float


StepEvent = Callable[[str, int, int, str], None]
"""on_event(kind, step, total, text): kind is "step" (starting), "cached", "output" (a line of
the running step's output) or "done"; steps count from 1."""


def image_config(store, name: str) -> ImageConfig:
    """The config a build recorded for image `name` (defaults for an image not built so)."""
    return ImageConfig.model_validate(store.meta(name).get("config") or {})


def resolve_base(store, ref: str, base_map: dict[str, BaseImage] | None = None) -> BaseImage:
    """A FROM reference as a local image: the image of that name, else the mapping's entry."""
    mapping = {**BASE_MAP, **(base_map or {})}
    if ref in mapping:
        return mapping[ref]
    if _is_local_name(ref) and store.exists(ref):
        return BaseImage(ref)
    repo = ref.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    short = last.split(":", 1)[0]
    for key in (repo, repo.split(":", 1)[0], last, short):
        if key in mapping:
            return mapping[key]
    for key in mapping:   # Terminal-Bench's own bases: t-bench/ubuntu-24-04, t-bench/python-3-13
        if short.startswith(f"{key}-"):
            return mapping[key]
    raise InvalidRequest(f"FROM {ref}: no local image of that name and no mapping for it; build "
                         f"or import one (`tumbler image ls`), or map it: --base {short}=IMAGE")


def build_dockerfile(context: str | Path, *, name: str | None = None,
                     dockerfile: str | Path | None = None, build_args: dict[str, str] | None = None,
                     base_map: dict[str, BaseImage] | None = None, runtime=None,
                     network: str = "host", no_cache: bool = False,
                     step_timeout_s: float = STEP_TIMEOUT_S, limits: dict | None = None,
                     target: str | None = None, on_event: StepEvent | None = None) -> BuildResult:
    """Build the Dockerfile in `context` (or `dockerfile`) into an image of the process runtime.

    Args:
        name: also save the result as image `name` (replaced if it exists).
        build_args: values for the Dockerfile's ARGs (`--build-arg`).
        base_map: extra or replacing FROM mappings, e.g. {"alpine": BaseImage("busybox")}.
        network: the build sandboxes' network ("host", or "none" for a build with no network).
        no_cache: run every step again (as new cache images; the old ones stay).
        step_timeout_s: seconds one step may run.
        target: build up to this stage (`FROM ... AS target`) and make it the result.
    """
    if runtime is None:
        from tumbler.local import default_runtime
        runtime = default_runtime()
    context = Path(context)
    if not context.is_dir():
        raise InvalidRequest(f"build context {context} is not a directory")
    path = Path(dockerfile) if dockerfile else context / "Dockerfile"
    if not path.is_file():
        raise NotFound(f"no Dockerfile at {path}")
    build = _Build(runtime, context, path, build_args or {}, base_map, network, no_cache,
                   step_timeout_s, {**BUILD_LIMITS, **(limits or {})}, on_event)
    return build.run(name, target)


@dataclass
class _Stage:
    """A finished stage: what COPY --from and a later FROM of it start from."""

    image: str
    key: str
    config: "ImageConfig"


class _Build:
    """One build's state: the image so far, its cache key, ENV/ARG/WORKDIR/USER in force."""

    def __init__(self, runtime, context: Path, path: Path, build_args: dict[str, str],
                 base_map, network: str, no_cache: bool, step_timeout_s: float, limits: dict,
                 on_event: StepEvent | None):
        self.runtime, self.store = runtime, runtime.images
        self.context, self.path = context.resolve(), path
        self.build_args, self.base_map = build_args, base_map
        self.network, self.no_cache, self.step_timeout_s = network, no_cache, step_timeout_s
        self.limits, self.on_event = limits, on_event or (lambda *a: None)
        self.ignore = _dockerignore(self.context)
        self.args: dict[str, str] = {}
        self.global_args: dict[str, str] = {}
        self.config = ImageConfig()
        self.image = ""
        self.key = ""
        self.stages: dict[str, _Stage] = {}   # by name (lower-case) and by index ("0", "1"...)
        self.stage_name = ""
        self.stage_count = 0
        self.from_seen = False

    def run(self, name: str | None, target: str | None = None) -> BuildResult:
        started = time.monotonic()
        instructions = _up_to(parse_dockerfile(self.path), target, self.path)
        steps = [x for x in instructions if x.op in LAYER_OPS]
        total, cached, n = len(steps), 0, 0
        for x in instructions:
            if x.op in LAYER_OPS:
                n += 1
                cached += self._layer_step(x, n, total)
            else:
                self._config_step(x)
        self.on_event("done", total, total, self.image)
        image = self._tag(name) if name else self.image
        log.info("built %s from %s: %d steps, %d cached, %.1f s", image, self.path, total,
                 cached, time.monotonic() - started)
        return BuildResult(image=image, config=self.config, steps=total, cached=cached,
                           seconds=time.monotonic() - started)

    # -- config steps: no files change, only the key and the config ------------------------

    def _config_step(self, x: Instruction) -> None:
        values = {**self.args, **self.config.env}
        if x.op == "ARG":
            for word in split_words(x.args):
                key, eq, default = word.partition("=")
                default = substitute(default, values) if eq else self.global_args.get(key, "")
                self.args[key] = self.build_args.get(key, default)
        elif x.op == "FROM":
            self._end_stage()
            words = split_words(x.args)
            self.stage_name = words[2].lower() if len(words) == 3 and words[1].upper() == "AS" else ""
            # ARGs before the first FROM serve every FROM (and a bare `ARG X` in a stage)
            self._from(substitute(words[0], self.global_args if self.from_seen else self.args), x)
        elif x.op == "ENV":
            self.config.env.update(_env_pairs(x, values))
        elif x.op == "WORKDIR":
            target = substitute(x.args, values)
            self.config.workdir = str(PurePosixPath(self.config.workdir) / target)
        elif x.op == "USER":
            self.config.user = substitute(x.args, values).strip()
        elif x.op in ("CMD", "ENTRYPOINT") and x.exec_form is not None:
            self.config.cmd = x.exec_form
        self.key = _digest(self.key, x.op, json.dumps(self._state(), sort_keys=True))

    def _end_stage(self) -> None:
        if self.from_seen:
            stage = _Stage(self.image, self.key, self.config.model_copy(deep=True))
            self.stages[str(self.stage_count)] = stage
            self.stage_count += 1
            if self.stage_name:
                self.stages[self.stage_name] = stage

    def _from(self, ref: str, x: Instruction) -> None:
        if not self.from_seen:
            self.global_args = self.args
        self.from_seen, self.args = True, {}
        if ref.lower() in self.stages and not ref.isdigit():   # FROM an earlier stage
            stage = self.stages[ref.lower()]
            self.image, self.key = stage.image, _digest("stage", stage.key)
            self.config = stage.config.model_copy(deep=True)
            return
        base = resolve_base(self.store, ref, self.base_map)
        self._ensure_base(base.image)
        self.image = base.image
        self.config = image_config(self.store, base.image)
        self.config.env = {"PATH": PATH_DEFAULT, **self.config.env, **base.env}
        meta = self.store.meta(base.image)
        self.key = _digest("from", base.image, str(meta.get("created")))
        if base.setup:
            setup = Instruction(line=x.line, op="RUN", args=base.setup)
            self._layer_step(setup, 0, 0)

    def _ensure_base(self, image: str) -> None:
        """The mapped bases are built on first use; any other image must exist."""
        if self.store.exists(image):
            return
        from tumbler.runtime.images import DEFAULT_IMAGE
        from tumbler.runtime.pip_images import PIP_BASE, PIP_BASE_PACKAGES
        if image == DEFAULT_IMAGE:
            self.store.build(image)
        elif image == PIP_BASE:
            self.store.build(image, packages=PIP_BASE_PACKAGES)
        else:
            self.store.get(image)   # NotFound, naming the build command

    def _state(self) -> dict:
        return {"args": self.args, **self.config.model_dump()}

    # -- layer steps: run in a sandbox, saved as an image ----------------------------------

    def _layer_step(self, x: Instruction, n: int, total: int) -> int:
        """Run step `x` unless its cache image exists; 1 when it was cached."""
        values = {**self.args, **self.config.env}
        source_stage = self._source_stage(x) if "from" in x.flags else None
        sources = self._sources(x, values) if x.op in ("COPY", "ADD") and not source_stage else []
        text = x.text if x.op == "RUN" else substitute(x.text, values)
        key = _digest(self.key, text, json.dumps(self._state(), sort_keys=True),
                      source_stage.key if source_stage else _content_digest(sources, self.context),
                      os.urandom(8).hex() if self.no_cache else "")   # no_cache: a new chain
        cache = f"build.{key[:24]}"
        flags = "".join(f" --{k}={v}" for k, v in x.flags.items())
        label = f"{x.op}{flags} {x.args or '<<heredoc'}"[:120]
        if self.store.exists(cache):
            self.on_event("cached", n, total, label)
            self.image, self.key = cache, key
            return 1
        self.on_event("step", n, total, label)
        self._run_step(x, n, total, values, sources, cache, source_stage)
        self.store.update_meta(cache, source=f"dockerfile:{self.path.name}:{x.line}",
                               config=self.config.model_dump())
        self.image, self.key = cache, key
        return 0

    def _run_step(self, x: Instruction, n: int, total: int, values: dict[str, str],
                  sources: list[Path], cache: str, source_stage: "_Stage | None") -> None:
        from tumbler.local import LocalSandbox
        from tumbler.runtime.pip_images import HOST_CA_PATH, _pip_env
        where = f"{self.path}:{x.line}: step {n}/{total} `{x.op} {x.args}`"[:300]
        with LocalSandbox(self.image, network=self.network, runtime=self.runtime,
                          cwd="/", **self.limits) as sb:
            proxies = _pip_env(sb, host_certs=True) if self.network == "host" else {}
            if "PIP_CERT" in proxies:   # npm, node and the rest trust the host's CAs as pip does
                proxies.update({key: HOST_CA_PATH for key in CA_ENV})
            sb.exec(["mkdir", "-p", self.config.workdir], timeout=60)
            if x.op == "RUN":
                self._run(sb, x, n, total, {**proxies, **values}, where)
            elif source_stage is not None:
                self._copy_from(sb, x, values, source_stage, where)
            else:
                self._copy(sb, x, values, sources, where)
            sb.exec(["rm", "-f", HOST_CA_PATH, RUN_SCRIPT], timeout=60)
            try:
                sb.snapshot(cache)
            except AlreadyExists:   # another build made the same step meanwhile
                pass

    def _run(self, sb, x: Instruction, n: int, total: int, env: dict[str, str], where: str) -> None:
        if x.heredoc is not None:
            sb.write_file(RUN_SCRIPT, x.heredoc, mode=0o755)
            argv = [RUN_SCRIPT] if x.heredoc.startswith("#!") else ["/bin/sh", RUN_SCRIPT]
        elif x.exec_form is not None:
            argv = x.exec_form
        else:
            argv = ["/bin/sh", "-c", x.args]
        if self.config.user not in ("root", "0", "0:0", ""):
            user, _, group = self.config.user.partition(":")
            argv = ["setpriv", f"--reuid={user}", f"--regid={group or user}", "--init-groups",
                    "--"] + argv
        tail: list[str] = []

        def line(text: str) -> None:
            tail.append(text)
            del tail[:-OUTPUT_TAIL]
            self.on_event("output", n, total, text)
        session = sb.session("build", env=env, cwd=self.config.workdir)
        result = session.run(shlex.join(argv) + " 2>&1 </dev/null", timeout=self.step_timeout_s,
                             max_output=OUTPUT_MAX_BYTES, on_output=_lines(line))
        if result.timed_out:
            raise RuntimeFailure(f"{where} ran past {self.step_timeout_s:.0f} s:\n" + "\n".join(tail))
        if result.exit_code != 0:
            raise RuntimeFailure(f"{where} failed with exit code {result.exit_code}:\n"
                                 + "\n".join(tail))

    def _copy(self, sb, x: Instruction, values: dict[str, str], sources: list[Path],
              where: str) -> None:
        words = x.exec_form or split_words(x.args)
        dest = substitute(words[-1], values)
        if not dest.startswith("/"):
            dest = str(PurePosixPath(self.config.workdir) / dest)
        into_dir = dest.endswith("/") or len(sources) > 1 or any(s.is_dir() for s in sources) \
            or _is_dir(sb, dest)
        with tempfile.TemporaryDirectory(prefix="tumbler-copy-") as tmp:
            stage = Path(tmp)
            target = dest.rstrip("/") or "/"
            if not into_dir:
                target = str(PurePosixPath(dest).parent)
            for src in sources:
                self._stage(src, stage, None if into_dir else PurePosixPath(dest).name,
                            extract=x.op == "ADD" and src.name.endswith(ARCHIVES))
            sb.mkdir(target)
            sb.call("file.upload_tar", {"path": target}, _tar_children(stage), timeout=600)
            placed = [str(PurePosixPath(target) / p.name) for p in stage.iterdir()]
        self._unpack_archives(sb, x, sources, target, where)
        _chown_chmod(sb, x, values, placed, where)

    def _source_stage(self, x: Instruction) -> _Stage:
        """The stage (by name or index) or image that `COPY --from=` names."""
        ref = substitute(x.flags["from"], {**self.global_args, **self.args})
        if x.op != "COPY":
            raise InvalidRequest(f"{self.path}:{x.line}: {x.op} has no --from (only COPY has)")
        if ref.lower() in self.stages:
            return self.stages[ref.lower()]
        if ref.isdigit() or (ref.lower() == self.stage_name and ref):
            raise InvalidRequest(f"{self.path}:{x.line}: COPY --from={ref}: no earlier stage of "
                                 "that name or index")
        base = resolve_base(self.store, ref, self.base_map)
        self._ensure_base(base.image)
        return _Stage(base.image, _digest("from", base.image,
                                          str(self.store.meta(base.image).get("created"))),
                      image_config(self.store, base.image))

    def _copy_from(self, sb, x: Instruction, values: dict[str, str], source: _Stage,
                   where: str) -> None:
        """COPY --from: each source read as a tar in a sandbox of the stage's image, renamed
        and owned by root as COPY makes them, and unpacked at the destination."""
        from tumbler import ops
        from tumbler.local import LocalSandbox
        words = x.exec_form or split_words(x.args)
        if len(words) < 2:
            raise InvalidRequest(f"{self.path}:{x.line}: COPY needs a source and a destination")
        dest = substitute(words[-1], values)
        if not dest.startswith("/"):
            dest = str(PurePosixPath(self.config.workdir) / dest)
        with LocalSandbox(source.image, network="none", runtime=self.runtime, cwd="/",
                          **self.limits) as src:
            found = [p for pattern in words[:-1] for p in _expand(src, substitute(pattern, values),
                                                                  source.config.workdir, where)]
            into_dir = dest.endswith("/") or len(found) > 1 or _is_dir(sb, dest) or any(
                src.stat(p).type == "dir" for p in found)
            target = dest.rstrip("/") or "/"
            if not into_dir:
                target = str(PurePosixPath(dest).parent)
            sb.mkdir(target)
            placed = []
            for path in found:
                is_dir = src.stat(path).type == "dir"
                rename = None if into_dir or is_dir else PurePosixPath(dest).name
                tar, tops = _rooted(src.do(ops.download_tar(path)), rename)
                sb.call("file.upload_tar", {"path": target}, tar, timeout=600)
                placed += [str(PurePosixPath(target) / top) for top in tops]
        _chown_chmod(sb, x, values, placed, where)

    def _stage(self, src: Path, stage: Path, rename: str | None, extract: bool) -> None:
        """Put `src` (a context file or directory) under `stage` as COPY would under dest."""
        if src.is_dir():
            for item in _walk(src, self.context, self.ignore):
                rel = item.relative_to(src)
                _place(item, stage / rel)
            return
        name = rename or (f".tumbler-add-{src.name}" if extract else src.name)
        _place(src, stage / name)

    def _unpack_archives(self, sb, x: Instruction, sources: list[Path], target: str,
                         where: str) -> None:
        """ADD of a local tar: unpacked inside the sandbox (by its tar, on its side)."""
        if x.op != "ADD":
            return
        for src in sources:
            if src.is_file() and src.name.endswith(ARCHIVES):
                packed = str(PurePosixPath(target) / f".tumbler-add-{src.name}")
                r = sb.exec(["/bin/sh", "-c", 'tar -xf "$1" -C "$2" && rm -f "$1"', "sh",
                             packed, target], timeout=600)
                if r.exit_code != 0:
                    raise RuntimeFailure(f"{where}: unpacking {src.name} failed: "
                                         f"{r.stderr.strip()[-500:]}")

    def _sources(self, x: Instruction, values: dict[str, str]) -> list[Path]:
        words = x.exec_form or split_words(x.args)
        if len(words) < 2:
            raise InvalidRequest(f"{self.path}:{x.line}: {x.op} needs a source and a destination")
        found: list[Path] = []
        for pattern in words[:-1]:
            pattern = substitute(pattern, values)
            if pattern.startswith(("http://", "https://")):
                raise InvalidRequest(f"{self.path}:{x.line}: {x.op} of a URL is not supported "
                                     "by the process backend's builder; fetch it in a RUN step")
            matches = sorted(self.context.glob(pattern.lstrip("/"))) if any(
                c in pattern for c in "*?[") else [self.context / pattern.lstrip("/")]
            for m in matches:
                real = m.resolve()
                if real != self.context and self.context not in real.parents:
                    raise InvalidRequest(f"{self.path}:{x.line}: {pattern} leads outside the "
                                         f"build context {self.context}")
                if not m.exists():
                    raise InvalidRequest(f"{self.path}:{x.line}: {x.op} source {pattern} is not "
                                         f"in the build context {self.context}")
                found.append(m)
            if not matches:
                raise InvalidRequest(f"{self.path}:{x.line}: {x.op} source {pattern} matches "
                                     "nothing in the build context")
        return found

    def _tag(self, name: str) -> str:
        """Image `name`: an empty layer on the last step's image, with the final config."""
        from tumbler.runtime.images import check_name
        check_name(name)
        if self.store.exists(name):
            self.store.remove(name, in_use=lambda n: any(s.spec.image == n
                                                         for s in self.runtime.list()))
        self.store.add_layer(name, self.image, Path("/nonexistent"),
                             source=f"dockerfile:{self.path}",
                             copy=_empty_layer)
        self.store.update_meta(name, config=self.config.model_dump())
        return name


# -- helpers without state ------------------------------------------------------------------

def _chown_chmod(sb, x: Instruction, values: dict[str, str], placed: list[str], where: str) -> None:
    """COPY/ADD's --chown and --chmod, on what the step placed."""
    for flag in ("chown", "chmod"):
        if x.flags.get(flag) and placed:
            r = sb.exec([flag, "-R", substitute(x.flags[flag], values), *placed], timeout=300)
            if r.exit_code != 0:
                raise RuntimeFailure(f"{where}: --{flag} failed: {r.stderr.strip()[-500:]}")


def _up_to(instructions: list[Instruction], target: str | None, path: Path) -> list[Instruction]:
    """The instructions up to the end of stage `target` (all of them without one)."""
    if not target:
        return instructions
    for n, x in enumerate(instructions):
        if x.op != "FROM":
            continue
        words = split_words(x.args)
        if len(words) == 3 and words[1].upper() == "AS" and words[2].lower() == target.lower():
            end = next((m for m in range(n + 1, len(instructions))
                        if instructions[m].op == "FROM"), len(instructions))
            return instructions[:end]
    raise InvalidRequest(f"{path}: no stage named {target!r} (FROM ... AS {target})")


def _expand(sb, pattern: str, workdir: str, where: str) -> list[str]:
    """The paths in sandbox `sb` that a COPY --from source names (a glob in its last part)."""
    if not pattern.startswith("/"):
        pattern = str(PurePosixPath(workdir) / pattern)
    pattern = pattern.rstrip("/") or "/"
    if not any(c in pattern for c in "*?["):
        try:
            sb.stat(pattern)
        except NotFound:
            raise InvalidRequest(f"{where}: {pattern} is not in the source stage") from None
        return [pattern]
    parent, _, last = pattern.rpartition("/")
    if any(c in parent for c in "*?["):
        raise InvalidRequest(f"{where}: {pattern}: a glob only in the last part of a --from path")
    try:
        names = sorted(PurePosixPath(f.path).name for f in sb.list_dir(parent or "/"))
    except NotFound:
        names = []
    found = [f"{parent}/{n}" for n in names if fnmatch.fnmatch(n, last)]
    if not found:
        raise InvalidRequest(f"{where}: {pattern} matches nothing in the source stage")
    return found


def _rooted(data: bytes, rename: str | None) -> tuple[bytes, list[str]]:
    """The tar with every member owned by root (as COPY makes them) and, for a single file
    copied to a new name, that name; and the names at its top."""
    out, tops = io.BytesIO(), []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as src, \
            tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            if rename is not None:
                member.name = rename
            top = member.name.split("/", 1)[0]
            if top not in tops:
                tops.append(top)
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return out.getvalue(), tops


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _content_digest(sources: list[Path], context: Path) -> str:
    """The bytes, modes, names and link targets of everything COPY/ADD would copy."""
    h = hashlib.sha256()
    ignore = _dockerignore(context)
    for src in sources:
        for item in ([src] if not src.is_dir() else [src, *_walk(src, context, ignore)]):
            st = item.lstat()
            h.update(f"{item.relative_to(context)}\0{st.st_mode:o}\0".encode())
            if item.is_symlink():
                h.update(os.readlink(item).encode())
            elif item.is_file():
                with open(item, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
    return h.hexdigest()


def _dockerignore(context: Path) -> list[str]:
    try:
        lines = (context / ".dockerignore").read_text().splitlines()
    except OSError:
        return []
    return [ln.strip().strip("/") for ln in lines if ln.strip() and not ln.startswith(("#", "!"))]


def _walk(root: Path, context: Path, ignore: list[str]) -> list[Path]:
    """Everything under `root`, sorted, without following links, minus .dockerignore matches."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            item = Path(dirpath) / name
            rel = str(item.relative_to(context))
            if not any(fnmatch.fnmatch(rel, p) or rel.startswith(p + "/") for p in ignore):
                out.append(item)
    return out


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dest)
    elif src.is_dir():
        dest.mkdir(exist_ok=True)
        dest.chmod(src.stat().st_mode & 0o7777)
    else:
        dest.write_bytes(src.read_bytes())
        dest.chmod(src.stat().st_mode & 0o7777)


def _tar_children(stage: Path) -> bytes:
    """A tar of the staged files without a "." member (which would re-mode the destination),
    every owner root, as COPY makes them."""
    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(stage.iterdir()):
            tar.add(child, arcname=child.name, filter=as_root)
    return buf.getvalue()


def _empty_layer(_upper: Path, dest: Path) -> None:
    """A layer with no files; its root owned by the sandbox's root (shifted), as any layer's."""
    from tumbler.runtime.idmap import HOST_BASE
    dest.mkdir(mode=0o755)
    os.chown(dest, HOST_BASE, HOST_BASE)


def _is_dir(sb, path: str) -> bool:
    try:
        return sb.stat(path).type == "dir"
    except NotFound:
        return False


def _env_pairs(x: Instruction, values: dict[str, str]) -> dict[str, str]:
    """ENV k=v k2="v 2", or the old form ENV k v with the rest of the line as the value."""
    words = split_words(x.args)
    if words and "=" not in words[0]:
        key, _, value = x.args.partition(" ")
        return {key: substitute(value.strip(), values)}
    pairs = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise InvalidRequest(f"ENV at line {x.line}: {word!r} is not KEY=VALUE")
        pairs[key] = substitute(value, {**values, **pairs})
    return pairs


def _is_local_name(ref: str) -> bool:
    from tumbler.runtime.images import NAME_RE
    return bool(NAME_RE.match(ref))


def _lines(on_line: Callable[[str], None]):
    from tumbler.runtime.pip_images import _lines as lines
    return lines(on_line)


def prune_build_cache(store, in_use: Callable[[str], bool] = lambda _: False) -> list[str]:
    """Remove the build-step images (`build.*`) that no other image stands on and no sandbox
    uses, leaves first, until none is left to remove; returns their names."""
    removed: list[str] = []
    while True:
        images = store.list()
        parents = {i.parent for i in images}
        leaves = [i.name for i in images if i.name.startswith("build.")
                  and i.name not in parents and not in_use(i.name)]
        if not leaves:
            return removed
        for name in leaves:
            store.remove(name)
            removed.append(name)
