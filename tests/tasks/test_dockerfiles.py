"""Images from Dockerfiles: the parser, the process backend's builder and its cache, the engine's build."""
from __future__ import annotations

import io
import tarfile

import pytest

from taskdirs import write
from tumbler.errors import InvalidRequest, RuntimeFailure
from tumbler.local import LocalSandbox
from tumbler.runtime.dockerfile_images import build_dockerfile, image_config
from tumbler.runtime.dockerfiles import parse_text, substitute


def test_parser_reads_continuations_heredocs_and_forms():
    text = """
# comment
ARG BASE=debian
FROM $BASE AS main
RUN apt-get update && \\
    # a comment inside
    apt-get install -y x
RUN <<EOT
echo one
EOT
COPY --chown=app:app ["a b", "/dst/"]
CMD ["bash"]
"""
    ops = parse_text(text)
    assert [x.op for x in ops] == ["ARG", "FROM", "RUN", "RUN", "COPY", "CMD"]
    assert ops[2].args == "apt-get update && apt-get install -y x"
    assert ops[3].heredoc == "echo one\n" and ops[3].line == 8
    assert ops[4].flags == {"chown": "app:app"} and ops[4].exec_form == ["a b", "/dst/"]


@pytest.mark.parametrize("text, where", [
    ("RUN true\n", "no FROM"),
    ("FROM debian\nFROBNICATE x\n", ":2: unknown instruction 'FROBNICATE'"),
    ("FROM debian AS a\nFROM debian AS A\n", ":2: a second stage named 'A'"),
    ("FROM debian AS\n", ":1: FROM takes an image and optionally `AS name`"),
    ("FROM debian\nADD --from=x /a /b\n", ":2: --from is COPY's, not ADD's"),
    ("FROM debian\nRUN <<EOT\necho\n", ":2: here-document EOT is never closed"),
    ("ENV X=1\nFROM debian\n", ":1: only ARG may come before FROM"),
])
def test_parser_names_the_line_at_fault(text, where):
    with pytest.raises(InvalidRequest, match=where):
        parse_text(text)


def test_substitution_follows_docker():
    values = {"A": "1", "E": ""}
    assert substitute("$A ${A} ${B:-d} ${A:+alt} ${E:+x} \\$A", values) == "1 1 d alt  $A"


