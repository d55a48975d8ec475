"""Harbor task folders.

    task/
      instruction.md          what the agent is told
      task.toml               [verifier] timeout_sec, [agent] timeout_sec,
                              [environment] build_timeout_sec cpus memory_mb storage_mb workdir,
                              [metadata] (allow_internet is read, and sandboxes stay offline)
      environment/Dockerfile  the image (its folder is the build context)
      tests/test.sh           the verifier: writes /logs/verifier/reward.txt (a number) or
                              reward.json ({"reward": 1.0, ...}); run as `bash /tests/test.sh`
      solution/solve.sh       the oracle: run as `bash /solution/solve.sh`
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tumbler.errors import InvalidRequest
from tumbler.tasks.model import Task


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Timed(_Section):
    timeout_sec: float = Field(600.0, gt=0)


class _Environment(_Section):
    build_timeout_sec: float = Field(1800.0, gt=0)
    cpus: float = Field(1.0, gt=0)
    memory_mb: int = Field(2048, ge=64)
    storage_mb: int = Field(4096, ge=64)
    workdir: str | None = Field(None, pattern=r"^/")
    allow_internet: bool = False


class _TaskToml(_Section):
    version: str = "1.0"
    metadata: dict = {}
    verifier: _Timed = _Timed()
    agent: _Timed = _Timed()
    environment: _Environment = _Environment()


def is_harbor(path: Path) -> bool:
    return (path / "task.toml").is_file()


def load_harbor(path: Path) -> Task:
    """The Harbor task in folder `path`; InvalidRequest names the file and field at fault."""
    config = _config(path / "task.toml")
    instruction = _required_text(path / "instruction.md")
    dockerfile = path / "environment" / "Dockerfile"
    _required_file(dockerfile)
    _required_file(path / "tests" / "test.sh")
    solution = files_under(path / "solution")
    env = config.environment
    return Task(
        id=path.name, path=path, format="harbor", instruction=instruction,
        context=dockerfile.parent, dockerfile=dockerfile, tests=files_under(path / "tests"),
        test_command=["bash", "/tests/test.sh"], reward_kind="file", solution=solution,
        solution_command=["bash", "/solution/solve.sh"] if (path / "solution" / "solve.sh").is_file() else [],
        agent_timeout_s=config.agent.timeout_sec, verifier_timeout_s=config.verifier.timeout_sec,
        build_timeout_s=env.build_timeout_sec, memory=f"{env.memory_mb}m", cpus=env.cpus,
        disk=f"{env.storage_mb}m", workdir=env.workdir,
        metadata={**config.metadata, "allow_internet": env.allow_internet})


def _config(path: Path) -> _TaskToml:
    _required_file(path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: not TOML: {exc}") from None
    try:
        return _TaskToml.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"{path}: {field_errors(exc)}") from None


def field_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())


def files_under(folder: Path) -> list[tuple[Path, str]]:
    """(host file, name relative to the folder) for every regular file below `folder`."""
    if not folder.is_dir():
        return []
    return [(p, str(p.relative_to(folder))) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()]


def _required_file(path: Path) -> None:
    if not path.is_file():
        raise InvalidRequest(f"not a Harbor task: missing file {path}")


def _required_text(path: Path) -> str:
    _required_file(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not UTF-8 text") from None
    if not text.strip():
        raise InvalidRequest(f"{path} is empty: it must hold the instruction")
    return text.strip()
