"""The verifier, run where nothing the agent left behind can speak for it.

After the agent's turn its sandbox is snapshot (frozen while its files are copied) and the copy
pruned on the host before anything runs: programs, libraries and startup files the agent
changed are dropped (`/usr`, `/bin`, `/lib*`, `/etc/ld.so.*`, `/etc/profile*`, shells' and
Python's startup files, `~/.local`, anything under a `site-packages`/`dist-packages` folder,
`.pth` files, `node_modules`, Python virtual environments (a folder with pyvenv.cfg in the
image or the copy), files at the top of `/`), and so are `/tests`, `/logs` and `/solution`. A fresh
sandbox starts from that copy, with no process of the agent's and its network off: the
verifier sees the agent's *data* (its files, configs, databases, deletions) over the pristine
image's programs. The tests are copied in from the host only now, `/logs/verifier` is made
empty, the test command runs with a timeout, and the reward is read by our code: at most
`REWARD_MAX_BYTES` of reward.txt (one finite number) or reward.json (numbers only), the
pytest summary of the verifier's output for Terminal-Bench tasks, or for SWE-style rows each
named test's outcome in results.json (resolved: every FAIL_TO_PASS and PASS_TO_PASS passed). A verifier that times out or
writes no reward is an error of the verifier, reported as such, not a failed task.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from tumbler.errors import NotFound, RuntimeFailure, TumblerError
from tumbler.runtime.owners import is_alive, this_process
from tumbler.runtime.trees import remove_tree

log = logging.getLogger(__name__)

REWARD_MAX_BYTES = 4096
OUTPUT_MAX_BYTES = 256 * 1024
MAX_PATH = 3800            # characters of a host path the pruning walk goes down to
PRUNED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "tests", "logs", "solution",
          "proc", "sys", "dev", "run", "etc/ld.so.preload", "etc/ld.so.conf", "etc/ld.so.conf.d",
          "etc/ld.so.cache", "etc/profile", "etc/profile.d", "etc/bash.bashrc", "etc/environment",
          "etc/python*", "etc/pip.conf", "etc/alternatives", "root/.local", "root/.bashrc",
          "root/.profile", "root/.bash_profile", "root/.config/pip", "home/*/.local",
          "home/*/.bashrc", "home/*/.profile", "home/*/.bash_profile", "tmp/.tumbler*")
PRUNED_ANYWHERE = ("site-packages", "dist-packages", "*.pth", "__pycache__", "node_modules")
TESTS_RESULTS = "/logs/verifier/results.json"
TESTS_RESULTS_MAX_BYTES = 16 << 20
TEST_PASSES = ("passed", "xfailed")
PYTEST_LINE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\s+(\S+)", re.MULTILINE)


@dataclass
class Verdict:
    reward: float
    passed: bool
    error: str | None = None
    """Why the verifier gave no reward (timed out, crashed, wrote none); None when it did."""
    rewards: dict[str, float] = field(default_factory=dict)
    output: str = ""
    seconds: float = 0.0


def verify(agent_sandbox, task, *, env: dict[str, str], workdir: str, runtime,
           network: str = "none") -> Verdict:
    """Run `task`'s verifier on a pruned copy of `agent_sandbox`'s files."""
    from tumbler.local import LocalSandbox
    started = time.monotonic()
    store = runtime.images
    image = f"verify.{secrets.token_hex(8)}"
    agent_sandbox.snapshot(image)
    try:
        store.update_meta(image, owner=this_process())   # for sweep_stale, if we die here
        prune_layer(store.get(image).layer, store.layers(image)[1:], task.protected)
        with LocalSandbox(image, env=env, cwd=workdir, network=network, runtime=runtime,
                          memory=task.memory, cpus=task.cpus, disk=task.disk) as sb:
            verdict = _run_verifier(sb, task, env, workdir)
    finally:
        try:
            store.remove(image)
        except TumblerError as exc:
            log.warning("could not remove verifier image %s: %s", image, exc)
    verdict.seconds = time.monotonic() - started
    return verdict


def sweep_stale(store) -> list[str]:
    """Remove the verifier images (`verify.*`) left by processes that died mid-trial."""
    removed = []
    for image in store.list():
        if not image.name.startswith("verify."):
            continue
        owner = store.meta(image.name).get("owner")
        if owner and not is_alive(owner):
            try:
                store.remove(image.name)
                removed.append(image.name)
            except TumblerError as exc:   # a sandbox of it still there: the next sweep
                log.warning("could not remove stale verifier image %s: %s", image.name, exc)
    return removed


def prune_layer(layer: Path, image_layers: list[Path] = (), protected: list[str] = ()) -> None:
    """Drop from a snapshot's layer what must come from the pristine image (see above);
    `image_layers` are the image's own, where a Python virtual environment (a folder with
    pyvenv.cfg, such as a verifier's /opt/verifier-venv) is found, whose changes go too;
    `protected` are more absolute paths to drop (a task's interpreter prefix).

    The tree is the agent's: the walk is iterative (a 5,000-level tree does not recurse), never
    follows a link, and a path it cannot handle (past PATH_MAX) fails the check with a
    TumblerError rather than leaving something unpruned."""
    for pattern in (*PRUNED, *(p.strip("/") for p in protected)):
        for hit in _matches(layer, pattern.split("/")):
            _remove(hit)
    for entry in os.scandir(layer):   # /conftest.py, /pytest.ini...: files at the top of /
        if not entry.is_dir(follow_symlinks=False):
            _remove(Path(entry.path))
    stack = [str(layer)]
    while stack:
        folder = stack.pop()
        if len(folder) > MAX_PATH:
            raise RuntimeFailure(f"the agent's files nest too deep to check ({len(folder)} "
                                 "characters of path); the trial fails")
        with os.scandir(folder) as entries:
            for entry in entries:
                if any(fnmatch.fnmatch(entry.name, p) for p in PRUNED_ANYWHERE):
                    _remove(Path(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    if _is_venv(layer, Path(entry.path), image_layers):
                        _remove(Path(entry.path))
                    else:
                        stack.append(entry.path)


def _is_venv(layer: Path, folder: Path, image_layers) -> bool:
    rel = folder.relative_to(layer)
    return any(os.path.lexists(base / rel / "pyvenv.cfg") for base in (layer, *image_layers))


def _matches(folder: Path, parts: list[str]) -> list[Path]:
    """Entries under `folder` matching the glob components `parts`, going down through real
    directories only (Path.glob would follow the agent's links, to the host's own /etc)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    hits = [e for e in entries if fnmatch.fnmatch(e.name, parts[0])]
    if len(parts) == 1:
        return [Path(e.path) for e in hits]
    return [m for e in hits if e.is_dir(follow_symlinks=False) for m in _matches(Path(e.path), parts[1:])]


def _remove(path: Path) -> None:
    if not remove_tree(path):
        raise RuntimeFailure(f"could not remove {path} from the verifier's copy; the trial fails")


def _run_verifier(sb, task, env: dict[str, str], workdir: str) -> Verdict:
    from tumbler.tasks.agents import upload
    upload(sb, "/tests", task.tests)
    sb.mkdir("/logs/verifier")
    result = sb.exec(task.test_command, env={**env, **task.verifier_env}, cwd=workdir,
                     timeout=task.verifier_timeout_s, max_output=OUTPUT_MAX_BYTES)
    output = (result.stdout_bytes + result.stderr_bytes).decode(errors="replace")
    if result.timed_out:
        return Verdict(0.0, False, f"verifier timed out after {task.verifier_timeout_s:.0f} s",
                       output=output[-8000:])
    if task.reward_kind == "pytest":
        return _pytest_verdict(output)
    if task.reward_kind == "tests":
        return _tests_verdict(sb, task, output)
    return _file_verdict(sb, output, result.exit_code)


def _file_verdict(sb, output: str, exit_code: int) -> Verdict:
    for name in ("reward.txt", "reward.json"):
        try:
            raw = sb.read_bytes(f"/logs/verifier/{name}", length=REWARD_MAX_BYTES + 1)
        except NotFound:
            continue
        if len(raw) > REWARD_MAX_BYTES:
            return Verdict(0.0, False, f"{name} is over {REWARD_MAX_BYTES} bytes", output=output[-8000:])
        try:
            rewards = parse_reward(name, raw)
        except ValueError as exc:
            return Verdict(0.0, False, f"{name}: {exc}", output=output[-8000:])
        reward = rewards.get("reward", next(iter(rewards.values())))
        return Verdict(reward, reward >= 1.0, rewards=rewards, output=output[-8000:])
    return Verdict(0.0, False, f"the verifier (exit code {exit_code}) wrote no "
                   "/logs/verifier/reward.txt or reward.json", output=output[-8000:])


def parse_reward(name: str, raw: bytes) -> dict[str, float]:
    """reward.txt: one finite number; reward.json: an object of finite numbers."""
    text = raw.decode("utf-8", errors="strict").strip()
    if name == "reward.txt":
        return {"reward": _number(text)}
    data = json.loads(text)
    if not isinstance(data, dict) or not data:
        raise ValueError("must be a JSON object of numbers, e.g. {\"reward\": 1.0}")
    return {str(k)[:64]: _number(v) for k, v in list(data.items())[:32]}


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number: {str(value)[:40]!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _tests_verdict(sb, task, output: str) -> Verdict:
    """SWE-style: resolved when every FAIL_TO_PASS and every PASS_TO_PASS test passed (an
    xfail counts, as in SWE-bench); the outcomes come from swe_check.py's results.json."""
    try:
        raw = sb.read_bytes(TESTS_RESULTS, length=TESTS_RESULTS_MAX_BYTES + 1)
    except NotFound:
        return Verdict(0.0, False, f"the verifier wrote no {TESTS_RESULTS}", output=output[-8000:])
    try:
        if len(raw) > TESTS_RESULTS_MAX_BYTES:
            raise ValueError(f"over {TESTS_RESULTS_MAX_BYTES} bytes")
        report = json.loads(raw)
        outcomes = {str(k): str(v) for k, v in report["tests"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Verdict(0.0, False, f"{TESTS_RESULTS}: unreadable: {exc}", output=output[-8000:])
    if not report.get("started"):
        return Verdict(0.0, False, "pytest did not start in the verifier (is it installed in the "
                       "image?)", output=output[-8000:])
    lines, rewards = [], {}
    for name, wanted in (("fail_to_pass", task.fail_to_pass), ("pass_to_pass", task.pass_to_pass)):
        bad = [t for t in wanted if outcomes.get(t) not in TEST_PASSES]
        rewards[f"{name}_passed"] = float(len(wanted) - len(bad))
        rewards[name] = float(len(wanted))
        lines += [f"{name.upper()} {t}: {outcomes.get(t, 'not run')}" for t in bad]
    resolved = not lines
    rewards["reward"] = float(resolved)
    summary = "resolved" if resolved else "not resolved:\n" + "\n".join(lines[:200])
    return Verdict(float(resolved), resolved, rewards=rewards,
                   output=(output[-6000:] + "\n" + summary)[-8000:])


def _pytest_verdict(output: str) -> Verdict:
    results = dict((name, status) for status, name in PYTEST_LINE.findall(output))
    if not results:
        return Verdict(0.0, False, "the verifier's output has no pytest results (run pytest "
                       "with -rA)", output=output[-8000:])
    passed = sum(s == "PASSED" for s in results.values())
    ok = all(s in ("PASSED", "XFAIL", "SKIPPED") for s in results.values()) and passed > 0
    return Verdict(float(ok), ok, rewards={"tests_passed": float(passed),
                                           "tests": float(len(results))}, output=output[-8000:])
