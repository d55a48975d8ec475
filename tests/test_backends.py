"""The same sandbox behaviour on every backend (process: runc; docker: Podman's Docker API here).

Each test gets `backend`, one per runtime, and uses sandboxes as a user would. The docker
backend needs Podman's service: it is started with scripts/podman-service.sh if it does not
answer, and its tests are skipped (saying why) only if that fails.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from checks import IMAGE, docker_leftovers, leftovers as process_leftovers, remove_all_and_check
from tumbler.errors import AgentDied, NotFound, RuntimeFailure, SandboxError

REPO = Path(__file__).resolve().parents[1]
PODMAN_SCRIPT = REPO / "scripts" / "podman-service.sh"


class Backend:
    """A runtime plus what a test needs to look at it from outside."""

    def __init__(self, name: str, runtime):
        self.name = name
        self.runtime = runtime

    def leftovers(self, sandbox_id: str) -> list[str]:
        if self.name == "process":
            return process_leftovers(self.runtime, sandbox_id)
        return docker_leftovers(self.runtime, sandbox_id)

    def remove_image(self, name: str) -> None:
        if self.name == "process":
            self.runtime.images.remove(name)
        else:
            self.runtime.api.remove_image(name, force=True)

    def kill_from_outside(self, sandbox_id: str) -> None:
        if self.name == "process":
            os.kill(self.runtime.init_pid(sandbox_id), 9)
        else:
            self.runtime.api.kill(self.runtime._name(sandbox_id))


def _docker_runtime():
    from tumbler.runtime.container_images import to_engine
    from tumbler.runtime.docker import DockerRuntime
    from tumbler.runtime.images import ImageStore
    try:
        rt = DockerRuntime()
    except RuntimeFailure:
        proc = subprocess.run(["bash", str(PODMAN_SCRIPT)], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            pytest.skip(f"Podman's service could not be started by {PODMAN_SCRIPT}: "
                        f"{proc.stderr.strip()[-500:]}")
        rt = DockerRuntime()
    if not rt.api.images(name=IMAGE):
        to_engine(rt.client, ImageStore(), IMAGE)
    return rt


@pytest.fixture(scope="session")
def docker_runtime():
    return _docker_runtime()


@pytest.fixture(params=["process", "docker"])
def backend(request):
    if request.param == "process":
        return Backend("process", request.getfixturevalue("runtime"))
    return Backend("docker", request.getfixturevalue("docker_runtime"))


@pytest.fixture
def make(backend):
    """Make LocalSandboxes on the backend; afterwards remove them and check nothing is left."""
    yield from _maker(backend)


@pytest.fixture
def make_docker(docker_runtime):
    """`make` on the docker backend only."""
    yield from _maker(Backend("docker", docker_runtime))


def _maker(backend):
    from tumbler.local import LocalSandbox
    made = []

    def make_one(**kwargs):
        kwargs.setdefault("image", IMAGE)
        sb = LocalSandbox(runtime=backend.runtime, **kwargs)
        made.append(sb)
        return sb

    yield make_one
    remove_all_and_check(made, backend.leftovers)


# -- the same on every backend -----------------------------------------------------------------

def test_session_state_exit_codes_and_timeout(make):
    sb = make()
    sb.run("cd /tmp && export GREETING=hello")
    r = sb.run("echo $GREETING $PWD; (exit 7)")
    assert (r.output, r.exit_code) == ("hello /tmp\n", 7)
    assert sb.run("sleep 30", timeout=0.5).timed_out
    assert sb.run("echo alive; pwd").output == "alive\n/tmp\n"


def test_hostname_env_and_cwd_from_the_spec(make):
    sb = make(hostname="box1", env={"COLOUR": "blue"}, cwd="/tmp")
    assert sb.run("hostname; echo $COLOUR; pwd").output == "box1\nblue\n/tmp\n"


def test_exec_one_shot(make):
    sb = make()
    r = sb.exec(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in")
    assert (r.stdout, r.stderr, r.exit_code) == ("in", "err\n", 3)


def test_files_round_trip(make, tmp_path):
    sb = make()
    sb.write_file("/tmp/d/a.bin", b"\x00\xff" * 10)
    assert sb.read_bytes("/tmp/d/a.bin") == b"\x00\xff" * 10
    (tmp_path / "up" / "sub").mkdir(parents=True)
    (tmp_path / "up" / "sub" / "f.txt").write_text("tree")
    sb.upload(tmp_path / "up", "/srv/up")
    sb.download("/srv/up", tmp_path / "down")
    assert (tmp_path / "down" / "sub" / "f.txt").read_text() == "tree"
    with pytest.raises(NotFound):
        sb.read_file("/no/such/file")


def test_memory_hog_is_killed(make):
    sb = make(memory="64m")
    r = sb.run("python3 -c 'x = bytearray(256 << 20); print(len(x))'", timeout=60)
    assert r.exit_code == 137  # SIGKILL from the OOM killer
    assert sb.run("echo still here").output == "still here\n"


FORKER = """
import os, time
n = 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(n)
"""


def test_pids_limit_holds(make):
    sb = make(pids=64)
    sb.write_file("/tmp/forker.py", FORKER)
    started = int(sb.run("python3 /tmp/forker.py", timeout=60).output)
    assert 40 < started < 64  # the agent, bash and python count too
    assert sb.stats().pids <= 64


def test_network_is_off(make):
    sb = make()
    assert sb.run("ls /sys/class/net").output.split() == ["lo"]
    assert sb.read_file("/proc/net/route").splitlines()[1:] == []


def test_reset_returns_to_pristine(make):
    sb = make()
    sb.write_file("/root/note", "x")
    sb.run("rm /etc/motd; sleep 1000 &")
    sb.reset()
    assert sb.run("ls /root/note 2>/dev/null; pgrep sleep; test -e /etc/motd && echo motd").output == "motd\n"


def test_snapshot_makes_an_image_for_a_new_sandbox(make, backend):
    a = make()
    a.run("echo saved > /root/state && rm /etc/motd")
    name = f"snap-{a.id}"
    a.snapshot(name)
    try:
        b = make(image=name)
        assert b.run("cat /root/state; test -e /etc/motd || echo gone").output == "saved\ngone\n"
        b.remove()
    finally:
        backend.remove_image(name)


def test_stats(make):
    st = make().stats()
    assert st.memory_bytes > 0 and st.pids >= 1 and st.cpu_seconds > 0
    assert st.memory_limit_bytes == 512 << 20 and st.pids_limit == 512


def test_stop_keeps_files_and_remove_leaves_nothing(make, backend):
    sb = make()
    sb.run("echo kept > /root/f; sleep 1000 & setsid sleep 1000 & echo")
    sb.stop()
    sb.start()
    assert sb.read_file("/root/f") == "kept\n"
    sid = sb.id
    sb.remove()
    assert backend.leftovers(sid) == []


def test_killed_from_outside_gives_agent_died_then_reset_works(make, backend):
    sb = make()
    sb.run("echo up")
    backend.kill_from_outside(sb.id)
    time.sleep(0.2)
    with pytest.raises(AgentDied, match="reset or restart"):
        sb.run("echo hi")
    sb.reset()
    assert sb.run("echo back").output == "back\n"


def test_missing_image_is_not_found(backend):
    from tumbler.local import LocalSandbox
    with pytest.raises(NotFound, match="no-such-image"):
        LocalSandbox(image="no-such-image", runtime=backend.runtime)


# -- the docker backend's own faults ---------------------------------------------------------

def test_engine_unreachable_fails_fast_and_names_the_fix(tmp_path):
    from tumbler.runtime.docker import DockerRuntime
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="podman-service.sh") as exc:
        DockerRuntime(base_url=f"unix://{tmp_path}/nothing.sock")
    assert "nothing.sock" in exc.value.message and time.monotonic() - t0 < 3


def test_engine_that_never_answers_does_not_hang(tmp_path):
    """A socket that accepts and then says nothing (a wedged engine): an error within ~5 s."""
    from tumbler.runtime.docker import DockerRuntime
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)],
                     daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="silent.sock"):
        DockerRuntime(base_url=f"unix://{path}")
    assert time.monotonic() - t0 < 12
    server.close()


def test_an_image_without_python_or_glibc_runs_docker(docker_runtime):
    """The agent brings its own interpreter (mounted read-only at /.tumbler): an image holding
    only a static busybox runs commands (it used to be refused for lacking python3)."""
    from checks import busybox_tar
    from tumbler.local import LocalSandbox
    docker_runtime.api.import_image_from_data(busybox_tar(), repository="tumbler-busybox")
    try:
        with LocalSandbox(image="tumbler-busybox", runtime=docker_runtime, cwd="/root") as sb:
            r = sb.exec(["sh", "-c", "echo hi from busybox; false"])
            assert (r.stdout, r.exit_code) == ("hi from busybox\n", 1)
    finally:
        docker_runtime.api.remove_image("tumbler-busybox", force=True)
    assert [s for s in docker_runtime.list() if s.spec.image == "tumbler-busybox"] == []


def test_orphaned_containers_are_reclaimed(docker_runtime):
    import shutil
    from tumbler.runtime.docker import DockerRuntime
    from tumbler.runtime.spec import SandboxSpec
    info = docker_runtime.create(SandboxSpec(image=IMAGE))
    docker_runtime.start(info.id)
    shutil.rmtree(docker_runtime.records / info.id)  # its server died and its record was lost
    DockerRuntime()
    assert Backend("docker", docker_runtime).leftovers(info.id) == []


def test_swapped_agent_socket_is_never_followed(make, docker_runtime):
    """Root in the sandbox replaces its socket by a symlink to the engine's: the host refuses it,
    and the pinned socket still reaches the real agent."""
    from tumbler.local import LocalSandbox
    from tumbler.runtime import agent_socket
    sb = LocalSandbox(image=IMAGE, runtime=docker_runtime)
    try:
        sb.run("ln -sf /run/tumbler/podman.sock /.tumbler/run/agent.sock.new && "
               "mv -T /.tumbler/run/agent.sock.new /.tumbler/run/agent.sock")
        box = docker_runtime.box(sb.id)
        with pytest.raises(SandboxError, match="not a socket"):
            agent_socket.pin(box, "agent.sock", box.parent / "probe.sock")
        assert sb.run("echo still the agent").output == "still the agent\n"
    finally:
        sb.remove()


def test_pull_without_a_registry_fails_clearly(docker_runtime):
    from tumbler.runtime.container_images import pull
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="tumbler image to-docker"):
        pull(docker_runtime.client, "docker.io/library/busybox:latest")
    assert time.monotonic() - t0 < 60


FILE_CAPS = """
import os, struct, sys
path = sys.argv[1]
if sys.argv[2] == "set":  # cap_net_raw, permitted and effective
    open(path, "w").close()
    os.setxattr(path, "security.capability", struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0))
