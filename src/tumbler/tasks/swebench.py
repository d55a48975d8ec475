"""SWE-bench-style rows: a repository at a base commit, an issue, and the tests that judge a fix.

    set/
      instances.jsonl                  one row per line (any FILE.jsonl can be loaded by path)
      repos/<owner>__<name>.bundle     the repository as a git bundle, or a git repository
                                       folder repos/<owner>__<name>[.git]; or the row's repo_path

A row has SWE-bench's fields: instance_id, repo ("owner/name"), base_commit, problem_statement,
test_patch, FAIL_TO_PASS and PASS_TO_PASS (lists of pytest ids, or JSON strings of lists as
SWE-bench's files hold them), patch (the gold patch: the oracle; optional), and may add
repo_path (a local git repository or bundle, relative to the file) and `environment` (see
`Environment`). Other fields (hints_text, version...) are kept as metadata.

Nothing is fetched. Each row becomes a task folder under `<TUMBLER_HOME>/tasks/swe/` (made once,
named by a hash of the row): `repo/` (the tree at base_commit, from `git archive`), a Dockerfile
(the environment's base and packages, the repo copied to /testbed, a git repository of it made
there for the agent, the environment's install steps), `solution/` (the gold patch and the
script that applies it) and `verifier/`: `manifest.json` and `files/`, the test files as the test
patch leaves them (with every other file of the named tests' folders, and the base's
conftest.py/pytest.ini/tox.ini files), computed here on the host with git. The agent never
sees the test patch: after its turn the verifier (tumbler.tasks.verify, then `swe_check.py` in
the sandbox) writes those files back over whatever the agent left, deletes any other file in
those folders and any conftest.py/pytest.ini/tox.ini the base did not have, runs the tests and
reports each one; resolved means every FAIL_TO_PASS and
every PASS_TO_PASS test passed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tumbler.errors import InvalidRequest
from tumbler.tasks.harbor import field_errors, files_under
from tumbler.tasks.model import Task

ROWS_FILE = "instances.jsonl"
GUARDED = ("conftest.py", "pytest.ini", ".pytest.ini", "tox.ini")   # as swe_check.GUARDED
CHECKER = Path(__file__).with_name("swe_check.py")
LAYOUT = "2"               # of the task folder: a change here makes every folder anew
GIT_TIMEOUT_S = 300
PATCH_PATH = re.compile(r"^(?:---|\+\+\+) (?:[ab]/)?(.+?)\s*$", re.MULTILINE)
SOLVE = """#!/bin/bash
# The gold patch, applied as a developer would.
cd "$1"
if command -v git >/dev/null; then git apply --whitespace=nowarn /solution/patch.diff
elif command -v patch >/dev/null; then patch -p1 --forward < /solution/patch.diff
else echo "neither git nor patch in this image: cannot apply the gold patch" >&2; exit 2
fi
"""


class Environment(BaseModel):
    """The image a row's repository runs in, and the trial's limits."""

    model_config = ConfigDict(extra="forbid")

    base: str = "debian"
    """FROM: a local image or a mapped public name (python:3.11, debian:bookworm...)."""
    packages: list[str] = ["python3-pytest", "git"]
    """Debian packages installed first (apt-get); the verifier needs pytest."""
    setup: list[str] = []
    """Shell commands run before the repository is copied in (pip installs of dependencies)."""
    install: list[str] = []
    """Shell commands run in the repository once it is there (`pip install -e .`)."""
    workdir: str = Field("/testbed", pattern=r"^/[^\s]*$")
    """Where the repository is, and where the agent starts."""
    python: str = Field("python3", pattern=r"^[A-Za-z0-9_./+-]+$")
    """The interpreter that runs the tests (an absolute path outside /usr, such as a conda
    env's, has its whole prefix taken from the pristine image for the verifier)."""
    agent_timeout_sec: float = Field(1800.0, gt=0)
    verifier_timeout_sec: float = Field(900.0, gt=0)
    build_timeout_sec: float = Field(1800.0, gt=0)
    memory_mb: int = Field(2048, ge=64)
    cpus: float = Field(1.0, gt=0)
    storage_mb: int = Field(8192, ge=64)


class Row(BaseModel):
    """One line of an instances file."""

    model_config = ConfigDict(extra="allow")

    instance_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    repo: str = Field(min_length=1)
    base_commit: str = Field(pattern=r"^[0-9a-f]{7,40}$")
    problem_statement: str = Field(min_length=1)
    test_patch: str = Field(min_length=1)
    FAIL_TO_PASS: list[str] = Field(min_length=1)
    PASS_TO_PASS: list[str] = []
    patch: str | None = None
    repo_path: str | None = None
    environment: Environment = Environment()

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _json_list(cls, value):
        if isinstance(value, str):   # SWE-bench's own files hold these as JSON text
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("must be a list of test ids (or a JSON string of one)") from None
        return value


def is_rows(path: Path) -> bool:
    """A .jsonl file of rows, or a folder with instances.jsonl (and no Harbor/TB1 task file)."""
    if path.is_file():
        return path.suffix == ".jsonl"
    return (path / ROWS_FILE).is_file()


def load_rows(path: Path, cache: Path | None = None) -> list[Task]:
    """The tasks of an instances file (or of a folder's instances.jsonl); InvalidRequest names
    the file, the line and the field at fault."""
    path = path / ROWS_FILE if path.is_dir() else path
    if cache is None:
        from tumbler.config import Paths
        cache = Paths.from_env().home / "tasks" / "swe"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}") from None
    tasks, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row = _row(line, where)
        if row.instance_id in seen:
            raise InvalidRequest(f"{where}: instance_id {row.instance_id!r} appears twice")
        seen.add(row.instance_id)
        tasks.append(_task(row, _materialize(row, path.parent, cache, where), where))
    if not tasks:
        raise InvalidRequest(f"{path} holds no rows")
    return tasks


