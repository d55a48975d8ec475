"""tumbler.memstats: what RSS is made of, and handing freed heap back (glibc, as here)."""
from tumbler import memstats

CHUNK = 16 << 10          # under glibc's mmap threshold: from the heap, not mmap
CHUNKS = 4096             # 64 MiB in all


def test_heap_in_use_counts_live_data():
    before = memstats.read()
    chunks = [bytearray(CHUNK) for _ in range(CHUNKS)]
    during = memstats.read()
    assert during.heap_in_use_kb - before.heap_in_use_kb >= (CHUNK * CHUNKS >> 10) * 0.9
    assert during.rss_kb - before.rss_kb >= (CHUNK * CHUNKS >> 10) * 0.9
    del chunks


def test_trim_returns_freed_holes_to_the_kernel():
    chunks = [bytearray(CHUNK) for _ in range(CHUNKS)]
    keep = chunks[::8]        # pins the heap: the rest become holes glibc keeps (no top to trim)
    del chunks
    held = memstats.read()
    assert held.heap_free_kb >= (CHUNK * CHUNKS >> 10) * 0.7
    assert memstats.trim() is True
    after = memstats.read()
    assert held.rss_kb - after.rss_kb >= (CHUNK * CHUNKS >> 10) * 0.5
    assert len(keep) == CHUNKS // 8