caps = os.getxattr(path, "security.capability")
print(struct.unpack_from("<I", caps, 4)[0] >> 13 & 1)
"""


def test_each_sandbox_has_its_own_unprivileged_uid_range(make_docker, docker_runtime):
    """Root inside is root there (chown works) and an unprivileged host uid outside, another
    one in each sandbox; the files of a snapshot keep their owners, set-uid bits and file
    capabilities in a sandbox of another range."""
    a, b = make_docker(), make_docker()
    ranges = [sb.read_file("/proc/self/uid_map").split() for sb in (a, b)]
    assert [r[0] for r in ranges] == ["0", "0"] and [r[2] for r in ranges] == ["65536", "65536"]
    hosts = sorted(int(r[1]) for r in ranges)
    assert hosts[0] >= 65536 and hosts[1] - hosts[0] >= 65536, ranges
    a.run("useradd -u 1234 bob && echo x > /tmp/f && chown bob:bob /tmp/f && chmod 4755 /tmp/f")
    assert a.exec(["python3", "-c", FILE_CAPS, "/tmp/cap", "set"]).stdout == "1\n"
    name = f"snap-{a.id}"
    a.snapshot(name)
    try:
        c = make_docker(image=name)
        assert c.read_file("/proc/self/uid_map").split()[1] not in {r[1] for r in ranges}
        assert c.run("stat -c '%U %G %A' /tmp/f /etc/passwd /root").output == (
            "bob bob -rwsr-xr-x\nroot root -rw-r--r--\nroot root drwx------\n")
        assert c.exec(["python3", "-c", FILE_CAPS, "/tmp/cap", "get"]).stdout == "1\n"
        assert a.run("stat -c '%U %A' /tmp/f").output == "bob -rwsr-xr-x\n"  # as before
        c.remove()
    finally:
        docker_runtime.api.remove_image(name, force=True)


def test_engine_restart_gives_clear_errors_then_works_again(docker_runtime, tmp_path):
    """A second Podman service on its own socket is stopped and started under a live sandbox."""
    from tumbler.local import LocalSandbox
    from tumbler.runtime.docker import DockerRuntime
    sock = tmp_path / "engine.sock"

    def serve():
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not sock.exists():
            time.sleep(0.05)
        return proc

    engine = serve()
    try:
        rt = DockerRuntime(base_url=f"unix://{sock}")
        with LocalSandbox(image=IMAGE, runtime=rt) as sb:
            engine.terminate()
            engine.wait(timeout=20)
            t0 = time.monotonic()
            with pytest.raises(RuntimeFailure, match="podman-service.sh"):
                sb.stats()
            assert time.monotonic() - t0 < 5
            assert sb.run("echo agent lives on").output == "agent lives on\n"
            engine = serve()
            time.sleep(0.5)
            assert sb.stats().pids >= 1
    finally:
        engine.terminate()
        engine.wait(timeout=20)


def test_image_round_trip_between_backends(runtime, docker_runtime):
    """Store image -> engine image -> store image, and a sandbox of each runs."""
    from tumbler.local import LocalSandbox
    from tumbler.runtime.container_images import from_engine, to_engine
    to_engine(docker_runtime.client, runtime.images, IMAGE, "tumbler-roundtrip")
    try:
        from_engine(docker_runtime.client, "tumbler-roundtrip", runtime.images, "roundtrip-test",
                    force=True)
        with LocalSandbox(image="roundtrip-test", runtime=runtime) as sb:
            assert sb.run("stat -c %U /root; id -u").output == "root\n0\n"
        with LocalSandbox(image="tumbler-roundtrip", runtime=docker_runtime) as sb:
            assert sb.run("cat /etc/debian_version").exit_code == 0
    finally:
        docker_runtime.api.remove_image("tumbler-roundtrip", force=True)
        if runtime.images.exists("roundtrip-test"):
            runtime.images.remove("roundtrip-test")


def test_to_engine_keeps_a_tag_given_with_the_name(runtime, docker_runtime):
    """Issue 22: `tumbler image to-docker debian python:3.11` made an untagged image on Podman
    (its import takes the tag inside `repo`), so DOCKER.md's python:3.11 examples found none."""
    from tumbler.local import LocalSandbox
    from tumbler.runtime.container_images import to_engine
    tag = "tumbler-tagged:3.11"
    to_engine(docker_runtime.client, runtime.images, IMAGE, tag)
    try:
        docker_runtime.client.images.get(tag)
        with LocalSandbox(image=tag, runtime=docker_runtime) as sb:
            assert sb.run("python3 --version").output.startswith("Python 3")
    finally:
        docker_runtime.api.remove_image(tag, force=True)
