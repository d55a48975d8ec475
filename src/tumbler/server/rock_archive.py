"""Archive and restore of a server's stopped sandbox (ROCK's archive and restart).

Archive saves a stopped sandbox's files as an image of the runtime's store
(`archive-<id>-<ms>`, stacked on the sandbox's own image, as a snapshot is) and removes the sandbox from the runtime:
it holds no disk, device or place in the node budget, only its record (state ARCHIVED).
Restore makes it again from its newest archive under the same id and starts it; that image
then stays as the sandbox's lowest layer (a second archive stacks on it) until the sandbox is
removed, when `sweep_images` removes its archives.
A failed archive leaves the sandbox stopped and no image half-made (the store writes an image
under a staging name and renames it only when complete).
"""
from __future__ import annotations

import logging
import time

from tumbler.errors import InvalidRequest, NotFound, TumblerError
from tumbler.runtime.images import ImageStore
from tumbler.runtime.spec import SandboxState, transition
from tumbler.server.registry import SandboxRecord
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)
PREFIX = "archive-"


def _new_image(sandbox_id: str) -> str:
    return f"{PREFIX}{sandbox_id.lower()}-{int(time.time() * 1000):x}"


def _owner(image: str) -> str:
    return image[len(PREFIX):].rpartition("-")[0]


def archives_of(svc: SandboxService, sandbox_id: str) -> list[str]:
    """The sandbox's archive images, oldest first (their names end in a hex time)."""
    images = getattr(svc.runtime, "images", None)
    names = [i.name for i in images.list()] if images is not None else []
    return sorted(n for n in names if n.startswith(PREFIX) and _owner(n) == sandbox_id.lower())


async def archive(svc: SandboxService, sandbox_id: str) -> SandboxRecord:
    record = svc.get(sandbox_id)
    if not isinstance(getattr(svc.runtime, "images", None), ImageStore):
        raise InvalidRequest("archive needs the process backend (its image store holds the "
                             "archive); on the docker backend use commit (an engine image)")
    async with svc._lock(sandbox_id):
        target = transition(sandbox_id, record.state, "archive")
        image = _new_image(sandbox_id)
        await svc.blocking(svc.runtime.snapshot, sandbox_id, image)
        try:
            # Whose it is: servers that share a runtime's store sweep only their own archives.
            await svc.blocking(lambda: svc.runtime.images.update_meta(
                image, archived_by=svc.config.database_url))
            await svc.blocking(svc.runtime.remove, sandbox_id)
        except BaseException:
            await svc.blocking(_remove_image, svc, image)
            raise
        await _set_state(svc, record, target)
    return record


async def restore(svc: SandboxService, sandbox_id: str) -> SandboxRecord:
    record = svc.get(sandbox_id)
    async with svc._lock(sandbox_id):
        target = transition(sandbox_id, record.state, "restore")
        names = await svc.blocking(archives_of, svc, sandbox_id)
        if not names:
            raise NotFound(f"sandbox {sandbox_id} has no archive image left in the store")
        spec = record.spec.model_copy(update={"image": names[-1]})
        svc.admission.reserve(sandbox_id, record.spec.limits)
        try:
            await svc.blocking(svc.runtime.create, spec, sandbox_id)
            try:
                await svc.blocking(svc.runtime.start, sandbox_id)
            except BaseException:
                await svc.blocking(svc.runtime.remove, sandbox_id)
                raise
        except BaseException:
            svc.admission.release(sandbox_id)
            raise
        await _set_state(svc, record, target)
    return record


async def _set_state(svc: SandboxService, record: SandboxRecord, state: SandboxState) -> None:
    record.state, record.error = state, None
    await svc.blocking(svc.registry.set_state, record.id, state)


def remove_archives(svc: SandboxService, sandbox_id: str) -> None:
    """Remove a removed sandbox's archive images now (blocking), newest first."""
    for name in reversed(archives_of(svc, sandbox_id)):
        _remove_image(svc, name)


def sweep_images(svc: SandboxService) -> list[str]:
    """Remove the archive images this server made whose sandbox it no longer has (blocking)."""
    images = getattr(svc.runtime, "images", None)
    if images is None:
        return []
    known = {sid.lower() for sid in svc.ids()}
    gone = []
    # Newest first: a later archive of a sandbox is stacked on its earlier one.
    for name in sorted((i.name for i in images.list()), reverse=True):
        if not name.startswith(PREFIX) or _owner(name) in known:
            continue
        try:
            mine = images.meta(name).get("archived_by") == svc.config.database_url
        except NotFound:
            continue
        if mine and _remove_image(svc, name):
            gone.append(name)
    return gone


def _remove_image(svc: SandboxService, name: str) -> bool:
    try:
        svc.runtime.images.remove(name)
        log.info("archive image %s removed", name)
        return True
    except NotFound:
        return False
    except TumblerError as exc:   # still the lower layer of a sandbox made outside the server
        log.info("archive image %s kept: %s", name, exc.message)
        return False
