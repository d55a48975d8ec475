"""Images with Python packages from PyPI inside, made by pip in a sandbox and saved as a snapshot.

    build_pip_image("gem", ["gem-llm==0.1.0"], check="import gem")   # on base "debian-pip"
    tumbler image add-pip gem gem-llm==0.1.0 --check "import gem"      # the same from the shell

The base image needs python3-pip. The default base, "debian-pip", is the default Debian image plus
python3-pip and is built with mmdebstrap the first time it is needed. pip runs in a sandbox of
the base with the host's network (`network="host"`), with `--break-system-packages` (Debian's pip
refuses to install into the system python otherwise) and larger limits than a sandbox's
defaults; the sandbox's files are then saved as image `name`, a layer on top of the base. The
image is cached by name: an existing one is returned unless `force`.
"""
from __future__ import annotations

import logging
import os
import shlex
import ssl
import time
from pathlib import Path
from typing import Callable, Sequence

from tumbler.errors import AlreadyExists, InvalidRequest, RuntimeFailure, TumblerError
from tumbler.runtime.images import DEFAULT_PACKAGES, Image

log = logging.getLogger(__name__)

PIP_BASE = "debian-pip"
# gcc and python3-dev: some packages have only an sdist (gem-llm needs pycosat, built from C).
PIP_BASE_PACKAGES = DEFAULT_PACKAGES + ("python3-pip", "gcc", "libc6-dev", "python3-dev")
PIP_TIMEOUT_S = 1800
MAX_LINE = 64 * 1024      # bytes of output held while waiting for a newline
PIP_LIMITS = {"memory": "2g", "disk": "8g", "inodes": 524288, "cpus": 2.0, "pids": 1024}
HOST_CA_PATH = "/tmp/.tumbler-host-ca.crt"
GEM_IMAGE = "gem"
GEM_PACKAGES = ("gem-llm==0.1.0",)


def build_pip_image(name: str, packages: Sequence[str], *, base: str = PIP_BASE,
                    check: str | None = None, force: bool = False, runtime=None,
                    limits: dict | None = None, timeout: float = PIP_TIMEOUT_S,
                    host_certs: bool = True, on_output: Callable[[str], None] | None = None) -> Image:
    """Image `name`: `base` with `packages` pip-installed (any pip requirement specifiers).

    Args:
        base: an image with python3 and pip; "debian-pip" is built first if it is missing.
        check: Python code run with the image's python3 after the install (e.g. "import gem");
            if it fails, no image is saved.
        force: rebuild (replacing the image) even if it exists.
        runtime: a ProcessRuntime (default: one over the default image store).
        limits: LocalSandbox limits for the install sandbox (memory, disk, inodes, cpus, pids).
        host_certs: pip in the sandbox trusts the host's CA bundle (PIP_CERT, else the system
            bundle), so that it works where the host reaches PyPI through a TLS-inspecting
            proxy; the bundle is removed again before the snapshot. The host's proxy variables
            and http(s) index URLs are passed on as well.
        on_output: called with each line pip writes.
    """
    from tumbler.local import LocalSandbox
    from tumbler.runtime.images import check_name
    if runtime is None:
        from tumbler.local import default_runtime
        runtime = default_runtime()
    store = runtime.images
    check_name(name)
    if not packages:
        raise InvalidRequest("name at least one package to install")
    if name == base:
        raise InvalidRequest(f"the new image needs a name other than its base {base!r}")
    if store.exists(name):
        if not force:
            return store.get(name)
        store.remove(name, in_use=lambda n: any(s.spec.image == n for s in runtime.list()))
    if not store.exists(base):
        if base != PIP_BASE:
            store.get(base)   # NotFound, naming the build command
        log.info("building base image %s (Debian with python3-pip)", base)
        store.build(base, packages=PIP_BASE_PACKAGES, on_output=on_output)

    started = time.monotonic()
    with LocalSandbox(base, network="host", runtime=runtime, **{**PIP_LIMITS, **(limits or {})}) as sb:
        if sb.exec(["python3", "-m", "pip", "--version"], timeout=60).exit_code != 0:
            raise InvalidRequest(
                f"image {base!r} has no pip; use a base with python3-pip (the default base "
                f"{PIP_BASE!r} has it: `tumbler image build {PIP_BASE} --packages "
                f"{','.join(PIP_BASE_PACKAGES)}`)")
        env = _pip_env(sb, host_certs)
        cmd = (" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
               + " python3 -m pip install --no-cache-dir --break-system-packages "
               "--disable-pip-version-check --root-user-action=ignore --progress-bar off "
               + " ".join(shlex.quote(p) for p in packages) + " 2>&1")
        result = sb.run(cmd, timeout=timeout, on_output=_lines(on_output))
        if result.exit_code != 0:
            why = "timed out" if result.timed_out else f"failed with exit code {result.exit_code}"
            tail = "\n".join(result.output.splitlines()[-20:])
            raise RuntimeFailure(f"pip install {' '.join(packages)} in image {base!r} {why}:\n{tail}")
        if check:
            checked = sb.exec(["python3", "-c", check], timeout=300)
            if checked.exit_code != 0:
                raise RuntimeFailure(f"the check {check!r} failed in the new image:\n"
                                     + checked.stderr[-2000:])
        sb.run(f"rm -rf /root/.cache {HOST_CA_PATH} 2>/dev/null; true", timeout=60)
        try:
            sb.snapshot(name)
        except AlreadyExists:   # another process built it meanwhile
            return store.get(name)
    _describe(store, name, f"pip:{base}:{','.join(packages)}")
    log.info("image %s built in %.1f s", name, time.monotonic() - started)
    return store.get(name)


def build_gem_image(name: str = GEM_IMAGE, *, force: bool = False, runtime=None,
                    on_output: Callable[[str], None] | None = None) -> Image:
    """The image that hosts GEM's envs: gem-llm 0.1.0 on the pip base."""
    return build_pip_image(name, GEM_PACKAGES, check="import gem; gem.make('game:GuessTheNumber-v0-easy')",
                           force=force, runtime=runtime, on_output=on_output)


def _pip_env(sb, host_certs: bool) -> dict[str, str]:
    """The install's environment: no prompts, the host's proxies and index, its CA bundle."""
    env = {"PIP_NO_INPUT": "1"}
    for key in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
                "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT"):
        value = os.environ.get(key, "")
        if key.startswith("PIP_") and key.endswith("URL"):   # a file:// index is not in there
            value = " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
        if value:
            env[key] = value
    if host_certs:
        bundle = _host_ca_bundle()
        if bundle:
            sb.write_file(HOST_CA_PATH, Path(bundle).read_bytes(), mode=0o644)
            env["PIP_CERT"] = HOST_CA_PATH
    return env


def _host_ca_bundle() -> str | None:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _lines(on_output: Callable[[str], None] | None):
    """A bytes-chunk callback that hands `on_output` whole lines."""
    if on_output is None:
        return None
    pending = b""

    def feed(chunk: bytes) -> None:
        nonlocal pending
        pending += chunk
        *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
        if len(pending) > MAX_LINE:   # output with no newline in sight: pass it on in parts
            lines, pending = lines + [pending], b""
        for line in lines:
            if line.strip():
                on_output(line.decode("utf-8", errors="replace"))
    return feed


def _describe(store, name: str, source: str) -> None:
    """Record what the image holds (`tumbler image ls` shows it) in place of "snapshot:<id>"."""
    try:
        store.update_meta(name, source=source)
    except (OSError, ValueError, TumblerError) as exc:   # the image is fine without it
        log.warning("could not record the source of image %s: %s", name, exc)
