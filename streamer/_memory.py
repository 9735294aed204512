"""Keep the daemon's resident memory flat: fewer glibc malloc arenas.

Chunks are allocated by worker threads (reads) and freed by others (after the
write); glibc gives every thread that allocates its own arena (up to 8 per
core) and keeps freed memory in each, so RSS grows with the number of threads
rather than with the data in flight. Two arenas are plenty for a process whose
big buffers live briefly. Must run before the first worker thread starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; False where that is not possible (non-glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
