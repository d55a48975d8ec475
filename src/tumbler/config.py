"""Where Tumbler keeps its state on the host.

`TUMBLER_HOME` (default /var/lib/tumbler) holds images and sandbox directories (on disk);
`TUMBLER_RUN` (default /run/tumbler) holds runc state and agent sockets (tmpfs, short paths:
a unix socket path must stay under 108 bytes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    home: Path
    run: Path

    @classmethod
    def from_env(cls) -> "Paths":
        return cls(
            home=Path(os.environ.get("TUMBLER_HOME", "/var/lib/tumbler")),
            run=Path(os.environ.get("TUMBLER_RUN", "/run/tumbler")),
        )

    @property
    def images(self) -> Path:
        return self.home / "images"

    @property
    def sandboxes(self) -> Path:
        return self.home / "sandboxes"

    @property
    def runc_root(self) -> Path:
        return self.run / "runc"

    @property
    def sockets(self) -> Path:
        return self.run / "sock"
