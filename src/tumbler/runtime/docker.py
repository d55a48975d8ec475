"""The docker runtime: each sandbox is a container of a Docker Engine API (Docker, or Podman).

    <home>/docker/<id>/sandbox.json   spec and state (what survives our own restart)
    <home>/docker/<id>/disk.img       the sandbox's disk (Podman): ext4 of `Limits.disk` bytes
    <home>/docker-disks/<id>/         that disk, mounted; the container's writable layer in
                                      Podman's storage is a symlink to it (container_layers.py)
    <run>/docker/<id>/                a tmpfs of the sandbox's own (256 KiB), holding
        box/                          bind-mounted at /.tumbler/run; the agent binds agent.sock here
        agent.sock                    the same socket, pinned where the sandbox cannot reach
                                      (agent_socket.py says why); what `agent_socket` returns

A container is created with the sandbox (so a stopped sandbox keeps its files) and named
`tumbler-<id>`, labelled `tumbler.sandbox=<id>` and `tumbler.owner=<owner>` (host and home of the
runtime that made it); on construction, containers of ours whose record is gone are removed.
The agent's own interpreter and package are mounted read-only at /.tumbler (`agentpy`) and it
runs from there as pid 1: nothing of the image runs it.
Security: Docker's default capabilities only, no-new-privileges, our own seccomp profile (the
process runtime's, `seccomp.oci_seccomp`: stricter than the engine's default, e.g. no unshare,
mount or keyctl; the engine's default if the host has no profile to build it from), the
engine's masked and read-only /proc and /sys paths, cgroup limits, no network unless asked, a
log of at most 1 MiB. Network "egress" is the engine's "none" plus our proxy (runtime/egress.py)
listening inside the container's namespace, found by the container's pid: that needs the engine
on this host (a unix socket, its containers' processes in our /proc); any other engine is
refused at create with that reason. On Podman, root inside is an unprivileged host uid: each container gets
its own range of 65536 ids (`--userns=auto`, from the `containers` entry of /etc/subuid and
/etc/subgid), and its writes go to its own disk. Docker remaps only daemon-wide
(`userns-remap`) and its storage is its own: there, neither is set per container.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

from tumbler.agent import protocol as agent_protocol
from tumbler.config import Paths
from tumbler.errors import Conflict, InvalidRequest, RuntimeFailure, SandboxError
from tumbler.runtime import agent_socket, container_layers, disks, egress, engine
from tumbler.runtime import agentpy
from tumbler.runtime.bundle import AGENT_BOOT, AGENT_MOUNT, CAPABILITIES
from tumbler.runtime.records import RecordKeeping
from tumbler.runtime.spec import (SandboxInfo, SandboxSpec, SandboxState, SandboxStats,
                                  transition)

log = logging.getLogger(__name__)

RUN_MOUNT = "/.tumbler/run"
SOCKET_NAME = "agent.sock"
LABEL_SANDBOX = "tumbler.sandbox"
LABEL_OWNER = "tumbler.owner"
AGENT_START_TIMEOUT_S = 15.0
KILL_TIMEOUT_S = 10
ID_LEN = 12
REMOVE_ATTEMPTS = 3
NPROC = 4096  # per-uid process limit; the pids cgroup is the sandbox's real bound
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USERNS_SIZE = 65536          # ids per container with --userns=auto, as many as the process runtime's
RUN_DIR_BYTES = 256 << 10    # the tmpfs that holds the agent's socket: the sandbox can write there
RUN_DIR_INODES = 64
LOG_MAX_SIZE = "1m"          # the engine's log of a container (the agent's own stdout and stderr)


class DockerRuntime(RecordKeeping):
    """Sandboxes as containers of a Docker-API engine. Thread-safe; needs root (bind mounts).

    `userns=False` gives up Podman's user namespace (root inside is then host root); it exists
    for comparison (bench/bench_backends.py), not for use."""

    name = "docker"

    def __init__(self, base_url: str | None = None, *, paths: Paths | None = None,
                 owner: str | None = None, userns: bool = True):
        self.paths = paths or Paths.from_env()
        self.url = engine.engine_url(base_url, self.paths)
        self.client = engine.connect(self.url, paths=self.paths)
        self.api = self.client.api
        self.records = self.paths.home / "docker"
        self.disk_dir = self.paths.home / "docker-disks"
        self.shared = self.paths.run / "docker"
        for d in (self.records, self.disk_dir, self.shared):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        self.owner = owner or f"{socket.gethostname()}:{self.paths.home}"
        with engine.engine_errors("reading the engine's info", self.url):
            engine_info = self.api.info()
        self.podman = self._is_podman()
        self.userns = f"auto:size={USERNS_SIZE}" if userns and self.podman else None
        # A disk per sandbox needs the layer in Podman's overlay storage on this host.
        self.own_disks = self.podman and engine_info.get("Driver") == "overlay"
        self._say_what_is_not_enforced(engine_info, userns)
        # The agent's own interpreter and package, mounted read-only at /.tumbler (agentpy):
        # any image will do, python3 or not.
        self.agent_root = agentpy.ensure(self.paths.home / "agent-root",
                                         Path(agent_protocol.__file__).parent)
        self._seccomp: str | None = None      # the security_opt entry, made on first use
        self._init_records(self.records)
        self.reclaim_orphans()

    # -- life cycle ------------------------------------------------------------------------

    def create(self, spec: SandboxSpec, sandbox_id: str | None = None) -> SandboxInfo:
        sandbox_id = sandbox_id or secrets.token_hex(ID_LEN // 2)
        if not sandbox_id.isalnum() or len(sandbox_id) > 32:
            raise InvalidRequest(f"bad sandbox id {sandbox_id!r}: up to 32 letters and digits")
        if spec.network == "egress" and not self.url.startswith("unix://"):
            raise InvalidRequest(f"network 'egress' needs the container engine on this host (its "
                                 f"proxy listens in the container's network namespace, entered "
                                 f"by pid); the engine at {self.url} is not a local socket: use "
                                 "a local engine, the process backend, or network 'none'")
        try:
            self._dir(sandbox_id).mkdir()
        except FileExistsError:
            raise Conflict(f"sandbox {sandbox_id} exists") from None
        info = SandboxInfo(id=sandbox_id, state=SandboxState.CREATED, spec=spec,
                           created=time.time(), runtime=self.name)
        try:
            self._save(info)
            self._create_container(info)
        except BaseException:
            self._forget(sandbox_id)
            raise
        return info

    def start(self, sandbox_id: str) -> SandboxInfo:
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "start")
            if not self._container_exists(sandbox_id):
                log.warning("container of sandbox %s is gone; making it anew from %s",
                            sandbox_id, info.spec.image)
                self._create_container(info)
            self._start(info)
            return self._set_state(info, SandboxState.RUNNING)

    def stop(self, sandbox_id: str) -> SandboxInfo:
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "stop")
            if info.state == SandboxState.PAUSED:
                self._unpause(sandbox_id)
            self._kill(sandbox_id)
            return self._set_state(info, SandboxState.STOPPED)

    def remove(self, sandbox_id: str) -> None:
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "remove")
            if info.state == SandboxState.PAUSED:
                self._unpause(sandbox_id)
            self._remove_container(sandbox_id)
            self._forget(sandbox_id)
        self._forget_lock(sandbox_id)

    def reset(self, sandbox_id: str) -> SandboxInfo:
        """Back to the image: a new container on a new disk replaces the old (files, processes gone).

        Measured on Podman here: removal ~115 ms, create ~17 ms, start to a listening agent
        ~85 ms. Removing the old container in the background while the new one starts was
        slower on 2 cores (and races Podman's shm unmount), so this stays sequential."""
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "reset")
            if info.state == SandboxState.PAUSED:
                self._unpause(sandbox_id)
            self._remove_container(sandbox_id)
            self._create_container(info)
            self._start(info)
            return self._set_state(info, SandboxState.RUNNING)

    def pause(self, sandbox_id: str) -> SandboxInfo:
        """Freeze the container's processes (the engine's cgroup freezer)."""
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "pause")
            with engine.engine_errors(f"pausing sandbox {sandbox_id}", self.url):
                self.api.pause(self._name(sandbox_id))
            return self._set_state(info, SandboxState.PAUSED)

    def resume(self, sandbox_id: str) -> SandboxInfo:
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "resume")
            self._unpause(sandbox_id)
            return self._set_state(info, SandboxState.RUNNING)

    def fork(self, sandbox_id: str, child_ids: list[str],
             labels: dict[str, str] | None = None) -> list[SandboxInfo]:
        raise InvalidRequest("the docker backend cannot fork a sandbox; snapshot it to an image "
                             "and create sandboxes from that, or use the process backend")

    def _unpause(self, sandbox_id: str) -> None:
        with engine.engine_errors(f"resuming sandbox {sandbox_id}", self.url):
            self.api.unpause(self._name(sandbox_id))

    def snapshot(self, sandbox_id: str, image: str) -> str:
        """Commit the sandbox's files to the engine's local image `image` (tag `latest` unless
        given); the container is paused meanwhile.

        A container in a user namespace on Podman has its files put at their container ids for
        the commit and back after it (container_layers.py says why); ~9 us per changed file."""
        repo, _, tag = image.partition(":")
        with self._lock(sandbox_id):
            self.get(sandbox_id)
            name = self._name(sandbox_id)
            message = f"tumbler snapshot of {sandbox_id}"
            with engine.engine_errors(f"snapshot of sandbox {sandbox_id}", self.url):
                layer = self._libpod_inspect(sandbox_id) if self.podman else None
                maps = ((layer or {}).get("HostConfig") or {}).get("IDMappings") or {}
                if not maps.get("UidMap"):
                    self.api.commit(name, repository=repo, tag=tag or "latest", message=message)
                    return image
                uids = [container_layers.IdRange.parse(m) for m in maps["UidMap"]]
                gids = [container_layers.IdRange.parse(m) for m in maps.get("GidMap") or []]
                upper = Path(layer["GraphDriver"]["Data"]["UpperDir"])
                running = bool(layer["State"].get("Running"))
                if running:
                    self.api.pause(name)
                try:
                    with container_layers.container_ids(upper, uids, gids):
                        self.api.commit(name, repository=repo, tag=tag or "latest",
                                        message=message, pause=False)
                finally:
                    if running:
                        self.api.unpause(name)
        return image

    def stats(self, sandbox_id: str) -> SandboxStats:
        """One sample from the engine's stats API (no streaming, no second sample)."""
        info = self.get(sandbox_id)
        with engine.engine_errors(f"stats of sandbox {sandbox_id}", self.url):
            raw = self.api.stats(self._name(sandbox_id), stream=False, one_shot=True)
        memory = raw.get("memory_stats") or {}
        cpu = (raw.get("cpu_stats") or {}).get("cpu_usage") or {}
        return SandboxStats(memory_bytes=memory.get("usage", 0),
                            memory_limit_bytes=memory.get("limit") or info.spec.limits.memory,
                            cpu_seconds=cpu.get("total_usage", 0) / 1e9,
                            pids=(raw.get("pids_stats") or {}).get("current", 0),
                            pids_limit=info.spec.limits.pids)

    def agent_socket(self, sandbox_id: str) -> str:
        """The host-only, pinned name of the agent's socket: safe to connect to."""
        return str(self.shared / sandbox_id / SOCKET_NAME)

    def box(self, sandbox_id: str) -> Path:
        """The host directory that the sandbox sees at /.tumbler/run (and may write)."""
        return self.shared / sandbox_id / "box"

    def reclaim_orphans(self) -> list[str]:
        """Remove containers labelled as ours whose sandbox record is gone, and the disks and
        socket dirs of sandboxes without a record; returns the ids of those containers."""
        with engine.engine_errors("listing containers", self.url):
            found = self.api.containers(all=True, filters={"label": f"{LABEL_OWNER}={self.owner}"})
        orphans = []
        for container in found:
            sid = container["Labels"].get(LABEL_SANDBOX, "")
            if sid and self._recorded(sid):
                continue
            log.warning("removing orphaned container %s of sandbox %s", container["Names"], sid)
            self._remove_container(container["Id"], by_id=True)
            if sid:
                self._forget(sid)
            orphans.append(sid)
        for parent in (self.disk_dir, self.shared):
            for leftover in parent.iterdir():
                if not self._recorded(leftover.name):
                    log.warning("removing %s, left by sandbox %s without a record", leftover,
                                leftover.name)
                    self._forget(leftover.name)
        return orphans

    # -- internals -------------------------------------------------------------------------

    def _create_container(self, info: SandboxInfo) -> None:
        spec, sid = info.spec, info.id
        with engine.engine_errors(f"sandbox {sid}: image {spec.image!r}", self.url):
            self.api.inspect_image(spec.image)   # a missing image is NotFound now, named
        self._mount_run_dir(sid)
        self._drop_disk(sid)  # a new container starts from the image, on a new disk
        command = [*agentpy.AGENT_ARGV, "-c", AGENT_BOOT, "--socket", f"{RUN_MOUNT}/{SOCKET_NAME}"]
        with engine.engine_errors(f"creating the container of sandbox {sid}", self.url):
            self.api.create_container(
                spec.image, command=command, entrypoint=[], name=self._name(sid),
                hostname=spec.hostname if spec.network != "host" else None,
                environment={**(egress.proxy_env() if spec.network == "egress" else {}),
                             **spec.env},
                working_dir=spec.cwd,
                labels={**spec.labels, LABEL_SANDBOX: sid, LABEL_OWNER: self.owner},
                host_config=self._host_config(spec, self.box(sid)))
        try:
            self._mount_disk(info)
        except BaseException:
            self._remove_container(sid)
            self._drop_disk(sid)
            raise

    def _host_config(self, spec: SandboxSpec, box: Path) -> dict:
        import docker.types
        lim = spec.limits
        config = self.api.create_host_config(
            network_mode="none" if spec.network == "egress" else spec.network, mem_limit=lim.memory, memswap_limit=lim.memory,
            nano_cpus=int(lim.cpus * 1e9), pids_limit=lim.pids,
            ulimits=[docker.types.Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile),
                     # Podman fills in a missing nproc with a value a userns cannot set.
                     docker.types.Ulimit(name="nproc", soft=NPROC, hard=NPROC)],
            cap_drop=["ALL"], cap_add=sorted(c.removeprefix("CAP_") for c in CAPABILITIES),
            security_opt=["no-new-privileges", *self._seccomp_opt()],
            log_config=docker.types.LogConfig(type="k8s-file" if self.podman else "json-file",
                                              config={"max-size": LOG_MAX_SIZE}),
            mounts=[docker.types.Mount(AGENT_MOUNT, str(self.agent_root), type="bind", read_only=True),
                    docker.types.Mount(RUN_MOUNT, str(box), type="bind")])
        if self.userns:
            # docker's client refuses any mode but "host"; Podman's API takes "auto:size=N".
            config["UsernsMode"] = self.userns
        return config

    def _mount_run_dir(self, sid: str) -> None:
        """The sandbox's own small tmpfs for its agent's socket (what it writes in /.tumbler/run
        cannot fill the host), with the pinned name beside the shared dir on that one filesystem."""
        run_dir = self.shared / sid
        if not os.path.ismount(run_dir):
            disks.mount_tmpfs(run_dir, RUN_DIR_BYTES, RUN_DIR_INODES)
        box = self.box(sid)
        box.mkdir(exist_ok=True)
        # Root inside is some host uid of the container's range: the dir must let it bind there.
        # Only this sandbox sees the dir; the tmpfs's root is root's alone.
        box.chmod(0o777)

    def _mount_disk(self, info: SandboxInfo) -> None:
        """Put the container's writable layer on the sandbox's own disk (Podman's overlay
        storage only), making and mounting the disk first if need be. Idempotent."""
        if not self.own_disks:
            return
        sid, lim = info.id, info.spec.limits
        mount = self.disk_dir / sid
        if not os.path.ismount(mount):
            image = self._dir(sid) / "disk.img"
            if not image.exists():
                disks.make_image(disks.template(self.paths.home / "disks", lim.disk, lim.inodes),
                                 image)
            last = self._dir(sid) / "disk.dev"
            if last.exists():
                disks.wait_detached(last.read_text(), image)
            last.write_text(disks.mount_fs(image, mount, self.paths.run / "loop"))
        data = self._inspect(sid)["GraphDriver"]["Data"]
        container_layers.move_to_disk(container_layers.layer_dir(data.get("UpperDir", ""),
                                                                 data.get("WorkDir", "")), mount)

    def _drop_disk(self, sid: str) -> None:
        """Unmount and delete the sandbox's disk (its container is gone). Idempotent.

        Podman creates a user-namespaced container from a private copy of the host's mount
        namespace, which its conmon keeps: every disk mounted then stays mounted there. Removing
        the mount point directory detaches those copies (the kernel does so for mounts in other
        namespaces), so the disk and its loop device go now, not when those containers end."""
        mount = self.disk_dir / sid
        disks.unmount(mount)
        try:
            mount.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the disk mount point %s: %s", mount, exc.strerror)
        image, last = self._dir(sid) / "disk.img", self._dir(sid) / "disk.dev"
        if last.exists():
            try:
                disks.wait_detached(last.read_text(), image)
            except RuntimeFailure as exc:
                log.warning("%s", exc)
            last.unlink()
        image.unlink(missing_ok=True)

    def _start(self, info: SandboxInfo) -> None:
        sid = info.id
        self._mount_run_dir(sid)
        if self.own_disks and not os.path.ismount(self.disk_dir / sid):
            self._mount_disk(info)  # after a host restart
        pinned = Path(self.agent_socket(sid))
        pinned.unlink(missing_ok=True)
        (self.box(sid) / SOCKET_NAME).unlink(missing_ok=True)
        with engine.engine_errors(f"starting sandbox {sid}", self.url):
            self.api.start(self._name(sid))
        self._wait_for_agent(sid, pinned)
        if info.spec.network == "egress":
            self._start_egress(info)

    def _start_egress(self, info: SandboxInfo) -> None:
        """Our proxy in the container's network namespace, entered through its init's pid, which
        must be that container's process on this host (its cgroup names the container): an
        engine in a VM or elsewhere reports pids of its own."""
        sid = info.id
        egress.stop(self._dir(sid))   # one of an earlier start, if any is left
        state = self._inspect(sid) or {}
        pid, container = int(state.get("State", {}).get("Pid") or 0), state.get("Id", "")
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text() if pid > 0 and container else ""
        except OSError:
            cgroup = ""
        try:
            if container not in cgroup or not cgroup:
                raise RuntimeFailure(f"the engine's pid {pid} for the container is not that "
                                     "container's process on this host (is the engine in a VM "
                                     "or elsewhere?): network 'egress' needs a local engine")
            egress.start(self._dir(sid), pid, info.spec.egress)
        except (RuntimeFailure, OSError) as exc:
            self._kill(sid)
            raise RuntimeFailure(f"sandbox {sid}: {exc}") from None

    def _wait_for_agent(self, sid: str, pinned: Path) -> None:
        """Until the agent listens; a container that exits first fails with its log."""
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        delay = 0.002
        while time.monotonic() < deadline:
            if agent_socket.pin(self.box(sid), SOCKET_NAME, pinned) and agent_socket.answers(pinned):
                return
            if delay >= 0.05 and not self._running(sid):
                raise SandboxError(f"the agent of sandbox {sid} exited at start: {self._logs(sid)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        raise SandboxError(f"the agent of sandbox {sid} did not listen within "
                           f"{AGENT_START_TIMEOUT_S} s: {self._logs(sid)}")

    def _kill(self, sid: str) -> None:
        """End every process of the sandbox (and its egress proxy); its container (and files) stay."""
        egress.stop(self._dir(sid))
        Path(self.agent_socket(sid)).unlink(missing_ok=True)
        if not self._running(sid):
            return
        with engine.engine_errors(f"stopping sandbox {sid}", self.url):
            try:
                self.api.kill(self._name(sid))
            except Exception as exc:  # it may have exited between the two calls
                if self._running(sid):
                    raise exc
            self.api.wait(self._name(sid), timeout=KILL_TIMEOUT_S)

    def _remove_container(self, sid: str, *, by_id: bool = False) -> None:
        """Remove the container with its anonymous volumes; nothing if it is gone.

        Podman sometimes fails a removal racing another container's start ("device or resource
        busy" on its shm mount); a second try a moment later succeeds."""
        import docker.errors
        name = sid if by_id else self._name(sid)
        if not by_id:
            egress.stop(self._dir(sid))
        for attempt in range(REMOVE_ATTEMPTS):
            with engine.engine_errors(f"removing container {name}", self.url):
                try:
                    self.api.remove_container(name, force=True, v=True)
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as exc:
                    if attempt == REMOVE_ATTEMPTS - 1 or exc.status_code != 500:
                        raise
                    log.info("retrying removal of %s: %s", name, exc.explanation)
            time.sleep(0.1 * (attempt + 1))

    def _forget(self, sid: str) -> None:
        """Remove the sandbox's disk, socket dir and record (its container is gone)."""
        self._drop_disk(sid)
        run_dir = self.shared / sid
        disks.unmount(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(self._dir(sid), ignore_errors=True)

    def _recorded(self, sid: str) -> bool:
        return (self._dir(sid) / "sandbox.json").exists()

    def _container_exists(self, sid: str) -> bool:
        return self._inspect(sid) is not None

    def _running(self, sid: str) -> bool:
        state = self._inspect(sid)
        return bool(state and state["State"].get("Running"))

    def _inspect(self, sid: str) -> dict | None:
        import docker.errors
        with engine.engine_errors(f"inspecting sandbox {sid}", self.url):
            try:
                return self.api.inspect_container(self._name(sid))
            except docker.errors.NotFound:
                return None

    def _libpod_inspect(self, sid: str) -> dict:
        """Podman's own inspect of the container: it has the id mappings, Docker's has not."""
        url = self.api._url("/libpod/containers/{0}/json", self._name(sid))
        return self.api._result(self.api._get(url), json=True)

    def _logs(self, sid: str, limit: int = 2000) -> str:
        try:
            text = self.api.logs(self._name(sid), tail=20).decode(errors="replace").strip()
        except Exception as exc:  # a diagnostic only: never hide the error being reported
            text = f"(no log: {exc})"
        return text[-limit:] or "(empty log)"

    def _seccomp_opt(self) -> list[str]:
        """["seccomp=..."]: our profile, which Docker's engine takes inline (as JSON) and Podman's
        only as a path on its host (the socket is local); [] (the engine's default) if the host
        has no base profile to build ours from."""
        if self._seccomp is None:
            from tumbler.runtime import seccomp
            try:
                profile = json.dumps(seccomp.oci_seccomp(CAPABILITIES))
            except (RuntimeFailure, OSError, ValueError) as exc:
                log.warning("no seccomp profile of ours (%s): containers get the engine's default", exc)
                self._seccomp = ""
                return []
            if self._is_podman():
                path = self.paths.run / "docker-seccomp.json"
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(profile)
                os.replace(tmp, path)
                profile = str(path)
            self._seccomp = f"seccomp={profile}"
        return [self._seccomp] if self._seccomp else []

    def _is_podman(self) -> bool:
        with engine.engine_errors("reading the engine's version", self.url):
            version = self.api.version()
        return any("podman" in c.get("Name", "").lower() for c in version.get("Components") or [])

    def _say_what_is_not_enforced(self, engine_info: dict, userns: bool) -> None:
        """Warn once, at construction, of a limit the engine will not hold."""
        if userns and not self.podman and not any(
                "name=userns" in o for o in engine_info.get("SecurityOptions") or []):
            log.warning("the engine at %s maps no user namespace (Docker remaps only daemon-wide, "
                        "with userns-remap): root in its sandboxes is host root", self.url)
        if not self.own_disks:
            log.warning("the engine at %s keeps containers in its own storage (%s): sandbox disk "
                        "limits are not enforced there", self.url, engine_info.get("Driver"))

    @staticmethod
    def _name(sandbox_id: str) -> str:
        return f"tumbler-{sandbox_id}"
