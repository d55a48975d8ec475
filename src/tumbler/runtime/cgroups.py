"""Reading a sandbox's cgroup (v1 per controller, or the v2 unified tree): its stats and leftovers.

runc creates and removes the cgroups (from the bundle's `cgroupsPath`); we only read them, and
after a removal make sure nothing is left.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from tumbler.errors import RuntimeFailure

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "freezer", "blkio",
                  "systemd")
# On a hybrid host (v1 controllers plus an empty v2 tree at /sys/fs/cgroup/unified) runc makes
# the sandbox's cgroup in the v2 tree too; a sandbox whose runc state was lost leaves it there.
HYBRID_V2 = "unified"
FREEZE_TIMEOUT_S = 10.0
FREEZE_POLL_S = 0.001
FREEZE_ASK_AGAIN_POLLS = 10   # ask the tasks anew every ~10 ms (see freeze)


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def _own_v1_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller: runc nests a relative cgroupsPath under it."""
    out = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(","):
                out[c.removeprefix("name=")] = path
    return out


def _dir(controller: str, rel: str) -> Path:
    if is_v2():
        return CGROUP_ROOT / _own_v1_paths().get("", "/").lstrip("/") / rel
    own = _own_v1_paths().get("" if controller == HYBRID_V2 else controller, "/")
    return CGROUP_ROOT / controller / own.lstrip("/") / rel


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    return default if text == "max" else int(text)


def memory_bytes(rel: str) -> int:
    name = "memory.current" if is_v2() else "memory.usage_in_bytes"
    return _read_int(_dir("memory", rel) / name)


def cpu_seconds(rel: str) -> float:
    if is_v2():
        try:
            for line in (_dir("cpu", rel) / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except OSError:
            pass
        return 0.0
    return _read_int(_dir("cpuacct", rel) / "cpuacct.usage") / 1e9


def pids(rel: str) -> int:
    return _read_int(_dir("pids", rel) / "pids.current")


def leftover_dirs(rel: str) -> list[Path]:
    """Cgroup directories of `rel` that still exist."""
    controllers = ("",) if is_v2() else (*V1_CONTROLLERS, HYBRID_V2)
    return [p for p in {_dir(c, rel) for c in controllers} if p.is_dir()]


def remove(rel: str) -> None:
    """Remove empty leftover cgroup dirs of `rel` (runc normally does; this is a safety net)."""
    for path in leftover_dirs(rel):
        try:
            os.rmdir(path)
        except OSError:
            pass


def _freezer(rel: str) -> tuple[Path, str, str]:
    """The file that freezes `rel`, and what to write there to freeze and to thaw it."""
    if is_v2():
        return _dir("", rel) / "cgroup.freeze", "1", "0"
    return _dir("freezer", rel) / "freezer.state", "FROZEN", "THAWED"


def freeze(rel: str, timeout_s: float = FREEZE_TIMEOUT_S) -> None:
    """Freeze every process of `rel` and return once the kernel says all are frozen.

    Written here rather than through `runc pause`: runc 1.1 gives up after a few milliseconds
    of retries ("unable to freeze") when the CPU is busy, while the kernel finishes the freeze
    on its own if one waits. runc reads the same file, so `runc state` says paused.

    The v1 freezer asks each task to freeze once, when FROZEN is written: a task that starts a
    freezable sleep after that is never asked again. dash runs commands with vfork, and a
    parent that enters its vfork wait just after the ask waits for a child the freezer has
    already frozen; the cgroup stays FREEZING for good (seen in 1 of ~80 freezes of a shell
    loop). Writing FROZEN again asks every task anew, so the loop repeats it."""
    path, frozen, thawed = _freezer(rel)
    path.write_text(frozen)
    deadline = time.monotonic() + timeout_s
    polls = 0
    while not _is_frozen(rel):
        if time.monotonic() > deadline:
            path.write_text(thawed)
            raise RuntimeFailure(f"the processes of cgroup {rel} did not freeze within "
                                 f"{timeout_s:g} s (one may be stuck in the kernel); left running")
        time.sleep(FREEZE_POLL_S)
        polls += 1
        if polls % FREEZE_ASK_AGAIN_POLLS == 0:
            path.write_text(frozen)


def _is_frozen(rel: str) -> bool:
    if is_v2():
        return "frozen 1" in (_dir("", rel) / "cgroup.events").read_text()
    return (_dir("freezer", rel) / "freezer.state").read_text().strip() == "FROZEN"


def thaw(rel: str) -> None:
    """Unfreeze `rel` if it is frozen (a paused sandbox being stopped); nothing if it is not."""
    path, _, thawed = _freezer(rel)
    try:
        path.write_text(thawed)
    except OSError:   # no such cgroup (gone already) or no freezer: nothing is frozen
        pass