def _row(line: str, where: str) -> Row:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise InvalidRequest(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where}: a row must be a JSON object")
    try:
        return Row.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"{where}: {field_errors(exc)}") from None


def _task(row: Row, folder: Path, where: str) -> Task:
    env = row.environment
    manifest = json.loads((folder / "verifier" / "manifest.json").read_text())
    tests = [(CHECKER, "swe_check.py"), (folder / "verifier" / "manifest.json", "manifest.json"),
             *[(p, f"files/{name}") for p, name in files_under(folder / "verifier" / "files")]]
    solution = [(folder / "solution" / "patch.diff", "patch.diff"),
                (folder / "solution" / "solve.sh", "solve.sh")] if row.patch else []
    prefix = _prefix(env.python)
    instruction = (f"The repository {row.repo} is checked out at {env.workdir} (commit "
                   f"{row.base_commit[:12]}). Change its code so that the issue below is "
                   "resolved. Its tests will be run afterwards; changes to test files are "
                   f"not kept.\n\n<issue>\n{row.problem_statement.strip()}\n</issue>")
    return Task(
        id=row.instance_id, path=folder, format="swebench", instruction=instruction,
        context=folder, dockerfile=folder / "Dockerfile", tests=tests,
        test_command=[env.python, "-I", "/tests/swe_check.py", "/tests/manifest.json"],
        reward_kind="tests", solution=solution,
        solution_command=["bash", "/solution/solve.sh", env.workdir] if row.patch else [],
        agent_timeout_s=env.agent_timeout_sec, verifier_timeout_s=env.verifier_timeout_sec,
        build_timeout_s=env.build_timeout_sec, memory=f"{env.memory_mb}m", cpus=env.cpus,
        disk=f"{env.storage_mb}m", workdir=env.workdir, fail_to_pass=row.FAIL_TO_PASS,
        pass_to_pass=row.PASS_TO_PASS, protected=[prefix] if prefix else [],
        metadata={"repo": row.repo, "base_commit": row.base_commit, "source": where,
                  "issue_title": row.problem_statement.strip().splitlines()[0][:200],
                  "test_files": manifest["test_files"],
                  **{k: v for k, v in (row.model_extra or {}).items()
                     if isinstance(v, (str, int, float)) and len(str(v)) < 4096}})


def _prefix(python: str) -> str | None:
    """The install prefix of an interpreter outside the pruned system paths (/opt/x/bin/python
    -> /opt/x), which the verifier takes from the image, not the agent's copy."""
    if not python.startswith("/") or python.startswith(("/usr/", "/bin/", "/sbin/")):
        return None
    bin_dir = os.path.dirname(python)
    return os.path.dirname(bin_dir) if os.path.basename(bin_dir) == "bin" else bin_dir


# -- the task folder ------------------------------------------------------------------------

