"""The process runtime: each sandbox is a runc container over an overlay of its image. No daemon.

    <home>/sandboxes/<id>/sandbox.json   spec and state (what survives our own restart)
    <home>/sandboxes/<id>/creator        the process that made it (a create cut short is swept)
    <home>/sandboxes/<id>/config.json    the OCI bundle's config (bundle dir = sandbox dir)
    <home>/sandboxes/<id>/disk.img       the sandbox's own ext4 filesystem (its disk quota)
    <home>/sandboxes/<id>/layer/{upper,work}  its writable layer, on that filesystem, while mounted
    <home>/sandboxes/<id>/rootfs         the overlay mount point, while runc starts it (then only in
                                         the sandbox's own mount namespace)
    <run>/sock/<id>.sock                 the agent's socket, made and bound by us, on the host only

We bind the agent's listening socket ourselves and hand it to the container as stdin, so the
socket never sits in a directory the sandbox can write (no symlink games) and the first request
can be sent before the agent has even started: it waits in the listen backlog.
This process makes itself a child subreaper, so the containers' init processes (reparented when
`runc run -d` exits) become our children and are reaped by us, not left as zombies.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tumbler.agent import protocol as agent_protocol
from tumbler.config import Paths
from tumbler.errors import (Conflict, InvalidRequest, NotFound, RuntimeFailure, SandboxError,
                            TumblerError)
from tumbler.runtime import agentpy, cgroups, disks, egress, expiry, overlay, owners
from tumbler.runtime.bundle import oci_config
from tumbler.runtime.images import ImageStore
from tumbler.runtime.records import RecordKeeping
from tumbler.runtime.spec import (SandboxInfo, SandboxSpec, SandboxState, SandboxStats,
                                  transition)
from tumbler.runtime.trees import remove_tree

log = logging.getLogger(__name__)

RUNC_TIMEOUT_S = 30
UNRECORDED_GRACE_S = 60.0  # a dir without a record this old is a leftover, not a create
CREATOR = "creator"        # in a sandbox dir: "pid:start time" of the process that made it
PR_SET_CHILD_SUBREAPER = 36
ID_LEN = 12
AGENT_LOG = "agent.log"    # on the sandbox's disk, beside its overlay's upper dir
FORK_THREADS = 8           # disk copies of one fork in flight at once
SANDBOXES_MODE = 0o711     # host users may not list the sandboxes; runc's init (uid 100000) must pass


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("could not become a child subreaper; exited sandboxes may stay zombies")


class ProcessRuntime(RecordKeeping):
    """Sandboxes as runc containers on this host. Thread-safe; needs root."""

    name = "process"

    def __init__(self, paths: Paths | None = None, images: ImageStore | None = None):
        if os.geteuid() != 0:
            raise RuntimeFailure("the process runtime needs root (it mounts overlays and runs runc)")
        self.runc = shutil.which("runc")
        if self.runc is None:
            raise RuntimeFailure("runc is not installed: `apt-get install runc`")
        self.paths = paths or Paths.from_env()
        self.images = images or ImageStore(self.paths)
        for d in (self.paths.sandboxes, self.paths.runc_root, self.paths.sockets):
            d.mkdir(parents=True, exist_ok=True)
        self.paths.sandboxes.chmod(SANDBOXES_MODE)
        # The agent's own interpreter and package, mounted read-only at /.tumbler (agentpy).
        self.agent_root = agentpy.ensure(self.paths.home / "agent-root",
                                         Path(agent_protocol.__file__).parent)
        self._init_records(self.paths.sandboxes)
        _become_subreaper()
        for leftover in self.paths.sandboxes.glob(".trash-*"):
            remove_tree(leftover)
        self._sweep_unrecorded()
        self._sweep_orphans()

    # -- life cycle ------------------------------------------------------------------------

    def create(self, spec: SandboxSpec, sandbox_id: str | None = None) -> SandboxInfo:
        self._check_image(spec.image)
        sandbox_id = sandbox_id or secrets.token_hex(ID_LEN // 2)
        return self._new_record(sandbox_id, spec, lambda image: self._fresh_disk(image.parent, spec))

    def start(self, sandbox_id: str) -> SandboxInfo:
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "start")
            self._start(info)
            return self._set_state(info, SandboxState.RUNNING)

    def stop(self, sandbox_id: str) -> SandboxInfo:
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "stop")
            self._stop(sandbox_id)
            return self._set_state(info, SandboxState.STOPPED)

    def remove(self, sandbox_id: str) -> None:
        with self._lock(sandbox_id):
            try:
                info = self.get(sandbox_id)
            except NotFound:
                self._remove_if_abandoned(self._dir(sandbox_id))
                raise
            transition(sandbox_id, info.state, "remove")
            self._stop(sandbox_id)
            remove_tree(self._dir(sandbox_id))
            cgroups.remove(self._cgroup(sandbox_id))
        self._forget_lock(sandbox_id)

    def reset(self, sandbox_id: str) -> SandboxInfo:
        """Back to the pristine image: every process ends, every written file is gone."""
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "reset")
            self._stop(sandbox_id)
            self._fresh_disk(self._dir(sandbox_id), info.spec)
            self._start(info)
            return self._set_state(info, SandboxState.RUNNING)

    def pause(self, sandbox_id: str) -> SandboxInfo:
        """Freeze every process of the sandbox (cgroup freezer): memory kept, no CPU used."""
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "pause")
            cgroups.freeze(self._cgroup(sandbox_id))
            return self._set_state(info, SandboxState.PAUSED)

    def resume(self, sandbox_id: str) -> SandboxInfo:
        """Thaw a paused sandbox: its processes go on where they were."""
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "resume")
            cgroups.thaw(self._cgroup(sandbox_id))
            return self._set_state(info, SandboxState.RUNNING)

    def fork(self, sandbox_id: str, child_ids: list[str],
             labels: dict[str, str] | None = None) -> list[SandboxInfo]:
        """New sandboxes (created, not started) with copies of the running or paused source's
        files; its processes and memory are not copied. The source is frozen only while its
        disk is synced and copied once; the other copies are made from that first one.
        `labels` are added to the source's in the children's specs."""
        if not child_ids:
            raise InvalidRequest("fork needs at least one new sandbox")
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            transition(sandbox_id, info.state, "fork")
            spec = info.spec.model_copy(update={"labels": {**info.spec.labels, **(labels or {})}})
            sdir = self._dir(sandbox_id)
            made = [self._fork_child(sdir, spec, child_ids[0], frozen=info.state)]
        first = self._dir(child_ids[0]) / "disk.img"
        copy = lambda child: self._new_record(child, spec, lambda d: disks.make_image(first, d))
        with ThreadPoolExecutor(min(FORK_THREADS, len(child_ids))) as pool:
            futures = [pool.submit(copy, child) for child in child_ids[1:]]
        made += [f.result() for f in futures if f.exception() is None]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for child in made:
                self.remove(child.id)
            raise failed[0]
        return made

    def _fork_child(self, source_dir: Path, spec: SandboxSpec, child: str,
                    frozen: SandboxState) -> SandboxInfo:
        """The first child: the source's disk, synced and copied while its processes are frozen."""
        rel = self._cgroup(source_dir.name)
        if frozen == SandboxState.RUNNING:
            cgroups.freeze(rel)
        try:
            disks.sync(source_dir / "layer")
            return self._new_record(child, spec,
                                    lambda d: disks.make_image(source_dir / "disk.img", d))
        finally:
            if frozen == SandboxState.RUNNING:
                cgroups.thaw(rel)

    def _new_record(self, sandbox_id: str, spec: SandboxSpec, make_disk) -> SandboxInfo:
        """A created sandbox whose disk `make_disk(path)` writes (nothing left if it fails)."""
        if not sandbox_id.isalnum() or len(sandbox_id) > 32:
            raise InvalidRequest(f"bad sandbox id {sandbox_id!r}: up to 32 letters and digits")
        sdir = self._dir(sandbox_id)
        try:
            sdir.mkdir(mode=SANDBOXES_MODE)
        except FileExistsError:
            raise Conflict(f"sandbox {sandbox_id} exists") from None
        try:
            (sdir / CREATOR).write_text(owners.this_process())
            make_disk(sdir / "disk.img")
            (sdir / "rootfs").mkdir()
        except BaseException:
            remove_tree(sdir)
            raise
        info = SandboxInfo(id=sandbox_id, state=SandboxState.CREATED, spec=spec,
                           created=time.time(), runtime=self.name)
        self._save(info)
        return info

    def snapshot(self, sandbox_id: str, image: str) -> str:
        """Save the sandbox's files as image `image`, stacked on its own image."""
        with self._lock(sandbox_id):
            info = self.get(sandbox_id)
            running = info.state == SandboxState.RUNNING
            rel = self._cgroup(sandbox_id)
            sdir = self._dir(sandbox_id)
            if running:
                cgroups.freeze(rel)
            elif info.state != SandboxState.PAUSED:   # a paused one is frozen, its disk mounted
                self._mount_disk(sdir, info.spec)
            try:
                self.images.add_layer(image, info.spec.image, self.upper_dir(sandbox_id),
                                      source=f"snapshot:{sandbox_id}", copy=_copy_layer)
            finally:
                if running:
                    cgroups.thaw(rel)
                elif info.state != SandboxState.PAUSED:
                    disks.unmount(sdir / "layer")
        return image

    def stats(self, sandbox_id: str) -> SandboxStats:
        info = self.get(sandbox_id)
        rel = self._cgroup(sandbox_id)
        return SandboxStats(memory_bytes=cgroups.memory_bytes(rel),
                            memory_limit_bytes=info.spec.limits.memory,
                            cpu_seconds=cgroups.cpu_seconds(rel), pids=cgroups.pids(rel),
                            pids_limit=info.spec.limits.pids)

    def agent_socket(self, sandbox_id: str) -> str:
        return str(self.paths.sockets / f"{sandbox_id}.sock")

    def upper_dir(self, sandbox_id: str) -> Path:
        """The sandbox's writable layer on the host (there while its disk is mounted)."""
        return self._dir(sandbox_id) / "layer" / "upper"

    def init_pid(self, sandbox_id: str) -> int | None:
        """Host pid of the sandbox's init (the agent), if it runs."""
        try:
            return int((self._dir(sandbox_id) / "init.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    # -- internals -------------------------------------------------------------------------

    def _sweep_orphans(self) -> None:
        """Remove sandboxes whose owner process is gone (`runtime.owners`), and those past the
        deadline a serverless create gave them (`runtime.expiry`)."""
        now = time.time()
        for info in self.list():
            owner = info.spec.labels.get(owners.OWNER_LABEL)
            if expiry.expired(info.spec.labels, now):
                log.warning("removing sandbox %s: its max lifetime is over", info.id)
            elif owner is None or owners.is_alive(owner):
                continue
            else:
                log.warning("removing sandbox %s: its owner (process %s) is gone", info.id, owner)
            try:
                self.remove(info.id)
            except (TumblerError, OSError) as exc:   # another sweep may be at it too: its job
                log.info("sandbox %s of a gone owner not removed: %s", info.id, exc)

    def _sweep_unrecorded(self, min_age_s: float = UNRECORDED_GRACE_S) -> None:
        """Remove sandbox dirs without a sandbox.json: left by a process killed between the
        steps of a create or a remove. Nothing lists them, so nothing else would remove them.
        Young ones are spared, since another process may be creating them right now, unless
        the process that began the create is gone (a server SIGKILLed mid-create)."""
        now = time.time()
        for sdir in self.paths.sandboxes.iterdir():
            if sdir.name.startswith(".") or (sdir / "sandbox.json").exists():
                continue
            if self._remove_if_abandoned(sdir):
                continue
            try:
                if now - sdir.stat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:  # another process's remove finished it first
                continue
            self._remove_unmounted(sdir)

    def _remove_if_abandoned(self, sdir: Path) -> bool:
        """Remove `sdir` if it is a create whose creator died before it wrote sandbox.json."""
        try:
            creator = (sdir / CREATOR).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return False
        if owners.is_alive(creator):   # a dead creator writes no sandbox.json any more
            return False
        log.warning("removing %s: a create cut short (process %s is gone)", sdir.name,
                    creator.partition(":")[0])
        return self._remove_unmounted(sdir)

    @staticmethod
    def _remove_unmounted(sdir: Path) -> bool:
        if overlay.is_mounted(sdir / "rootfs") or overlay.is_mounted(sdir / "layer"):
            return False
        return remove_tree(sdir)

    def _start(self, info: SandboxInfo) -> None:
        sid = info.id
        sdir = self._dir(sid)
        rootfs = sdir / "rootfs"
        if not overlay.is_mounted(rootfs):
            self._mount_disk(sdir, info.spec)
            rootfs.mkdir(exist_ok=True)
            overlay.mount_overlay(self.images.layers(info.spec.image), sdir / "layer" / "upper",
                                  sdir / "layer" / "work", rootfs)
        config = oci_config(info.spec, rootfs=rootfs, agent_root=self.agent_root,
                            cgroup_path=self._cgroup(sid))
        (sdir / "config.json").write_text(json.dumps(config))
        listener = self._listen(sid)
        try:
            # The agent's stderr goes to a file on the sandbox's own disk (beside its upper dir,
            # out of its sight): what a hostile agent writes there counts against its quota,
            # never the host's disk.
            with open(sdir / "layer" / AGENT_LOG, "wb") as logf:
                # --no-new-keyring: a session keyring per container counts against the kernel's
                # key quota of the sandbox's host uid (kernel.keys.maxkeys, 200 by default),
                # which would cap a node at 200 running sandboxes.
                self._runc("run", "-d", "--no-new-keyring", "--pid-file", str(sdir / "init.pid"),
                           "-b", str(sdir), self._cid(sid), stdin=listener.fileno(), stderr=logf)
        except RuntimeFailure:
            self._stop(sid)
            raise
        finally:
            # Only the agent holds the socket now: if it dies, clients are refused, not queued.
            listener.close()
        # The sandbox's mount namespace holds its own copy of the root now; the host's goes.
        # Each runc start copies and reads the host's mount table (several times), so a mount
        # kept per running sandbox made every start dearer as a node filled: 2,000 mounts
        # added ~35 ms of CPU to a ~65 ms start. The disk's mount stays (snapshots read the
        # upper dir through it).
        overlay.unmount(rootfs)
        if info.spec.network == "egress":
            try:
                egress.start(sdir, self.init_pid(sid), info.spec.egress)
            except (RuntimeFailure, OSError, TypeError) as exc:
                self._stop(sid)
                raise RuntimeFailure(f"sandbox {sid}: {exc}") from None

    def _listen(self, sandbox_id: str) -> socket.socket:
        path = self.agent_socket(sandbox_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock

    def _stop(self, sandbox_id: str) -> None:
        """Kill every process of the sandbox, reap its init, unmount its root. Idempotent."""
        sdir = self._dir(sandbox_id)
        egress.stop(sdir)
        pid = self.init_pid(sandbox_id)
        if pid is not None:
            # Killing the pid namespace's init kills every process in it, at once. That is
            # ~1 ms; `runc delete --force` takes ~100 ms (it polls for the processes to go).
            if _in_cgroup(pid, self._cgroup(sandbox_id)):
                _kill(pid)
                # A frozen process dies only once thawed: the kill is queued first, so a paused
                # sandbox's processes never run again.
                cgroups.thaw(self._cgroup(sandbox_id))
                _reap(pid)
            (sdir / "init.pid").unlink(missing_ok=True)
        cid = self._cid(sandbox_id)
        if (self.paths.runc_root / cid).exists():
            try:
                self._runc("delete", cid)
            except RuntimeFailure:
                self._runc("delete", "--force", cid)
        overlay.unmount(sdir / "rootfs")
        disks.unmount(sdir / "layer")
        # Copies of these mounts in other mount namespaces (Podman keeps one of the host's for
        # each user-namespaced container it made since) are detached when the mount point
        # goes; until then they would hold the disk. Both dirs are made again at start.
        for mount_point in (sdir / "rootfs", sdir / "layer"):
            _quietly(os.rmdir, mount_point)
        self._wait_disk_released(sdir)
        try:
            os.unlink(self.agent_socket(sandbox_id))
        except FileNotFoundError:
            pass

    def _runc(self, *args: str, stdin=subprocess.DEVNULL, stderr=None) -> None:
        cmd = [self.runc, "--root", str(self.paths.runc_root), *args]
        try:
            proc = subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL,
                                  stderr=stderr if stderr is not None else subprocess.PIPE,
                                  timeout=RUNC_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"runc {args[0]} ran past {RUNC_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            detail = (proc.stderr or b"").decode(errors="replace").strip()
            if stderr is not None and hasattr(stderr, "name"):
                detail = _tail(Path(stderr.name), 2000)
            raise RuntimeFailure(f"runc {args[0]} failed (exit {proc.returncode}): {detail}")

    def _check_image(self, image: str) -> None:
        # NotFound names the fix. Any image will do: the agent brings its own interpreter.
        self.images.layers(image)

    def _fresh_disk(self, sdir: Path, spec: SandboxSpec) -> None:
        """An empty filesystem of the sandbox's disk size (the old one is deleted aside)."""
        image = sdir / "disk.img"
        if image.exists():
            _discard(image, sdir)
        lim = spec.limits
        disks.make_image(disks.template(self.paths.home / "disks", lim.disk, lim.inodes), image)

    def _mount_disk(self, sdir: Path, spec: SandboxSpec) -> None:
        layer = sdir / "layer"
        if overlay.is_mounted(layer):
            return
        if not (sdir / "disk.img").exists():  # a sandbox made before disks existed
            self._fresh_disk(sdir, spec)
        last = sdir / "disk.dev"
        if last.exists():
            disks.wait_detached(last.read_text(), sdir / "disk.img")
        last.write_text(disks.mount(sdir / "disk.img", layer, self.paths.run / "loop"))

    @staticmethod
    def _wait_disk_released(sdir: Path) -> None:
        """Return once the disk's loop device is gone, so a stopped sandbox holds no device
        (the unmount is lazy; the device goes when the sandbox's last mount reference does)."""
        last = sdir / "disk.dev"
        if not last.exists():
            return
        try:
            disks.wait_detached(last.read_text(), sdir / "disk.img")
        except RuntimeFailure as exc:
            log.warning("%s", exc)

    @staticmethod
    def _cid(sandbox_id: str) -> str:
        return f"tmb-{sandbox_id}"

    @staticmethod
    def _cgroup(sandbox_id: str) -> str:
        return f"tumbler/{sandbox_id}"


def _in_cgroup(pid: int, rel: str) -> bool:
    """Whether `pid` is (still) a process of the sandbox whose cgroup is `rel` (pids get reused)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return f"/{rel}\n" in fh.read()
    except OSError:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int, timeout_s: float = 5.0) -> None:
    """Collect the exit of our (subreaped) child `pid`; nothing to do if it is not ours."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def _discard(path: Path, parent: Path) -> None:
    """Remove a file or tree fast: rename it aside, then delete it in the background
    (a leftover `.trash-*` of a process that exited first goes with its sandbox dir)."""
    trash = parent / f".trash-{path.name}-{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    threading.Thread(target=remove_tree, args=(trash,), daemon=True).start()


def _quietly(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


def _tail(path: Path, n: int) -> str:
    """The last n bytes of a file (an agent's log can be as big as its disk)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - n))
        return f.read().decode(errors="replace").strip()


def _copy_layer(upper: Path, dest: Path) -> None:
    """Copy an overlay upper dir with its whiteouts, opaque markers and ownership."""
    proc = subprocess.run(["cp", "-a", "--preserve=all", str(upper), str(dest)],
                          capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise SandboxError(f"snapshot copy failed: {proc.stderr.decode(errors='replace')}")
    remove_tree(dest / ".tumbler")
