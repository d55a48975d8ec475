"""CPU per wire message, in-process: what the server and the SDK spend on the shared models.

    .venv/bin/python bench/bench_wire.py

No sandbox, no server: each step is the pydantic work one request or reply costs (best of 3
batches, microseconds per call). Prints a table and writes bench/results/wire.json.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from tumbler import wire
from tumbler.models import CommandResult, ExecResult
from tumbler.runtime.spec import SandboxState

RESULTS = Path(__file__).parent / "results" / "wire.json"
CREATE = json.dumps({"image": "debian", "limits": {"memory": "256m"}, "labels": {"team": "a"}})


def per_call_us(fn, n: int = 5000) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main() -> None:
    req = wire.CreateSandboxRequest.model_validate_json(CREATE)
    spec = req.spec()

    def record() -> wire.SandboxOut:
        return wire.SandboxOut(id="0123456789ab", state=SandboxState.RUNNING, spec=spec, created=1.0,
                               last_active=1.0, ttl_s=None, expires_at=None, runtime="process")
    sandbox_json = record().model_dump_json()
    result = CommandResult(output_bytes=b"hi\n", exit_code=0, duration_s=0.001)
    run_json = result.wire_json(False).encode()
    exec_json = ExecResult(stdout_bytes=b"out\n", stderr_bytes=b"", exit_code=0).wire_json(False)
    figures = {
        "create_request_to_spec_us": per_call_us(
            lambda: wire.CreateSandboxRequest.model_validate_json(CREATE).spec()),
        "record_made_and_dumped_us": per_call_us(lambda: record().model_dump_json()),
        "sdk_parse_sandbox_us": per_call_us(lambda: wire.SandboxOut.model_validate_json(sandbox_json)),
        "server_command_reply_us": per_call_us(lambda: result.wire_json(False), 20000),
        "sdk_parse_command_reply_us": per_call_us(lambda: CommandResult.model_validate_json(run_json), 20000),
        "sdk_parse_exec_reply_us": per_call_us(lambda: ExecResult.model_validate_json(exec_json), 20000),
    }
    print(f"{'measure':45} {'us':>8}")
    for name, value in figures.items():
        print(f"{name:45} {value:8.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.node(), "time": time.time(), **figures}, indent=1))


if __name__ == "__main__":
    main()
