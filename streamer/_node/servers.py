"""Server directories under ``servers.root``: staging, atomic commit, sweeping, hooks.

A server is the directory ``servers.root/<uuid>``. An incoming archive is
extracted into ``servers.root/.<uuid>.staging-<job>`` (same filesystem, so the
move is a rename) and committed with :func:`commit`: staging and the live
directory are swapped atomically (``renameat2(RENAME_EXCHANGE)``; where that
is unavailable, two renames with the old tree parked aside for an instant),
the parent directory is synced and the previous tree deleted. The extraction
already synced every file (:class:`~streamer._pipeline.unpack.ExtractSink`),
so nothing is visible under ``<uuid>`` until every byte is on disk and the
checksum matched. Leftovers of a crash (``.…staging-…``, ``.…old-…``) are
removed by :func:`sweep` at start.

Hooks are operator commands run with the server's UUID (``before_archive``
stops the service that owns the directory, ``after_extract`` starts it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import stat
import subprocess
from typing import Final

import trio

from .._errors import NotFound, StreamerError
from .tokens import is_uuid

log = logging.getLogger(__name__)

_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2
_STAGING: Final = ".staging-"
_OLD: Final = ".old-"
HOOK_OUTPUT_LIMIT: Final = 2000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class HookFailed(StreamerError):
    status_code = 500
    code = "hook_failed"


def server_dir(root: str, uuid: str) -> str:
    """``root/<uuid>``; 404 unless ``uuid`` is a UUID (so it is a plain name, no path)."""
    if not is_uuid(uuid):
        raise NotFound(f"no server {uuid[:80]!r}: server ids are UUIDs", code="server_not_found")
    return os.path.join(root, uuid.lower())


def existing_server_dir(root: str, uuid: str) -> str:
    """:func:`server_dir`, 404 unless it is a directory (not a symlink to one)."""
    path = server_dir(root, uuid)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = 0
    if not stat.S_ISDIR(mode):
        raise NotFound(f"no server directory for {uuid}", code="server_not_found")
    return path


def staging_dir(root: str, uuid: str, job_id: str) -> str:
    return os.path.join(root, f".{uuid.lower()}{_STAGING}{job_id}")


def commit(staging: str, target: str, *, durable: bool = True) -> None:
    """Make ``staging`` the tree at ``target`` atomically; delete what was there.

    Blocking (run it in a thread). With ``durable`` the rename itself is synced
    (the files must already be).
    """
    parent, name = os.path.split(target)
    old = os.path.join(parent, f".{name}{_OLD}{os.path.basename(staging)}")
    if _exchange(staging, target):
        # staging now holds the previous tree.
        if durable:
            _fsync_dir(parent)
        remove_tree(staging)
        return
    try:
        os.rename(target, old)
    except FileNotFoundError:
        old = ""
    os.rename(staging, target)
    if durable:
        _fsync_dir(parent)
    if old:
        remove_tree(old)


def remove_tree(path: str) -> None:
    """Delete the tree at ``path`` if it exists (a symlink itself, never its target).
    Blocking."""
    if os.path.islink(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def sweep(root: str) -> list[str]:
    """Remove staging and parked trees left by an interrupted run; return their names."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        if name.startswith(".") and (_STAGING in name or _OLD in name):
            remove_tree(os.path.join(root, name))
            removed.append(name)
    return removed


def estimate_tar_size(root: str) -> int:
    """Roughly the size of the tar stream of ``root``: headers, content, padding."""
    total = 1024
    for dirpath, dirnames, filenames in os.walk(root):
        total += 512 * (len(dirnames) + len(filenames))
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += -(-st.st_size // 512) * 512
    return total


async def run_hook(
    name: str, argv: list[str], uuid: str, directory: str, *, seconds: float
) -> None:
    """Run hook ``argv + [uuid]``; raise :class:`HookFailed` on a non-zero exit or timeout.

    The environment also carries ``STREAMER_HOOK``, ``STREAMER_SERVER_UUID`` and
    ``STREAMER_SERVER_DIR``. Output is logged (its end, on failure).
    """
    if not argv:
        return
    env = {
        **os.environ,
        "STREAMER_HOOK": name,
        "STREAMER_SERVER_UUID": uuid,
        "STREAMER_SERVER_DIR": directory,
    }
    log.info("running %s hook for server %s", name, uuid)
    try:
        with trio.fail_after(seconds):
            result = await trio.run_process(
                [*argv, uuid],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
            )
    except trio.TooSlowError:
        raise HookFailed(f"{name} hook did not finish within {seconds:g}s") from None
    except OSError as exc:
        raise HookFailed(f"{name} hook could not run: {exc}") from None
    output = result.stdout.decode(errors="replace")[-HOOK_OUTPUT_LIMIT:]
    if result.returncode != 0:
        log.error("%s hook exited %d: %s", name, result.returncode, output)
        raise HookFailed(f"{name} hook exited with status {result.returncode}")
    if output.strip():
        log.info("%s hook: %s", name, output.strip())


def _exchange(a: str, b: str) -> bool:
    """Swap ``a`` and ``b`` atomically; ``False`` if ``b`` is missing or unsupported."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
