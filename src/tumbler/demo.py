"""`make demo`: sandboxes at work, with timings (until the trainer exists to show instead)."""
from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.table import Table

from tumbler.local import LocalSandbox
from tumbler.runtime.process import ProcessRuntime

console = Console()


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


def main(count: int = 50) -> None:
    rt = ProcessRuntime()
    _step("a sandbox: cold start to first command")
    t0 = time.perf_counter()
    sb = LocalSandbox(image="debian", runtime=rt)
    first = sb.run("echo ready")
    console.print(f"sandbox {sb.id} answered {first.output.strip()!r} after {_ms(time.perf_counter() - t0)}")

    _step("a persistent bash session")
    for cmd in ("cd /tmp && export GREETING=hello", "echo $GREETING from $PWD", "false", "echo $?"):
        r = sb.run(cmd)
        console.print(f"$ {cmd}\n{r.output}[dim](exit {r.exit_code})[/dim]")
    rtts = []
    for _ in range(500):
        t = time.perf_counter()
        sb.run("echo hi")
        rtts.append(time.perf_counter() - t)
    console.print(f"`echo hi` round trip over 500 runs: p50 {_ms(statistics.median(rtts))}")
    r = sb.run("sleep 60", timeout=0.3)
    console.print(f"`sleep 60` with a 0.3 s timeout: timed_out={r.timed_out}; "
                  f"next command: {sb.run('echo still alive').output.strip()!r}")

    _step("isolation")
    uid_map = sb.read_file("/proc/self/uid_map").split()
    console.print(f"inside: {sb.run('id').output.strip()}; uid 0 is host uid {uid_map[1]}")
    procs = sb.run("ps -eo comm=").output.split()
    console.print(f"processes it sees: {procs}")
    console.print(f"network interfaces: {sb.run('ls /sys/class/net').output.split()}")
    console.print(f"host's /work visible: {sb.run('test -e /work && echo yes || echo no').output.strip()}")

    _step("reset to the pristine image")
    sb.run("rm -rf /usr/bin/git && echo scribble > /root/notes && sleep 1000 &")
    t = time.perf_counter()
    sb.reset()
    after = sb.run("ls /usr/bin/git /root/notes 2>&1; pgrep -c sleep")
    console.print(f"reset + first command: {_ms(time.perf_counter() - t)}\n{after.output}")
    sb.remove()

    _step(f"{count} sandboxes at once")
    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        boxes = list(pool.map(lambda i: LocalSandbox(image="debian", runtime=rt,
                                                     hostname=f"box{i}"), range(count)))
        names = list(pool.map(lambda b: b.run("hostname").output.strip(), boxes))
        ready = time.perf_counter() - t
        stats = [b.stats() for b in boxes]
        list(pool.map(lambda b: b.remove(), boxes))
    mem = statistics.median(s.memory_bytes for s in stats) / 2**20
    table = Table("sandboxes", "all answered after", "memory per idle sandbox (median)", "all removed after")
    table.add_row(str(len(set(names))), _ms(ready), f"{mem:.1f} MiB", _ms(time.perf_counter() - t - ready))
    console.print(table)
    left = [p for p in rt.paths.sandboxes.iterdir() if p.name in {b.id for b in boxes}]
    console.print(f"left behind after removal: {len(left)} directories")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
