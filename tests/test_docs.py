"""The docs run as written: every ```python and ```bash block of README.md and docs/*.md.

Each block runs on its own, in a fresh temporary directory holding a small `./project` tree (the
snippets upload one), with `tumbler` on PATH: python blocks under this venv's python, bash blocks
under `bash -e`. A comment on the line(s) before a block says how it runs:

    <!-- docs-test: skip (why) -->        not run; the reason is shown in the test report
    <!-- docs-test: server -->            needs `tumbler serve`: the module's own server on
                                          loopback (no token), its URL put in place of the
                                          docs' http://127.0.0.1:8040 (and in TUMBLER_URL)
    <!-- docs-test: slow -->              marked slow (run with -m slow)
    <!-- docs-test: rock-sdk -->          run under ROCK's SDK venv (/opt/peers-venv) with the
                                          server's URL as its argument

A block without a comment runs as-is. After each block: no sandbox it made is left (local ones
are found through the runtime's create, recorded by a prelude; server ones through the server's
list), and an image the block made under a name it spells out is removed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from checks import leftovers

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS_URL = "http://127.0.0.1:8040"
PEERS_PYTHON = Path(os.environ.get("PEERS_VENV", "/opt/peers-venv")) / "bin" / "python"
BLOCK_TIMEOUT_S = 600
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
KNOWN = {"skip", "server", "slow", "rock-sdk"}

# Records the id of every sandbox a python block makes on the process runtime, so that the
# check after it looks at those alone (other sandboxes on this host are not the block's).
PRELUDE = textwrap.dedent("""\
    import os as _os
    import tumbler.runtime.process as _process
    _create = _process.ProcessRuntime.create
    def _recording_create(self, *args, **kwargs):
        info = _create(self, *args, **kwargs)
        with open(_os.environ["TUMBLER_DOCS_MADE"], "a") as _fh:
            _fh.write(info.id + "\\n")
        return info
    _process.ProcessRuntime.create = _recording_create
    """)


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks_of(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.fullmatch(r"```(python|bash)\s*", lines[i])
        if not fence:
            if lines[i].startswith("```"):     # another kind of block: skip to its end
                i += 1
                while i < len(lines) and not lines[i].startswith("```"):
                    i += 1
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marks = {}
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and (m := MARKER.fullmatch(lines[j].strip())):
            for word, reason in re.findall(r"([\w-]+)\s*(?:\(([^)]*)\))?", m.group(1)):
                marks[word] = reason
        found.append(Block(doc, start + 1, fence.group(1), "\n".join(body) + "\n", marks))
        i += 1
    return found


ALL = [b for doc in DOCS for b in blocks_of(doc)]


def params():
    for b in ALL:
        marks = []
        if "skip" in b.marks:
            marks.append(pytest.mark.skip(reason=f"docs-test: skip ({b.marks['skip']})"))
        if "slow" in b.marks:
            marks.append(pytest.mark.slow)
        yield pytest.param(b, id=b.id, marks=marks)


def test_markers_are_known_and_skips_say_why():
    for b in ALL:
        assert set(b.marks) <= KNOWN, f"{b.id}: unknown docs-test marker {set(b.marks) - KNOWN}"
        if "skip" in b.marks:
            assert b.marks["skip"].strip(), f"{b.id}: a skip must say why: skip (reason)"
    assert len(ALL) >= 20, "the docs' blocks were not found"


@pytest.fixture(scope="module")
def docs_server(runtime, tmp_path_factory):
    """A server on loopback without a token, as `tumbler serve` on this machine would be."""
    sys.path.insert(0, str(Path(__file__).parent / "server"))
    from server_process import ServerProcess
    srv = ServerProcess(tmp_path_factory.mktemp("docs-server"), tokens=[]).start()
    yield srv
    assert srv.terminate() in (0, -signal.SIGTERM)


@pytest.fixture
def workdir(tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README").write_text("a project for the docs' snippets\n")
    (project / "src" / "main.py").write_text("print('hello from the project')\n")
    return tmp_path


@pytest.mark.parametrize("block", list(params()))
def test_doc_block_runs(block: Block, request, runtime, workdir):
    server = request.getfixturevalue("docs_server") if "server" in block.marks else None
    code = block.code if server is None else block.code.replace(DOCS_URL, server.url)
    made_log = workdir / ".made"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "TUMBLER_DOCS_MADE": str(made_log), "PYTHONUNBUFFERED": "1"}
    env.pop("TUMBLER_TOKEN", None)
    if server is not None:
        env["TUMBLER_URL"] = server.url
    if block.lang == "bash":
        argv = ["bash", "-e", "-c", code]
    elif "rock-sdk" in block.marks:
        if not PEERS_PYTHON.exists():
            pytest.skip(f"{PEERS_PYTHON} is missing: run `bash scripts/peers-venv.sh`")
        argv = [str(PEERS_PYTHON), "-c", code, server.url]
    else:
        argv = [sys.executable, "-c", PRELUDE + code]
    images_before = {im.name for im in runtime.images.list()}
    try:
        out = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                             timeout=BLOCK_TIMEOUT_S)
    finally:
        left = _sandboxes_left(runtime, made_log, server)
        for name in {im.name for im in runtime.images.list()} - images_before:
            if re.search(rf"\b{re.escape(name)}\b", block.code):
                runtime.images.remove(name)
    assert out.returncode == 0, (f"{block.id} ({block.lang}) exited {out.returncode}\n"
                                 f"--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}")
    assert not left, f"{block.id} left sandboxes behind: {left}"


def _sandboxes_left(runtime, made_log: Path, server) -> list[str]:
    """Ids of sandboxes the block made and did not remove (removed here, and leak-checked)."""
    left = []
    made = made_log.read_text().split() if made_log.exists() else []
    known = {s.id for s in runtime.list()}
    for sid in made:
        if sid in known:
            left.append(sid)
            runtime.remove(sid)
    if server is not None:
        from tumbler.sdk import Client, core
        with Client(server.url) as client:
            for sb in client.list():
                left.append(sb.id)
                client.send(core.remove(sb.id))
    for sid in made:
        assert leftovers(runtime, sid) == [], (sid, leftovers(runtime, sid))
    return left
