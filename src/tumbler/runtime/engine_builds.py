"""Images from Dockerfiles for the docker backend: the engine's own build, with no registry.

    build_with_engine(client, store, Path("task/environment"), tag="web")

The engine builds (Docker, or Podman's Docker-compatible service here), so every instruction it
knows works, multi-stage included. Only FROM is changed on the way in: a base name that has no
image in the engine and that `dockerfile_images.resolve_base` maps to a local image (debian,
ubuntu, python...) is replaced by that image, imported into the engine first as
`tumbler/<image>` (`to_engine`), plus the mapping's ENV and first step. RUN steps get the host's
network, as the process backend's builder gives them. A failing step raises RuntimeFailure with
the engine's error and the last lines of the build's output.
"""
from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path
from typing import Callable

from tumbler.errors import InvalidRequest, NotFound, RuntimeFailure
from tumbler.runtime.dockerfile_images import BaseImage, resolve_base
from tumbler.runtime.dockerfiles import parse_dockerfile, split_words, substitute
from tumbler.runtime.engine import IMAGE_TIMEOUT_S, engine_errors

log = logging.getLogger(__name__)

REWRITTEN = ".tumbler.Dockerfile"
OUTPUT_TAIL = 30


def build_with_engine(client, store, context: str | Path, tag: str, *,
                      dockerfile: str | Path | None = None,
                      build_args: dict[str, str] | None = None,
                      base_map: dict[str, BaseImage] | None = None, target: str | None = None,
                      on_output: Callable[[str], None] | None = None) -> str:
    """Build `context`'s Dockerfile in the engine as `tag` (up to stage `target` if given);
    returns the tag."""
    context = Path(context)
    path = Path(dockerfile) if dockerfile else context / "Dockerfile"
    if not path.is_file():
        raise NotFound(f"no Dockerfile at {path}")
    text = _rewrite(client, store, path, build_args or {}, base_map)
    body = _context_tar(context, text)
    tail: list[str] = []
    url = client.api.base_url
    with engine_errors(f"build of {path}", url):
        stream = client.api.build(fileobj=body, custom_context=True, dockerfile=REWRITTEN,
                                  tag=tag, buildargs=build_args or None, network_mode="host",
                                  target=target,
                                  rm=True, forcerm=True, decode=True, timeout=IMAGE_TIMEOUT_S)
        for event in stream:
            for line in str(event.get("stream", "")).splitlines():
                if line.strip():
                    tail = (tail + [line])[-OUTPUT_TAIL:]
                    if on_output:
                        on_output(line)
            if event.get("error"):
                raise RuntimeFailure(f"{path}: the engine's build failed: "
                                     f"{str(event['error']).strip()}\n" + "\n".join(tail))
    return tag


def _rewrite(client, store, path: Path, build_args: dict[str, str], base_map) -> str:
    """The Dockerfile with each mapped FROM replaced by an engine image made from ours."""
    lines = path.read_text().splitlines()
    args: dict[str, str] = {}
    stages: set[str] = set()
    seen_from = False
    for x in parse_dockerfile(path):
        if x.op == "ARG" and not seen_from:   # the ARGs a FROM may use
            for word in split_words(x.args):
                key, _, default = word.partition("=")
                args[key] = build_args.get(key, default)
        if x.op != "FROM":
            continue
        seen_from = True
        words = split_words(x.args)
        ref = substitute(words[0], args)
        earlier = ref.lower() in stages
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if earlier or _engine_has(client, ref):   # an earlier stage, or an image the engine has
            continue
        base = resolve_base(store, ref, base_map)
        engine_tag = f"tumbler/{base.image}:latest"
        if not _engine_has(client, engine_tag):
            from tumbler.runtime.container_images import to_engine
            to_engine(client, store, base.image, engine_tag)
        stage = f" AS {words[2]}" if len(words) == 3 and words[1].upper() == "AS" else ""
        new = [f"FROM {engine_tag}{stage}"]
        new += [f"ENV {k}={v}" for k, v in base.env.items()]
        if base.setup:
            new.append(f"RUN {base.setup}")
        lines[x.line - 1] = "\n".join(new)
    return "\n".join(lines) + "\n"


def _engine_has(client, ref: str) -> bool:
    try:
        return bool(client.api.images(name=ref))
    except Exception:   # a name the engine cannot parse: not an image it has
        return False


def _context_tar(context: Path, dockerfile_text: str) -> io.BytesIO:
    """The build context as a tar, with the rewritten Dockerfile added beside the original."""
    if not context.is_dir():
        raise InvalidRequest(f"build context {context} is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(context.iterdir()):
            tar.add(child, arcname=child.name)
        data = dockerfile_text.encode()
        info = tarfile.TarInfo(REWRITTEN)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf
