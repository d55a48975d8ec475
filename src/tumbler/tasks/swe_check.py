"""The SWE-style verifier's side in the sandbox: put the tests back, run them, report each one.

    python3 -I /tests/swe_check.py /tests/manifest.json [RESULTS]

Copied in from the host after the agent's turn (with the manifest and the test files), and run
by the image's own python3 with -I: no PYTHON* variables, no user site, and the current folder
not on sys.path, so a sitecustomize.py, usercustomize.py or pytest.py the agent left in the
repository is never imported. Standard library only; pytest is imported by the child, from the
image's site-packages, before the repository goes on sys.path.

1. In the repository, every file named like a pytest config or plugin hook (conftest.py,
   pytest.ini, .pytest.ini, tox.ini) that the manifest does not list is deleted, and so is
   every unlisted file directly in a named test's folder; every listed file (the test patch's
   files as it leaves them, the other files of the named tests' folders, the base commit's
   conftest.py and pytest.ini files) is written back from /tests/files, through real
   directories only (a link the agent put in the way is replaced); the test patch's deletions
   are deleted.
2. pytest runs the named tests' files in a child (python3 -I, the repository first on sys.path
   as `python -m pytest` has it, `-o addopts=` so no config file adds `-p plugin`, no cache,
   no PYTEST_* or PYTHON* variables), which writes one JSON line per test report to a pipe.
3. /logs/verifier/results.json (or RESULTS) gets {"started": bool, "exit_code": n, "tests": {id: outcome}},
   outcome one of passed, failed, error, skipped, xfailed, xpassed. The host judges it.
"""
import json
import os
import shutil
import subprocess
import sys

GUARDED = {"conftest.py", "pytest.ini", ".pytest.ini", "tox.ini"}
RESULTS = "/logs/verifier/results.json"

CHILD = r'''
import json, os, sys
out = os.fdopen(int(sys.argv[1]), "w", buffering=1)
os.set_inheritable(out.fileno(), False)
import pytest   # the image's, imported before the repository is on sys.path
sys.path.insert(0, sys.argv[2])


class Report:
    def pytest_sessionstart(self, session):
        out.write('{"started": true}\n')

    def pytest_runtest_logreport(self, report):
        out.write(json.dumps({"id": report.nodeid, "when": report.when, "outcome": report.outcome,
                              "xfail": hasattr(report, "wasxfail")}) + "\n")


sys.exit(pytest.main(sys.argv[3:], plugins=[Report()]))
'''


def main(manifest_path, results=RESULTS):
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    repo = manifest["repo"]
    files = os.path.join(os.path.dirname(manifest_path), "files")
    if os.path.islink(repo) or not os.path.isdir(repo):   # moved away: every test fails
        _remove(repo)
        os.makedirs(repo)
    listed = set(manifest["write"])
    deleted = _delete_unlisted(repo, listed, set(manifest.get("test_dirs", [])))
    for rel in manifest["write"]:
        _put(repo, rel, os.path.join(files, rel))
    for rel in manifest["delete"]:
        _remove(os.path.join(repo, rel))
    started, code, tests = _run(repo, manifest["test_files"])
    os.makedirs(os.path.dirname(results), exist_ok=True)
    with open(results, "w") as fh:
        json.dump({"started": started, "exit_code": code, "tests": tests}, fh)
    print(f"swe_check: wrote back {len(listed)} files; deleted {len(deleted)} the base did not "
          f"have{': ' + ', '.join(deleted[:20]) if deleted else ''}")
    print(f"swe_check: pytest {'ran' if started else 'did not start'} (exit code {code}), "
          f"{len(tests)} test results")


def _delete_unlisted(repo, listed, test_dirs):
    """Delete the guarded names and the files of the test folders that are not listed."""
    deleted = []
    for folder, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        in_test_dir = ("" if folder == repo else os.path.relpath(folder, repo)) in test_dirs
        for name in names + [d for d in dirs if d in GUARDED]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, repo)
            if (name in GUARDED or in_test_dir) and rel not in listed:
                _remove(path)
                deleted.append(rel)
    return deleted


def _put(repo, rel, source):
    """Write `source` to repo/rel, every folder on the way a real one (links replaced)."""
    here = repo
    for part in rel.split("/")[:-1]:
        here = os.path.join(here, part)
        if os.path.islink(here) or (os.path.exists(here) and not os.path.isdir(here)):
            _remove(here)
        os.makedirs(here, exist_ok=True)
    dest = os.path.join(here, rel.split("/")[-1])
    _remove(dest)
    shutil.copyfile(source, dest)


def _remove(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _run(repo, test_files):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    read, write = os.pipe()
    args = [sys.executable, "-I", "-c", CHILD, str(write), repo, "-p", "no:cacheprovider",
            "-o", "addopts=", "--rootdir", repo, "--confcutdir", repo, "-q", *test_files]
    proc = subprocess.Popen(args, cwd=repo, env=env, pass_fds=[write], stdin=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read, errors="replace") as pipe:
        lines = pipe.read().splitlines()
    code = proc.wait()
    started, tests = False, {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("started"):
            started = True
        elif "id" in event:
            tests[event["id"]] = _outcome(tests.get(event["id"]), event)
    return started, code, {k: v for k, v in tests.items() if v is not None}


def _outcome(before, event):
    """One test's outcome from its setup, call and teardown reports, in that order."""
    when, outcome, xfail = event["when"], event["outcome"], event["xfail"]
    if before in ("failed", "error"):
        return before
    if outcome == "failed":
        return "failed" if when == "call" else "error"
    if outcome == "skipped":
        return "xfailed" if xfail else "skipped"
    if when == "call":
        return "xpassed" if xfail else "passed"
    return before        # setup (nothing yet) or teardown (the call's stands)


if __name__ == "__main__":
    main(*sys.argv[1:3])
