"""Local file system helpers shared by the local storage and its writers: staging
names, OSError → StorageError mapping, no-replace moves, directory fsyncs."""

from __future__ import annotations

import errno
import os

from .._errors import PathBlocked, SourceNotFound, StorageError

TEMP_PREFIX = ".streamer-"
TEMP_SUFFIX = ".part"


def temp_name(tag: str) -> str:
    """The staging file name a writer tagged ``tag`` uses beside its destination."""
    return f"{TEMP_PREFIX}{tag}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


#: Errors that mean something at the destination is in the way (a 409, not a 5xx).
_BLOCKED = frozenset({errno.EEXIST, errno.EISDIR, errno.ENOTDIR})


def os_error(exc: OSError, path: str) -> StorageError:
    """Map an OSError to a StorageError whose code names the errno."""
    if exc.errno == errno.ENOENT:
        return SourceNotFound(f"{path}: no such file or directory")
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    if exc.errno in _BLOCKED:
        return PathBlocked(f"{path}: {exc.strerror or exc}", code=name)
    return StorageError(f"{path}: {exc.strerror or exc}", code=name)


def move_no_replace(source: str, target: str) -> bool:
    """Move ``source`` to ``target`` unless ``target`` exists; False (nothing moved) if it does.

    Atomic through link + unlink; on filesystems without hard links it falls back
    to check-then-rename, which is best effort.
    """
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(target):
            return False
        os.rename(source, target)
        return True
    os.unlink(source)
    return True


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
