"""API fuzzing (issue 11, item 4): schemathesis against a real `tumbler serve` on loopback.

Every operation of the server's own OpenAPI schema (/v1, ROCK's /apis/envs/sandbox/v1 and /env
routes included) gets positive and negative (schema-violating) cases, once with auth on (the
token sent, plus cases with a wrong token) and once with auth off. Half the cases that take a
sandbox id get the id of a live sandbox, so the fuzzer reaches the agent and not only 404s.
Asserted: no 5xx, no request past REQUEST_TIMEOUT_S (a hang), the server alive and serving at
the end, and nothing left on the host after everything is removed.

What the test bends, so that a fuzz run stays cheap and safe: command/step timeouts are clamped
to <= 3 s, `network` is forced to "none" (nothing but loopback), sandboxes beyond MAX_SANDBOXES
are removed as they appear (plus a small node budget), and images made by snapshots are removed.

Knobs: TUMBLER_FUZZ_EXAMPLES (cases per operation and mode, default 40), TUMBLER_FUZZ_SEED.
Failures found are listed in docs/RELIABILITY.md.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from checks import IMAGE, leftovers  # noqa: E402
from server_process import TOKEN, ServerProcess  # noqa: E402

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402


def _tar() -> bytes:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("fuzz/a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


# raw bodies: random bytes, and for tar routes a real tar half the time
schemathesis.openapi.media_type("application/x-tar", st.one_of(st.just(_tar()), st.binary(max_size=4096)))
schemathesis.openapi.media_type("application/octet-stream", st.binary(max_size=4096))

pytestmark = [pytest.mark.security, pytest.mark.timeout(300)]

EXAMPLES = int(os.environ.get("TUMBLER_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("TUMBLER_FUZZ_SEED", "11"))
REQUEST_TIMEOUT_S = 20.0        # a reply later than this is a hang
# Streams that run until the client leaves (or their max_s), sending all the while: a fuzz
# case would read one to its end. tests/server/test_console.py drives this one.
ENDLESS = {"GET /v1/events"}
MAX_SANDBOXES = 3               # the live target included
CREATES = {("POST", "/v1/sandboxes"), ("POST", "/apis/envs/sandbox/v1/start"),
           ("POST", "/apis/envs/sandbox/v1/start_async")}
TIMEOUT_KEYS = {"timeout", "timeout_s", "step_timeout_s", "wait_timeout", "wait_interval"}


def _clamp(value):
    """Clamp timeouts and force network off, anywhere in a JSON body."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in TIMEOUT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 3:
                v = 3
            elif k == "network" and v == "host":
                v = "none"
            out[k] = _clamp(v)
        return out
    if isinstance(value, list):
        return [_clamp(v) for v in value]
    return value


