"""Soak the server: create, use and remove sandboxes through the SDK for a while, sampling the
server process's memory (RSS) and open fds.

    python bench/soak_server.py --seconds 1800 [--clients 8]

Starts `tumbler serve` in a subprocess on 127.0.0.1 (auth on, its own registry); prints a table,
writes bench/results/soak_server.json and docs/soak_server.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "server"), str(ROOT / "tests")]

import httpx  # noqa: E402
from server_process import TOKEN, ServerProcess  # noqa: E402
from tumbler.sdk import Client, Sandbox  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak_server.json"
FIGURE = ROOT / "docs" / "soak_server.png"


def server_sample(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of process `pid`."""
    with open(f"/proc/{pid}/status") as fh:
        rss = int(next(line for line in fh if line.startswith("VmRSS:")).split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def server_memory(url: str) -> dict[str, float]:
    """The server's own account of its memory, from /metrics (tumbler.memstats), in KiB."""
    text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {TOKEN}"},
                     timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith("tumbler_process_memory_bytes{"):
            part = line.split('part="')[1].split('"')[0]
            found[f"{part}_kb"] = float(line.split()[-1]) / 1024
        elif line.startswith("tumbler_python_allocated_blocks "):
            found["py_blocks"] = float(line.split()[-1])
    return found


def one_life(client: Client, n: int) -> None:
    with Sandbox("debian", client=client, memory="256m") as sb:
        assert sb.run(f"echo {n}").output == f"{n}\n"
        sb.write_file("/root/data", os.urandom(4096))
        assert len(sb.read_bytes("/root/data")) == 4096
        if n % 4 == 0:
            sb.reset()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--clients", type=int, default=8, help="sandboxes in use at once")
    args = ap.parse_args()
    samples, errors, count = [], [], [0]
    with tempfile.TemporaryDirectory(prefix="tumbler-soak-") as state:
        srv = ServerProcess(Path(state)).start()
        stop_at = time.monotonic() + args.seconds

        def worker(k: int) -> None:
            with Client(srv.url, TOKEN) as client:
                n = k
                while time.monotonic() < stop_at:
                    try:
                        one_life(client, n)
                        count[0] += 1
                    except Exception as exc:  # counted and reported, the loop goes on
                        errors.append(f"{type(exc).__name__}: {exc}")
                    n += args.clients
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        began = time.monotonic()
        while any(t.is_alive() for t in threads):
            rss, fds = server_sample(srv.proc.pid)
            samples.append({"t": time.monotonic() - began, "rss_kb": rss, "fds": fds,
                            "sandboxes": count[0]})
            if len(samples) % 5 == 1:   # a scrape is itself a request: not every second
                samples[-1].update(server_memory(srv.url))
            print(f"\r{samples[-1]['t']:7.0f} s {count[0]:6d} sandboxes  RSS {rss / 1024:6.1f} MiB"
                  f"  fds {fds:4d}", end="", flush=True)
            time.sleep(1.0)
        for t in threads:
            t.join()
        left = Client(srv.url, TOKEN).list()
        srv.terminate()
    print()
    q = max(1, len(samples) // 4)
    rss0, rss1 = (statistics.median(s["rss_kb"] for s in part) / 1024 for part in (samples[:q], samples[-q:]))
    fd0, fd1 = (statistics.median(s["fds"] for s in part) for part in (samples[:q], samples[-q:]))
    print(f"{args.seconds:.0f} s, {count[0]} sandboxes, {len(errors)} errors, "
          f"server RSS {rss0:.1f} -> {rss1:.1f} MiB, fds {fd0:.0f} -> {fd1:.0f}, {len(left)} left listed")
    RESULTS.write_text(json.dumps({"seconds": args.seconds, "clients": args.clients,
                                   "sandboxes": count[0], "errors": errors[:20],
                                   "left_listed": len(left), "samples": samples}, indent=1))
    _figure(samples, count[0])
    return 0


def _figure(samples: list[dict], total: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s["t"] / 60 for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    ax1.plot(t, [s["rss_kb"] / 1024 for s in samples], label="RSS")
    scraped = [s for s in samples if "heap_in_use_kb" in s]
    for key, label in (("heap_in_use_kb", "C heap in use"), ("heap_free_kb", "C heap held free")):
        ax1.plot([s["t"] / 60 for s in scraped], [s[key] / 1024 for s in scraped], label=label)
    ax1.legend(loc="center right", fontsize="small")
    ax1.set_ylabel("server memory (MiB)")
    ax1.set_ylim(bottom=0)
    ax2.plot(t, [s["fds"] for s in samples], color="tab:orange")
    ax2.set_ylabel("server open fds")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("minutes")
    fig.suptitle(f"server soak: {total} sandboxes through the SDK")
    fig.tight_layout()
    fig.savefig(FIGURE)


if __name__ == "__main__":
    sys.exit(main())
