"""Sandbox records on disk (`<root>/<id>/sandbox.json`) and per-sandbox locks, shared by the
runtimes: any process can list and pick up the sandboxes another one made."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from tumbler.errors import NotFound
from tumbler.runtime.spec import SandboxInfo, SandboxState


class RecordKeeping:
    """Mixin of a runtime whose sandboxes each have a directory under `records_root`."""

    records_root: Path

    def _init_records(self, root: Path) -> None:
        self.records_root = root
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, sandbox_id: str) -> SandboxInfo:
        try:
            text = (self._dir(sandbox_id) / "sandbox.json").read_text()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no sandbox {sandbox_id}") from None
        return SandboxInfo.model_validate_json(text)

    def list(self) -> list[SandboxInfo]:
        out = []
        for p in sorted(self.records_root.iterdir()):
            try:
                out.append(self.get(p.name))
            except (NotFound, ValueError):
                continue
        return out

    def _save(self, info: SandboxInfo) -> None:
        path = self._dir(info.id) / "sandbox.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(info.model_dump_json())
        os.replace(tmp, path)  # readers see the old record or the new one, never half of one

    def _set_state(self, info: SandboxInfo, state: SandboxState) -> SandboxInfo:
        info = info.model_copy(update={"state": state})
        self._save(info)
        return info

    def _lock(self, sandbox_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(sandbox_id, threading.Lock())

    def _forget_lock(self, sandbox_id: str) -> None:
        with self._locks_guard:
            self._locks.pop(sandbox_id, None)

    def _dir(self, sandbox_id: str) -> Path:
        if not sandbox_id or "/" in sandbox_id or sandbox_id.startswith("."):
            raise NotFound(f"no sandbox {sandbox_id!r}")
        return self.records_root / sandbox_id
