"""How a sandbox is isolated: one `Runtime` protocol (`base.py`) and its backends.

    process.py      ProcessRuntime: runc over overlayfs, cgroups and a disk of its own (default)
    docker.py       DockerRuntime: a Docker Engine API (Podman's service here)
    spec.py         SandboxSpec, Limits, SandboxInfo, the life cycle (SandboxState + transitions)
    images.py       the image store (directory layers); container_*.py, pip_images.py build them
    bundle.py       the OCI bundle: namespaces, mounts, capabilities; seccomp.py its filter
    overlay.py, disks.py, cgroups.py, idmap.py   the kernel pieces, by ioctl and syscall
    trees.py        tree removal that survives any tree a sandbox makes
    owners.py       whose a library-made sandbox is, and whether its owner still lives
    liveness.py     whether a sandbox's init still runs (the server's and node host's death watch)

Backends import their heavy parts only when chosen (`tumbler.runtime.process` needs root and
runc; `tumbler.runtime.docker` an engine).
"""
