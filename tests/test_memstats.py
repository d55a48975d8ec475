"""tumbler.memstats: what RSS is made of, and handing freed heap back (glibc, as here). Each
check runs in a fresh interpreter: the test process's own heap (tens of MiB held free after
the rest of the suite) would absorb the allocations."""
import subprocess
import sys

PROLOGUE = """
from tumbler import memstats
CHUNK, CHUNKS = 16 << 10, 4096     # under glibc's mmap threshold: from the heap; 64 MiB in all
MIB64 = CHUNK * CHUNKS >> 10
"""


def run_fresh(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROLOGUE + code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_heap_in_use_and_rss_count_live_data():
    run_fresh("""
before = memstats.read()
chunks = [bytearray(CHUNK) for _ in range(CHUNKS)]
during = memstats.read()
assert during.heap_in_use_kb - before.heap_in_use_kb >= MIB64 * 0.9, (before, during)
assert during.rss_kb - before.rss_kb >= MIB64 * 0.9, (before, during)
assert during.py_blocks > before.py_blocks
""")


def test_trim_returns_freed_holes_to_the_kernel():
    run_fresh("""
chunks = [bytearray(CHUNK) for _ in range(CHUNKS)]
keep = chunks[::8]        # pins the heap: the rest become holes glibc keeps (no top to trim)
del chunks
held = memstats.read()
assert held.heap_free_kb >= MIB64 * 0.7, held
assert memstats.read().rss_kb >= held.rss_kb - 1024, "freed holes left RSS without a trim"
assert memstats.trim() is True
after = memstats.read()
assert held.rss_kb - after.rss_kb >= MIB64 * 0.5, (held, after)
""")


BIG_BLOCKS = """
for _ in range(3):                # a big block freed and made again, small ones made between
    block = bytearray(2 << 20)
    small = [bytearray(100) for _ in range(10)]
    del block
"""


def test_untuned_glibc_keeps_a_freed_big_block():
    # The control for the next test: what `tune` is there to stop still happens here.
    run_fresh(BIG_BLOCKS + "assert memstats.read().heap_free_kb >= 1536, memstats.read()")


def test_tune_gives_big_blocks_back_when_freed():
    run_fresh("assert memstats.tune() is True\n" + BIG_BLOCKS +
              "assert memstats.read().heap_free_kb < 1024, memstats.read()")