class Fuzzer:
    def __init__(self, server: ServerProcess, token: str | None):
        self.server = server
        self.url = server.url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=REQUEST_TIMEOUT_S)
        self.rng = random.Random(SEED)
        self.seen: set[str] = set()
        self.failures: list[str] = []
        self.cases = 0
        self.statuses: dict[int, int] = {}
        self.target: str | None = None

    # -- the live sandbox fuzz cases point at ----------------------------------------------

    def ensure_target(self) -> str:
        if self.target is not None:
            r = self.http.get(f"/v1/sandboxes/{self.target}")
            if r.status_code == 200 and r.json()["state"] == "running":
                return self.target
            if r.status_code == 200:
                self.http.delete(f"/v1/sandboxes/{self.target}")
        r = self.http.post("/v1/sandboxes", json={"image": IMAGE, "limits": {"memory": "128m"}})
        assert r.status_code == 201, r.text
        self.target = r.json()["id"]
        self.seen.add(self.target)
        return self.target

    def cap(self) -> None:
        r = self.http.get("/v1/sandboxes")
        assert r.status_code == 200, r.text
        ids = [s["id"] for s in r.json()["sandboxes"]]
        self.seen.update(ids)
        extra = [i for i in ids if i != self.target]
        for sid in extra[: max(0, len(ids) - MAX_SANDBOXES)] if len(ids) > MAX_SANDBOXES else []:
            self.http.delete(f"/v1/sandboxes/{sid}")

    # -- one case -----------------------------------------------------------------------------

    def run_case(self, case, op_label: str, headers: dict) -> None:
        self.cases += 1
        params = case.path_parameters or {}
        if "sandbox_id" in params and self.rng.random() < 0.5:
            params["sandbox_id"] = self.ensure_target()
        if isinstance(case.body, dict):
            case.body = _clamp(case.body)
            if "sandbox_id" in case.body and self.rng.random() < 0.5:
                case.body["sandbox_id"] = self.ensure_target()
        if isinstance(case.query, dict):
            case.query = _clamp(case.query)
            if "sandbox_id" in case.query and self.rng.random() < 0.5:
                case.query["sandbox_id"] = self.ensure_target()
        started = time.monotonic()
        try:
            resp = case.call(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # requests' timeout, reset, ...
            self.failures.append(f"{op_label}: no answer after {time.monotonic() - started:.1f} s "
                                 f"({type(exc).__name__}: {exc}); case: {_describe(case)}")
            return
        self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        if resp.status_code >= 500:
            self.failures.append(f"{op_label}: {resp.status_code} {resp.text[:300]!r}; "
                                 f"case: {_describe(case)}")
        self._collect_ids(resp)
        if (case.operation.method.upper(), case.operation.path) in CREATES:
            self.cap()

    def _collect_ids(self, resp) -> None:
        try:
            data = resp.json()
        except Exception:
            return
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for k, v in item.items():
                    if k in ("id", "sandbox_id") and isinstance(v, str) and 0 < len(v) < 100:
                        self.seen.add(v)
                    else:
                        stack.append(v)
            elif isinstance(item, list):
                stack.extend(item)

    # -- all operations ---------------------------------------------------------------------

    def fuzz(self, modes=(GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
             wrong_token: bool = False) -> int:
        spec = self.http.get("/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        ops = 0
        for result in schema.get_all_operations():
            op = result.ok()
            ops += 1
            label = f"{op.method.upper()} {op.path}"
            if label in ENDLESS:
                continue
            for mode in modes:
                self._fuzz_op(op, label, mode, self.headers)
            if wrong_token:
                self._fuzz_op(op, label, GenerationMode.POSITIVE,
                              {"Authorization": "Bearer wrong-token"}, examples=2, expect=401)
        return ops

    def _fuzz_op(self, op, label, mode, headers, examples: int = EXAMPLES, expect=None):
        try:
            strategy = op.as_strategy(generation_mode=mode)
        except Exception as exc:  # an operation with nothing to violate in negative mode
            if mode == GenerationMode.NEGATIVE:
                return
            raise AssertionError(f"{label}: no strategy: {exc}") from exc

        @seed(SEED)
        @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        @given(case=strategy)
        def run(case):
            if expect is None:
                self.run_case(case, f"{label} [{mode.value}]", headers)
                return
            self.cases += 1
            resp = case.call(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S)
            if op.path != "/healthz" and resp.status_code != expect:
                self.failures.append(f"{label} with a wrong token: {resp.status_code}, "
                                     f"not {expect}; case: {_describe(case)}")

        try:
            run()
        except Unsatisfiable:
            if mode != GenerationMode.NEGATIVE:  # nothing to violate (no parameters, no body)
                raise

    def sweep(self, runtime) -> None:
        """Remove every sandbox and image the run made; assert that nothing is left."""
        r = self.http.get("/v1/sandboxes")
        for s in r.json()["sandboxes"]:
            self.seen.add(s["id"])
            d = self.http.delete(f"/v1/sandboxes/{s['id']}")
            assert d.status_code == 204, d.text
        assert self.http.get("/v1/sandboxes").json()["sandboxes"] == []
        for sid in self.seen:
            assert leftovers(runtime, sid) == [], sid


def _describe(case) -> str:
    return json.dumps({"path": case.formatted_path, "query": case.query, "body": case.body,
                       "headers": {k: v for k, v in (case.headers or {}).items()
                                   if k.lower() != "authorization"}},
                      default=repr)[:600]


def _healthy(fz: Fuzzer) -> None:
    """The server still answers, and a full round trip works."""
    assert fz.server.proc.poll() is None, "the server died"
    assert httpx.get(fz.url + "/healthz", timeout=5).status_code == 200
    r = fz.http.post("/v1/sandboxes", json={"image": IMAGE})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    fz.seen.add(sid)
    r = fz.http.post(f"/v1/sandboxes/{sid}/exec", json={"command": "echo ok", "timeout": 10})
    assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text


@pytest.fixture
def images():
    """Remove the images that snapshots made during the test."""
    from tumbler.runtime.images import ImageStore
    store = ImageStore()
    before = {i.name for i in store.list()}
    yield
    new = [i for i in store.list() if i.name not in before]
    for _ in range(3):  # children before parents
        for image in list(new):
            try:
                store.remove(image.name)
                new.remove(image)
            except Exception:
                pass
    assert new == [], [i.name for i in new]


@pytest.mark.parametrize("auth", ["on", "off"])
def test_fuzz_every_route(runtime, tmp_path, images, auth, monkeypatch):
    monkeypatch.setenv("TUMBLER_ROCK_DEFAULT_IMAGE", IMAGE)  # ROCK starts make real sandboxes
    token = TOKEN if auth == "on" else None
    srv = ServerProcess(tmp_path, tokens=[token] if token else [],
                        node_memory_bytes=2 << 30, node_pids=4096, node_cpus=8,
                        max_upload_bytes=1 << 20, max_json_bytes=64 << 10).start()
    fz = Fuzzer(srv, token)
    try:
        ops = fz.fuzz(wrong_token=auth == "on")
        print(f"\nfuzz auth {auth}: {ops} operations, {fz.cases} cases, statuses {sorted(fz.statuses.items())}, "
              f"{len(fz.failures)} failures")
        assert ops >= 50
        _healthy(fz)
        assert fz.failures == [], "\n".join(fz.failures)
    finally:
        try:
            fz.sweep(runtime)
        finally:
            fz.http.close()
            code = srv.terminate()
            log = (tmp_path / "server.log").read_text(errors="replace")
    assert code in (0, -15), log[-3000:]
    assert "Traceback" not in log, log[-5000:]
