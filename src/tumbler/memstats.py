"""What this process's memory is made of: RSS from /proc, the C heap from glibc's mallinfo2, and
Python's live object blocks. Soaks sample it and the server exports it in /metrics, so that RSS
growth can be told apart: live data (heap in use or Python blocks grow) or allocator retention
(RSS grows while they stay level)."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2():
    """glibc's mallinfo2 (2.33+), or None on another libc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    fn.argtypes = []
    return fn


_mallinfo2 = _load_mallinfo2()


@dataclass(frozen=True)
class MemoryStats:
    rss_kb: int            # resident set, all of it
    heap_in_use_kb: int    # malloc'd and not freed (brk heap and arenas, plus mmap'd blocks); -1 unknown
    heap_free_kb: int      # held by malloc but free: retention and fragmentation; -1 unknown
    py_blocks: int         # Python objects and buffers alive (sys.getallocatedblocks)


def read() -> MemoryStats:
    with open("/proc/self/status") as fh:
        rss = int(next(line for line in fh if line.startswith("VmRSS:")).split()[1])
    if _mallinfo2 is None:
        in_use = free = -1
    else:
        info = _mallinfo2()
        in_use = (info.uordblks + info.hblkhd) >> 10
        free = info.fordblks >> 10
    return MemoryStats(rss, in_use, free, sys.getallocatedblocks())


def _load_malloc_trim():
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_size_t]
    return fn


_malloc_trim = _load_malloc_trim()


def trim() -> bool:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim(0), every arena).

    glibc keeps what a thread freed in that thread's arena, and returns it only from the top of
    a heap: a long-lived service that makes and frees objects on many threads sees its RSS rise
    in steps while the heap in use stays level (measured in the soaks, docs/RELIABILITY.md).
    Costs about a millisecond for a heap of tens of MiB; False where there is no glibc."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False
