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


def _libc_function(name: str, argtypes: list, restype=ctypes.c_int):
    """A function of glibc's malloc, or None on another libc (or a glibc without it)."""
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_mallinfo2 = _libc_function("mallinfo2", [], _MallInfo2)     # glibc 2.33+
_malloc_trim = _libc_function("malloc_trim", [ctypes.c_size_t])
_mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])


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


M_MMAP_THRESHOLD = -3          # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 128 << 10     # glibc's own starting value, pinned


def tune() -> bool:
    """For a process that lives for days (the server, a node host): every block of 128 KiB or
    more gets pages of its own (mmap) and gives them back when freed.

    glibc starts there but raises the threshold to the size of each big block that is freed, so
    from then on big blocks come from the shared heap, where the hole a freed one leaves is cut
    up by small allocations before the next one of that size wants it. CPython's table of
    interned strings is such a block (~1.9 MiB in the server): pathlib interns every sandbox id
    it sees, the dead ones leave dummies, and every few thousand sandboxes the table is rebuilt
    at the same size. Measured in the server's soak: the heap held free rose by one table
    (~1.9 MiB) at each rebuild, RSS with it, while the heap in use stayed level. Setting the
    threshold explicitly turns the raising off. False where there is no glibc."""
    if _mallopt is None:
        return False
    return bool(_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim(0), every arena).

    glibc returns freed memory on its own only from the top of a heap; what a long-lived
    service frees below that stays resident. `tune` keeps big blocks out of the heap; this
    takes back the pages of the small ones' holes. ~0.05 ms for a heap of tens of MiB; False
    where there is no glibc."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False
