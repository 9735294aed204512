"""The local storage's writer: a temp file beside the destination, fsync, atomic rename.

A writer opens its temp file lazily. A file written whole in one :meth:`write`
of at most ``HOLD_BYTES`` (every small file a copy moves) is held in memory and,
at :meth:`commit`, written, flushed and published with other such files in one
batch (:mod:`streamer._storage.groupcommit`): one thread hop and one filesystem
flush for many files instead of three hops and a journal commit each. Anything
else (a second write, positional writes, a resumable writer) opens the temp file
and goes the single-file way: fsync, rename, fsync of the directory. Either way
the final name appears only once the bytes are durable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import _paths
from .._errors import PathBlocked, StorageError
from .._fileio import pwrite_all
from .base import Conflict
from .directio import DirectWrites
from .groupcommit import Staged
from .localfs import fsync_dir, move_no_replace, os_error
from .writeback import Writeback

if TYPE_CHECKING:
    from .local import LocalStorage

HOLD_BYTES = 1 << 20  # a first write up to this size is held for a group commit
MAX_RENAME_ATTEMPTS = 10_000
_READ_CHUNK = 1 << 20


class LocalWriter:
    """Writes to ``.streamer-<tag>.part`` beside the destination; see :class:`Writer`
    and the module docstring."""

    def __init__(self, storage: LocalStorage, path: str, tag: str, conflict: Conflict) -> None:
        self._storage = storage
        self._path = path
        self._tag = tag
        self._temp: str | None = None
        self._fd: int | None = None
        self._held: bytes | None = None
        self._ended = False
        self._conflict = conflict
        self._published = False
        self._writeback: Writeback | None = None
        self._direct: DirectWrites | None = None  # positional writes past the page cache
        self._buffered_turn = threading.Lock()  # one buffered pwrite at a time: see write_at
        self.offset = 0
        """Bytes staged so far (a resumed writer starts at what was there)."""

    async def open(self, *, resume: bool = False) -> None:
        """Create (or, ``resume``, reopen at its end) the temp file; bytes held so far
        are written to it in the same thread hop."""
        assert not self._ended, "open after commit/abort"
        held, self._held = self._held, None

        def run() -> tuple[str, int]:
            temp = self._storage.staging_path(self._path, self._tag)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags if resume else flags | os.O_TRUNC, 0o666)
            self._temp = temp  # from now on abort() removes it, should the write fail
            try:
                self.offset = os.lseek(fd, 0, os.SEEK_END) if resume else 0
                if held:
                    self._write_sync(fd, held)
            except BaseException:
                os.close(fd)
                raise
            return temp, fd

        try:
            self._temp, fd = await trio.to_thread.run_sync(run)
        except OSError as exc:
            raise os_error(exc, self._path) from exc
        self._fd, self._writeback = fd, Writeback(fd)

    async def _opened(self) -> int:
        if self._fd is None:
            await self.open()
        assert self._fd is not None
        return self._fd

    async def write(self, chunk: bytes) -> None:
        assert not self._ended, "write after commit/abort"
        if self._fd is None and self._held is None and len(chunk) <= HOLD_BYTES:
            self._held = bytes(chunk)
            self.offset = len(chunk)
            return
        if self._fd is None:
            held, self._held = self._held, None
            await self.open()
            if held:
                chunk = held + chunk
        assert self._fd is not None
        await trio.to_thread.run_sync(self._write_sync, self._fd, chunk)

    def _write_sync(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
            self.offset += written
        if self._writeback is not None:
            self._writeback.wrote(len(data))

    async def hash_staged(self, update: Callable[[bytes], object]) -> None:
        """Feed the bytes staged before this writer opened (``0 .. offset``) to
        ``update`` (e.g. a hash's), in a thread: a resumed upload's prefix is hashed
        again from disk rather than trusted."""
        assert not self._ended, "read after commit/abort"
        fd = await self._opened()
        end = self.offset

        def run() -> None:
            position = 0
            while position < end:
                piece = os.pread(fd, min(_READ_CHUNK, end - position), position)
                if not piece:
                    raise StorageError(f"{self._path}: staged bytes vanished", code="EIO")
                update(piece)
                position += len(piece)

        await trio.to_thread.run_sync(run)

    # -- positional writes (see base.PositionalWriter) ------------------------

    async def preallocate(self, size: int) -> None:
        """Size the staged file to ``size`` bytes (disk space reserved where supported)
        and ready it for :meth:`write_at`."""
        assert not self._ended, "preallocate after commit/abort"
        fd = await self._opened()

        def run() -> None:
            self._direct = self._direct or DirectWrites(fd)
            if not size:
                return
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:  # e.g. EOPNOTSUPP: a sparse file will do
                if exc.errno == errno.ENOSPC:
                    raise
                os.ftruncate(fd, size)

        try:
            await trio.to_thread.run_sync(run)
        except OSError as exc:
            raise os_error(exc, self._path) from exc

    async def write_at(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset``; callers may overlap.

        Aligned chunks go past the page cache (:mod:`.directio`), side by side.
        Others are buffered and take turns: ext4 (like most filesystems) takes the
        inode's lock for every buffered write and a second writer spins on it in
        the kernel (with four ranges in flight a 1 GiB download spent 10% of its
        CPU in ``rwsem_spin_on_owner``); their writeback starts at once, so the
        commit's fsync has little left to do."""
        assert not self._ended, "write after commit/abort"
        fd = await self._opened()
        try:
            await trio.to_thread.run_sync(self._write_at_sync, fd, data, offset)
        except OSError as exc:
            raise os_error(exc, self._path) from exc

    def _write_at_sync(self, fd: int, data: memoryview, offset: int) -> None:
        if self._direct is not None and self._direct.write(data, offset):
            return
        with self._buffered_turn:
            pwrite_all(fd, data, offset)
        assert self._writeback is not None
        self._writeback.start(offset, len(data))

    def _close_direct(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()

    async def suspend(self) -> None:
        """Fsync and close, keeping the staged bytes for a later
        :meth:`LocalStorage.open_resumable` (a cut upload); idempotent, and ``abort``
        afterwards is a no-op."""
        if self._ended:
            return
        if self._held is not None:
            await self.open()  # held bytes must reach the temp file to be resumable
        self._close_direct()
        fd, self._fd = self._fd, None
        self._ended = self._published = True  # abort leaves the temp: kept on purpose
        if fd is not None:

            def sync_close() -> None:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

            await trio.to_thread.run_sync(sync_close)

    async def commit(self, *, sha256: str, mtime_ns: int | None) -> str | None:
        del sha256  # local files carry no metadata; the engine records the hash
        assert not self._ended, "commit after commit/abort"
        try:
            if self._fd is None:
                final = await self._group_commit(mtime_ns)
            else:
                final = await trio.to_thread.run_sync(self._commit_sync, mtime_ns)
        except OSError as exc:
            raise os_error(exc, self._path) from exc
        self._published = final is not None
        return final

    async def _group_commit(self, mtime_ns: int | None) -> str | None:
        held, self._held = self._held, None
        self._ended = True
        item = Staged(
            prepare=lambda: self._storage.staging_path(self._path, self._tag),
            data=held or b"",
            mtime_ns=mtime_ns,
            publish=self._publish,
        )
        try:
            return await self._storage.group.commit(item)
        finally:
            self._temp = item.temp  # for abort, should the batch have left it

    def _commit_sync(self, mtime_ns: int | None) -> str | None:
        self._close_direct()
        fd, self._fd = self._fd, None
        self._ended = True
        assert fd is not None and self._temp is not None
        try:
            os.fsync(fd)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        final = self._publish(self._temp)
        if final is not None:
            fsync_dir(os.path.dirname(self._temp))
        return final

    def _publish(self, temp: str) -> str | None:
        """Move ``temp`` to its final name under the conflict policy (blocking). Every
        candidate name is in the directory of ``temp``, resolved when it was staged:
        a rename there replaces what has the name (a symlink included, never followed)."""
        directory = os.path.dirname(temp)

        def beside(name: str) -> str:
            return os.path.join(directory, name.rpartition("/")[2])

        if self._conflict is Conflict.OVERWRITE:
            try:
                os.replace(temp, beside(self._path))
            except IsADirectoryError:
                raise PathBlocked(
                    f"{self._path}: a directory is in the way", code="EISDIR"
                ) from None
            return self._path
        candidates = [self._path]
        if self._conflict is Conflict.RENAME:
            candidates += (_paths.renamed(self._path, n) for n in range(1, MAX_RENAME_ATTEMPTS))
        for candidate in candidates:
            if move_no_replace(temp, beside(candidate)):
                return candidate
        os.unlink(temp)
        if self._conflict is Conflict.SKIP:
            return None
        raise PathBlocked(f"{self._path}: no free name for rename", code="EEXIST")

    async def abort(self) -> None:
        self._close_direct()
        fd, self._fd = self._fd, None
        self._held = None
        self._ended = True
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self._published and self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                await trio.to_thread.run_sync(os.unlink, self._temp)
            self._published = True  # nothing left to remove