def _materialize(row: Row, base_dir: Path, cache: Path, where: str) -> Path:
    """The row's task folder under `cache`, made once (named by a hash of LAYOUT and the row)."""
    key = hashlib.sha256(f"{LAYOUT}\0{row.model_dump_json()}".encode()).hexdigest()[:16]
    folder = cache / f"{row.instance_id}-{key}"
    if (folder / "Dockerfile").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    git_dir = _repository(row, base_dir, cache, where)
    tmp = Path(tempfile.mkdtemp(prefix=f".{row.instance_id}-", dir=cache))
    try:
        _write_folder(row, git_dir, tmp, where)
        try:
            tmp.rename(folder)
        except OSError:   # another loader made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _repository(row: Row, base_dir: Path, cache: Path, where: str) -> Path:
    """A git directory holding the row's repository: the local one, or a bundle cloned once."""
    if row.repo_path:
        candidates = [base_dir / row.repo_path]
    else:
        stem = base_dir / "repos" / row.repo.replace("/", "__")
        candidates = [stem.with_name(stem.name + ".bundle"), stem, stem.with_name(stem.name + ".git")]
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise InvalidRequest(f"{where}: repo {row.repo}: no local copy at "
                             f"{' or '.join(map(str, candidates))} (nothing is fetched; give "
                             "repo_path, a git repository or bundle relative to the file)")
    if source.is_file():   # a bundle: cloned bare, once per bundle's bytes
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        clone = cache / "repos" / f"{source.stem}-{digest}.git"
        if not clone.is_dir():
            clone.parent.mkdir(parents=True, exist_ok=True)
            tmp = clone.with_name(f".{clone.name}.{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            _git(["clone", "--bare", "--quiet", str(source.resolve()), str(tmp)], where=where)
            try:
                tmp.rename(clone)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        source = clone
    if _git(["rev-parse", "--verify", "--quiet", f"{row.base_commit}^{{commit}}"], cwd=source,
            check=False).returncode != 0:
        raise InvalidRequest(f"{where}: base_commit {row.base_commit} is not a commit of "
                             f"{source}")
    return source


def _write_folder(row: Row, git_dir: Path, folder: Path, where: str) -> None:
    env = row.environment
    repo = folder / "repo"
    repo.mkdir()
    archive = _git(["archive", "--format=tar", row.base_commit], cwd=git_dir, where=where,
                   text=False).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(repo, filter="data")
    names = _git(["ls-tree", "-r", "--name-only", "-z", row.base_commit], cwd=git_dir,
                 where=where).stdout.split("\0")
    patched = sorted(set(PATCH_PATH.findall(row.test_patch)) - {"/dev/null"})
    if not patched:
        raise InvalidRequest(f"{where}: test_patch: no file names in it (not a unified diff?)")
    test_files = sorted({t.split("::")[0] for t in row.FAIL_TO_PASS + row.PASS_TO_PASS})
    for rel in patched + test_files:
        if rel.startswith("/") or ".." in rel.split("/") or not rel.strip():
            raise InvalidRequest(f"{where}: {rel!r} is not a path inside the repository")
    test_dirs = sorted({os.path.dirname(t) for t in test_files})
    restored = set(patched) | set(test_files) | {
        n for n in names if n.rsplit("/", 1)[-1] in GUARDED or os.path.dirname(n) in test_dirs}
    after = folder / "verifier" / "files"
    after.mkdir(parents=True)
    for rel in sorted(restored):
        if (repo / rel).is_file():
            (after / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / rel, after / rel)
    patch_file = folder / "verifier" / "test_patch.diff"
    patch_file.write_text(row.test_patch)
    applied = _git(["apply", "--whitespace=nowarn", str(patch_file)], cwd=after, check=False,
                   env={"GIT_CEILING_DIRECTORIES": str(after.parent)})
    if applied.returncode != 0:
        raise InvalidRequest(f"{where}: test_patch does not apply at base_commit "
                             f"{row.base_commit[:12]}: {applied.stderr.strip()[-800:]}")
    present = {name for _, name in files_under(after)}
    missing = [t for t in test_files if t not in present]
    if missing:
        raise InvalidRequest(f"{where}: FAIL_TO_PASS/PASS_TO_PASS name test files that are not "
                             f"in the repository with the test patch: {', '.join(missing)}")
    manifest = {"repo": env.workdir, "write": sorted(present),
                "delete": sorted(set(patched) - present), "test_files": test_files,
                "test_dirs": test_dirs}
    (folder / "verifier" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if row.patch:
        (folder / "solution").mkdir()
        (folder / "solution" / "patch.diff").write_text(row.patch)
        (folder / "solution" / "solve.sh").write_text(SOLVE)
    (folder / "Dockerfile").write_text(_dockerfile(row))


def _dockerfile(row: Row) -> str:
    env = row.environment
    lines = [f"FROM {env.base}"]
    if env.packages:
        lines.append("RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                     f"-q --no-install-recommends {' '.join(env.packages)} "
                     "&& rm -rf /var/lib/apt/lists/*")
    lines += [f"RUN {command}" for command in env.setup]
    lines += [f"COPY repo/ {env.workdir}/", f"WORKDIR {env.workdir}",
              # A repository of the base tree, for the agent's git diff (and the oracle's apply).
              "RUN if command -v git >/dev/null; then git init -q && git add -A && git -c "
              "user.name=tumbler -c user.email=tumbler@localhost commit -qm "
              f"'base {row.base_commit[:12]}'; fi"]
    lines += [f"RUN {command}" for command in env.install]
    return "\n".join(lines) + "\n"


def _git(args: list[str], *, cwd: Path | None = None, where: str = "", check: bool = True,
         text: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=text,
                                timeout=GIT_TIMEOUT_S,
                                env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1",
                                     "GIT_TERMINAL_PROMPT": "0", **(env or {})})
    except FileNotFoundError:
        raise InvalidRequest("SWE-style rows need git on this host (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise InvalidRequest(f"{where}: git {args[0]} ran past {GIT_TIMEOUT_S} s") from None
    if check and result.returncode != 0:
        err = result.stderr if text else result.stderr.decode(errors="replace")
        raise InvalidRequest(f"{where}: git {args[0]} failed: {err.strip()[-800:]}")
    return result