def test_build_runs_each_instruction_and_caches_by_step(tmp_path, runtime, fresh_images):
    ctx = tmp_path / "ctx"
    write(ctx / "src" / "hello.txt", "hello\n")
    write(ctx / "ignored.log", "no\n")
    write(ctx / ".dockerignore", "*.log\n")
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        data = b"from the tar\n"
        info = tarfile.TarInfo("inner/x.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    write(ctx / "Dockerfile", """
    ARG BASE=debian:bookworm
    FROM ${BASE}
    ARG WHO=world
    ENV APP=/srv/app MODE="two words"
    WORKDIR $APP
    COPY . ./ctx/
    ADD bundle.tar.gz /opt/
    RUN useradd --create-home app && echo "hi $WHO, $MODE, $(pwd)" > greeting.txt
    USER app
    RUN id -un > /home/app/whoami.txt
    """)
    steps = []
    result = build_dockerfile(ctx, name="t-built", build_args={"WHO": "you"}, runtime=runtime,
                              on_event=lambda kind, n, total, text: steps.append((kind, n, total)))
    assert (result.steps, result.cached) == (4, 0)
    assert ("step", 4, 4) in steps and steps[-1][0] == "done"
    config = image_config(runtime.images, "t-built")
    assert config.workdir == "/srv/app" and config.user == "app"
    assert config.env["MODE"] == "two words"
    with LocalSandbox("t-built", runtime=runtime, cwd=config.workdir) as sb:
        out = sb.run("cat greeting.txt /opt/inner/x.txt /home/app/whoami.txt ctx/src/hello.txt; "
                     "ls -A1 ctx; stat -c %U ctx/src/hello.txt").output
    assert out.splitlines() == ["hi you, two words, /srv/app", "from the tar", "app", "hello",
                                ".dockerignore", "Dockerfile", "bundle.tar.gz", "src", "root"]

    again = build_dockerfile(ctx, name="t-built", build_args={"WHO": "you"}, runtime=runtime)
    assert (again.cached, again.image) == (4, "t-built")
    write(ctx / "src" / "hello.txt", "changed\n")      # COPY's files changed: it and after rerun
    third = build_dockerfile(ctx, build_args={"WHO": "you"}, runtime=runtime)
    assert third.cached == 0 and third.image.startswith("build.")


def test_a_multi_stage_build_copies_from_earlier_stages(tmp_path, runtime, fresh_images):
    """Stages by name and by index, FROM an earlier stage, globs, a rename, --chown, global ARGs,
    --target; a --from step is cached by its stage's key (a change there reruns it)."""
    ctx = tmp_path / "ctx"
    write(ctx / "tool.sh", "#!/bin/sh\necho tool says $1\n", 0o755)
    write(ctx / "Dockerfile", """
    ARG BASE=debian
    FROM $BASE AS builder
    COPY tool.sh /src/
    RUN mkdir -p /out/lib && cp /src/tool.sh /out/tool && echo one > /out/lib/a.txt \\
        && echo two > /out/lib/b.txt && echo skip > /out/lib/c.log && chown -R 1234 /out
    FROM builder AS tested
    RUN /out/tool test > /out/test-report.txt
    FROM ${BASE}
    RUN useradd app
    COPY --from=builder /out/tool /usr/local/bin/
    COPY --from=0 /out/lib/*.txt /opt/lib/
    COPY --from=tested --chown=app /out/test-report.txt /opt/report
    COPY --from=builder /out/lib /opt/whole
    """)
    result = build_dockerfile(ctx, name="t-multi", runtime=runtime)
    assert (result.steps, result.cached) == (8, 0)
    with LocalSandbox("t-multi", runtime=runtime) as sb:
        out = sb.run("tool hi; ls -1 /opt/lib; cat /opt/report; stat -c '%U %a' /opt/report "
                     "/usr/local/bin/tool /opt/lib/a.txt; ls -1 /opt/whole; ls /src /out 2>&1 | head -2").output
    assert out.splitlines() == [
        "tool says hi", "a.txt", "b.txt", "tool says test", "app 644", "root 755", "root 644",
        "a.txt", "b.txt", "c.log", "ls: cannot access '/src': No such file or directory",
        "ls: cannot access '/out': No such file or directory"]
    assert build_dockerfile(ctx, name="t-multi", runtime=runtime).cached == 8
    write(ctx / "tool.sh", "#!/bin/sh\necho new tool says $1\n", 0o755)
    rebuilt = build_dockerfile(ctx, name="t-multi", runtime=runtime)
    assert rebuilt.cached == 1          # only the final stage's `RUN useradd` is the same
    with LocalSandbox("t-multi", runtime=runtime) as sb:
        assert sb.run("tool hi").output.strip() == "new tool says hi"
    target = build_dockerfile(ctx, name="t-multi-tested", target="tested", runtime=runtime)
    assert (target.steps, target.cached) == (3, 3)
    with LocalSandbox("t-multi-tested", runtime=runtime) as sb:
        assert sb.run("cat /out/test-report.txt").output.strip() == "new tool says test"
    write(ctx / "Dockerfile", "FROM debian AS a\nCOPY --from=nope /x /y\n")
    with pytest.raises(InvalidRequest, match="FROM nope|nope"):
        build_dockerfile(ctx, runtime=runtime)
    write(ctx / "Dockerfile", "FROM debian AS a\nFROM debian\nCOPY --from=a /no/such /y\n")
    with pytest.raises(InvalidRequest, match="/no/such is not in the source stage"):
        build_dockerfile(ctx, runtime=runtime)


def test_a_failing_step_names_its_line_and_shows_its_output(tmp_path, runtime, fresh_images):
    write(tmp_path / "Dockerfile", """
    FROM debian
    RUN echo fine
    RUN echo about to fail && ls /no/such/dir
    """)
    with pytest.raises(RuntimeFailure) as err:
        build_dockerfile(tmp_path, runtime=runtime)
    text = str(err.value)
    assert "Dockerfile:3: step 2/2" in text and "exit code 2" in text
    assert "about to fail" in text and "/no/such/dir" in text


def test_copy_cannot_reach_outside_the_context(tmp_path, runtime, fresh_images):
    (tmp_path / "secret").write_text("host file")
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", "FROM debian\nCOPY ../secret /x\n")
    with pytest.raises(InvalidRequest, match="outside the build context"):
        build_dockerfile(ctx, runtime=runtime)
    (ctx / "link").symlink_to(tmp_path / "secret")
    write(ctx / "Dockerfile", "FROM debian\nCOPY link /x\n")
    with pytest.raises(InvalidRequest, match="outside the build context"):
        build_dockerfile(ctx, runtime=runtime)


def test_an_unknown_base_says_how_to_map_it(tmp_path, runtime):
    write(tmp_path / "Dockerfile", "FROM registry.example/alpine:3.19\nRUN true\n")
    with pytest.raises(InvalidRequest, match="--base alpine=IMAGE"):
        build_dockerfile(tmp_path, runtime=runtime)


def _output_of(client, image, cmd):
    """A container's stdout, with a deadline.

    `containers.run(remove=True)` reads the attach stream, and podman's Docker API at times
    never ends it when the container exits first (a CI run hung there for 300 s): run
    detached, wait with a timeout, then read the logs."""
    container = client.containers.run(image, cmd, network_mode="none", detach=True)
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0
        return container.logs(stdout=True, stderr=False)
    finally:
        container.remove(force=True)


def test_the_docker_backend_builds_with_its_engine(tmp_path):
    from test_backends import _docker_runtime
    from tumbler.runtime.engine_builds import build_with_engine
    from tumbler.runtime.images import ImageStore
    rt = _docker_runtime()
    write(tmp_path / "msg.txt", "from the context\n")
    write(tmp_path / "Dockerfile", """
    FROM ubuntu:22.04
    ENV WHO=engine
    COPY msg.txt /msg.txt
    RUN echo "built by the $WHO" > /built.txt
    """)
    lines = []
    tag = build_with_engine(rt.client, ImageStore(), tmp_path, "t-engine-build:latest",
                            on_output=lines.append)
    try:
        out = _output_of(rt.client, tag, ["cat", "/msg.txt", "/built.txt"])
        assert out.decode().splitlines() == ["from the context", "built by the engine"]
        assert any("STEP" in line or "Step" in line for line in lines)
        write(tmp_path / "Dockerfile", """
        FROM debian AS builder
        RUN echo built in a stage > /made.txt
        FROM builder AS checked
        RUN cat /made.txt > /checked.txt
        FROM ubuntu:22.04
        COPY --from=checked /checked.txt /final.txt
        """)
        staged = build_with_engine(rt.client, ImageStore(), tmp_path, "t-engine-stages:latest")
        try:
            out = _output_of(rt.client, staged, ["cat", "/final.txt"])
            assert out.decode().strip() == "built in a stage"
        finally:
            rt.client.images.remove(staged, force=True)
        write(tmp_path / "Dockerfile", "FROM debian\nRUN echo going down && false\n")
        with pytest.raises(RuntimeFailure, match="going down"):
            build_with_engine(rt.client, ImageStore(), tmp_path, "t-engine-fail:latest")
    finally:
        rt.client.images.remove(tag, force=True)


def test_prune_removes_step_images_nothing_stands_on(tmp_path, runtime, fresh_images):
    from tumbler.runtime.dockerfile_images import prune_build_cache
    write(tmp_path / "Dockerfile", "FROM debian\nRUN echo one > /1\nRUN echo two > /2\n")
    named = build_dockerfile(tmp_path, name="t-kept", runtime=runtime)
    write(tmp_path / "Dockerfile", "FROM debian\nRUN echo one > /1\nRUN echo other > /2\n")
    loose = build_dockerfile(tmp_path, runtime=runtime).image
    store = runtime.images
    kept_chain = {store.get("t-kept").parent, store.get(store.get("t-kept").parent).parent}
    ours = kept_chain | {loose}
    # other build-step images on this machine (another user's) count as in use here
    removed = prune_build_cache(store, in_use=lambda n: n not in ours)
    assert removed == [loose] and all(store.exists(n) for n in kept_chain)
    assert named.image == "t-kept"


def test_build_file_from_the_command_line(tmp_path, runtime, fresh_images):
    from typer.testing import CliRunner
    from tumbler.cli import app
    write(tmp_path / "Dockerfile", "FROM ubuntu:24.04\nRUN echo from-the-cli > /made\n")
    first = CliRunner().invoke(app, ["image", "build-file", str(tmp_path), "--name", "t-cli"])
    assert first.exit_code == 0, first.output
    assert "step 1/1: RUN echo from-the-cli" in first.output and "built image t-cli" in first.output
    again = CliRunner().invoke(app, ["image", "build-file", str(tmp_path), "--name", "t-cli"])
    assert "step 1/1 (cached)" in again.output and "1 cached" in again.output
    bad = CliRunner().invoke(app, ["image", "build-file", str(tmp_path), "--build-arg", "oops"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output
