"""Start disk writeback early so the final fsync of a big file has little left to do.

Without this the kernel keeps a freshly written file in the page cache until the
commit's fsync, which then writes all of it while the copy waits: the disk idles
during the copy and the copy idles during the flush. ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE`` starts writeback of what was written so far without
waiting for it, so writing and flushing overlap. Linux only; a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util

SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_EVERY = 16 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


class Writeback:
    """Tracks bytes written to one fd and starts their writeback every 16 MiB."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._written = 0
        self._flushed = 0

    def wrote(self, count: int) -> None:
        """Record ``count`` more bytes written; maybe start their writeback (never blocks
        on the disk)."""
        self._written += count
        if self._written - self._flushed < WRITEBACK_EVERY:
            return
        self.start(self._flushed, self._written - self._flushed)
        self._flushed = self._written

    def start(self, offset: int, count: int) -> None:
        """Start writeback of bytes ``offset .. offset + count - 1`` (never blocks on the disk)."""
        if _sync_file_range is not None:
            _sync_file_range(self._fd, offset, count, SYNC_FILE_RANGE_WRITE)
