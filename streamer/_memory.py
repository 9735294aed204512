"""Keep the daemon's resident memory flat: fewer glibc malloc arenas.

Chunks are allocated by worker threads (reads) and freed by others (after the
write); glibc gives every thread that allocates its own arena (up to 8 per
core) and keeps freed memory in each, so RSS grows with the number of threads
rather than with the data in flight. Two arenas are plenty for a process whose
big buffers live briefly. Chunks of 1 MiB and more are always mmapped, so
freeing one returns it to the system at once (glibc would otherwise raise its
mmap threshold after the first free and keep chunks in the heap). Must run
before the first worker thread starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold; False where that is not
    possible (non-glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(
            libc.mallopt(M_ARENA_MAX, arenas) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
