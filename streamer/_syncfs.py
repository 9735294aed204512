"""One flush for a whole filesystem (``syncfs``), used only where it is trustworthy.

``syncfs(fd)`` writes out every dirty page and inode of ``fd``'s filesystem in one
journal commit: many small files made durable for the price of one ``fsync``. It
can only replace per-file ``fsync`` calls where it reports a failed writeback:
Linux before 5.8 returns 0 even when writeback failed with EIO, and FUSE or
network filesystems may not pass it on to the server at all (``fsync`` they do).
:func:`sync_filesystem` therefore flushes only on Linux >= 5.8 and on the local
filesystems listed in :data:`TRUSTED_FILESYSTEMS`, and otherwise says it did
nothing, so that the caller falls back to its per-file ``fsync`` calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from typing import Final

#: ``statfs.f_type`` magic numbers of filesystems whose syncfs is a real flush.
TRUSTED_FILESYSTEMS: Final = frozenset(
    {
        0xEF53,  # ext2/3/4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0x01021994,  # tmpfs (nothing to flush: memory only)
    }
)
_MIN_KERNEL: Final = (5, 8)  # syncfs reports writeback errors from here on

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)
if _syncfs is not None:
    _syncfs.argtypes = [ctypes.c_int]
_fstatfs = getattr(_libc, "fstatfs", None)


def kernel_reports_errors(release: str | None = None) -> bool:
    """Whether this kernel's (or ``release``'s, e.g. ``"5.10.0-23-amd64"``) syncfs
    reports writeback errors."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return match is not None and (int(match[1]), int(match[2])) >= _MIN_KERNEL


_KERNEL_OK: Final = os.uname().sysname == "Linux" and kernel_reports_errors()


def filesystem_type(fd: int) -> int | None:
    """``statfs.f_type`` of ``fd``'s filesystem (``None`` when it cannot be read)."""
    if _fstatfs is None:
        return None
    buffer = ctypes.create_string_buffer(256)  # struct statfs (120 bytes on x86_64)
    if _fstatfs(fd, buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def trusted(fd: int) -> bool:
    """Whether :func:`sync_filesystem` would flush ``fd``'s filesystem."""
    return _syncfs is not None and _KERNEL_OK and filesystem_type(fd) in TRUSTED_FILESYSTEMS


def sync_filesystem(fd: int) -> bool:
    """Flush ``fd``'s whole filesystem to stable storage if syncfs can be trusted there
    (True), else do nothing (False: fsync each file instead). Raises OSError when
    the flush fails."""
    if not trusted(fd):
        return False
    assert _syncfs is not None
    if _syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return True
