"""Running hashes of staged result uploads, kept between the requests of one upload.

An upload in several requests (a client that sends its checksum with its last
bytes, or one resuming after a cut) needs the SHA-256 of the bytes staged so far.
Reading them back from disk costs a second pass over the file; the hash the
previous request computed while writing them is the same, *if the file was not
touched since*. :class:`StagedHashes` keeps that hash only for a request that
ended cleanly, and hands it out only while the staged file is provably the one
that request left:

* :meth:`~StagedHashes.keep` stamps the closed staged file with a modification
  time long past (unique per keep) and records its inode, size and times;
* :meth:`~StagedHashes.take` gives the hash back only if the file still has all
  of them (any write sets the modification time to now; a replaced file has
  another inode), then sets its modification time to now again. Anything else
  (another process, a restart, an error) means None: hash the file from disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass

import trio

from .._storage.local import LocalStorage, temp_name

_PAST_NS = 10**18  # stamps fall before 2001-09-09: no write in this century makes one


@dataclass(frozen=True, slots=True)
class _Kept:
    path: str
    size: int
    identity: tuple[int, int, int, int]  # inode, device, mtime_ns, ctime_ns
    sha256: hashlib._Hash


def staged_file(storage: LocalStorage, path: str, tag: str) -> str:
    """The OS path of the file a writer tagged ``tag`` stages for ``path`` (blocking:
    call it in a thread)."""
    return os.path.join(os.path.dirname(storage.resolve(path)), temp_name(tag))


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns


class StagedHashes:
    """Per job: the staged file (OS path), its length and the SHA-256 of its bytes."""

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}

    async def keep(self, job_id: str, path: str, size: int, sha256: hashlib._Hash) -> None:
        """Remember ``sha256`` (of the ``size`` bytes now in the closed file ``path``)."""

        def stamp() -> _Kept | None:
            try:
                os.utime(path, ns=(secrets.randbelow(_PAST_NS), secrets.randbelow(_PAST_NS)))
                st = os.lstat(path)
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                return None
            return _Kept(path, size, _identity(st), sha256)

        self.forget(job_id)
        kept = await trio.to_thread.run_sync(stamp)
        if kept is not None:
            self._kept[job_id] = kept

    async def take(self, job_id: str, path: str, size: int) -> hashlib._Hash | None:
        """The hash kept for ``job_id`` if ``path`` is still that file with ``size``
        bytes, untouched; None otherwise. Forgets it either way."""
        kept = self._kept.pop(job_id, None)
        if kept is None or kept.path != path or kept.size != size:
            return None

        def check() -> bool:
            try:
                st = os.lstat(path)
            except OSError:
                return False
            if _identity(st) != kept.identity or st.st_size != size:
                return False
            with contextlib.suppress(OSError):
                os.utime(path)  # now: the stamp must never reach the published file
            return True

        return kept.sha256 if await trio.to_thread.run_sync(check) else None

    def forget(self, job_id: str) -> None:
        self._kept.pop(job_id, None)
