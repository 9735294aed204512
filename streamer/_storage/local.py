"""Local directory storage: rooted, no symlink escapes, temp + fsync + atomic rename."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat as stat_mod
from collections.abc import AsyncIterator
from io import FileIO

import trio

from .. import _paths
from .._concurrency import open_nursery
from .._errors import SOURCE_CHANGED, InvalidPath, SourceNotFound, StorageError
from .base import Conflict, Entry, FileDigest, Landed, Pinned
from .batches import BatchedCalls
from .groupcommit import GroupCommit
from .localfs import is_temp_name, os_error, temp_name
from .localwriter import LocalWriter

__all__ = ["LocalStorage", "LocalWriter", "is_temp_name", "temp_name"]

_HASH_CHUNK = 1 << 20
#: Big files are copied to local disk by ranges of this size, this many at a time
#: (:class:`~streamer._storage.base.RangedSource`): 16 MiB of buffers per file.
RANGE_SIZE = 4 << 20
RANGES_IN_FLIGHT = 4


class LocalStorage:
    """A directory on this machine, addressed by cleaned relative paths.

    Every path is resolved (following symlinks) and must stay inside the root;
    a path that resolves outside raises :class:`InvalidPath`. Walks do not follow
    symlinks and never list staging files.
    """

    kind = "local"
    range_size = RANGE_SIZE
    ranges_in_flight = RANGES_IN_FLIGHT

    def __init__(self, location_id: str, root: str | os.PathLike[str]) -> None:
        self.location_id = location_id
        self.root = os.path.realpath(root)
        self.group = GroupCommit()
        """Commits of small files written whole share their flushes (see groupcommit)."""
        self.opens = BatchedCalls()
        """Reads' opens (with their first chunk) share thread hops (see batches)."""

    # -- paths -------------------------------------------------------------

    def resolve(self, path: str) -> str:
        """Absolute OS path for the cleaned relative ``path``, checked to stay inside.

        Blocking (one ``lstat`` per existing component): call it from a worker thread.
        The root is already real, so only the relative part is walked; the first
        symlink met hands over to ``realpath`` and the containment check.
        """
        return self._walk(path)[0]

    def _walk(self, path: str) -> tuple[str, int | None]:
        """:meth:`resolve`, with the mode of what the path names (``None``: nothing
        there yet; known from the walk's own ``lstat``, or one ``stat`` after a symlink)."""
        current = self.root
        parts = path.split("/") if path else []
        mode = stat_mod.S_IFDIR
        for i, part in enumerate(parts):
            candidate = os.path.join(current, part)
            try:
                mode = os.lstat(candidate).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return os.path.join(candidate, *parts[i + 1 :]), None
            if stat_mod.S_ISLNK(mode):
                real = self._resolve_links(os.path.join(candidate, *parts[i + 1 :]), path)
                try:
                    return real, os.stat(real).st_mode
                except (FileNotFoundError, NotADirectoryError):
                    return real, None
            current = candidate
        return current, mode

    def _resolve_links(self, joined: str, path: str) -> str:
        real = os.path.realpath(joined)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise InvalidPath(f"path {path!r} leads outside location {self.location_id!r}")
        return real

    # -- reading -----------------------------------------------------------

    async def stat(self, path: str) -> Entry | None:
        try:
            st = await trio.to_thread.run_sync(lambda: os.stat(self.resolve(path)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise os_error(exc, path) from exc
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        if not (is_dir or stat_mod.S_ISREG(st.st_mode)):
            raise SourceNotFound(f"{path}: not a regular file or directory")
        return Entry(path, 0 if is_dir else st.st_size, st.st_mtime_ns, is_dir)

    async def walk(self, path: str) -> list[Entry]:
        return await trio.to_thread.run_sync(self._walk_sync, path)

    def _walk_sync(self, path: str) -> list[Entry]:
        real = self.resolve(path)
        if not os.path.isdir(real):
            raise SourceNotFound(f"{path or '/'}: not a directory")
        found: list[Entry] = []
        stack = [(real, path)]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError as exc:
                raise os_error(exc, rel) from exc
            for entry in entries:
                child = _paths.join(rel, entry.name)
                if entry.is_symlink() or is_temp_name(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, child))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found.append(Entry(child, st.st_size, st.st_mtime_ns))
        found.sort(key=lambda e: e.path)
        return found

    async def read(
        self, path: str, *, chunk_size: int, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Chunks of the file's bytes ``start .. end - 1`` (``end=None``: to its end); the
        open and the first read share one thread hop, batched with other reads' opens
        (:attr:`opens`): a small file is read in one call among many. A short read
        ends the stream (regular files only return short at EOF)."""

        def open_and_read() -> tuple[FileIO, bytes]:
            f = self._open_source(path)
            if start:
                f.seek(start)
            return f, f.read(want())

        remaining = None if end is None else max(0, end - start)

        def want() -> int:
            return chunk_size if remaining is None else min(chunk_size, remaining)

        try:
            f, chunk = await self.opens.run_sync(open_and_read)
        except OSError as exc:
            raise os_error(exc, path) from exc
        try:
            while chunk:
                asked = want()
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
                if len(chunk) < asked or remaining == 0:
                    return
                chunk = await trio.to_thread.run_sync(f.read, want())
        finally:
            f.close()

    def _open_source(self, path: str) -> FileIO:
        """Blocking (call it in a worker thread): the regular file at ``path`` open for
        reading; ``SourceNotFound`` if it is anything else, ``OSError`` as raised."""
        f = _open_regular(self.resolve(path))
        if f is None:
            raise SourceNotFound(f"{path}: not a regular file")
        return f

    async def open_positional(self, path: str) -> LocalFile:
        """The regular file at ``path``, open to be read at any offset into a buffer."""
        try:
            f = await trio.to_thread.run_sync(self._open_source, path)
        except OSError as exc:
            raise os_error(exc, path) from exc
        return LocalFile(f, path)

    async def pin(self, path: str) -> Pinned:
        """The regular file's size and version: its inode, size and mtime
        (:class:`~streamer._storage.base.RangedSource`)."""

        def look() -> os.stat_result:
            with self._open_source(path) as f:
                return os.fstat(f.fileno())

        try:
            st = await trio.to_thread.run_sync(look)
        except OSError as exc:
            raise os_error(exc, path) from exc
        return Pinned(st.st_size, _version(st))

    async def fetch_range(
        self, path: str, *, start: int, version: str, into: memoryview, landed: Landed
    ) -> None:
        """Read bytes ``[start, start + len(into))`` of ``path`` into ``into`` in one thread
        hop; ``SourceChanged`` unless the file is still ``version`` before and after the
        read and holds them all."""

        def read() -> None:
            with self._open_source(path) as f:
                fd = f.fileno()
                _check_version(fd, version, path)
                filled = 0
                while filled < len(into):
                    count = os.preadv(fd, [into[filled:]], start + filled)
                    if not count:
                        break
                    filled += count
                _check_version(fd, version, path)  # short only if it shrank: changed

        try:
            await trio.to_thread.run_sync(read)
        except OSError as exc:
            raise os_error(exc, path) from exc
        await landed(len(into))

    async def file_digest(self, path: str, *, part_size: int | None = None) -> FileDigest:
        """The SHA-256 of the regular file at ``path`` and, with ``part_size``, of each
        of its ``part_size`` slices, each hashed in a worker thread of its own (on two
        cores the parts' digests add no wait) that stops within one chunk when the
        caller is cancelled (a big file takes seconds: a cancelled job must not wait)."""
        whole: list[str] = []
        parts: list[str] = []

        async def hash_into(digests: list[str], slice_size: int | None) -> None:
            digests += await trio.to_thread.run_sync(self._slice_sha256s, path, slice_size)

        try:
            async with open_nursery() as nursery:
                nursery.start_soon(hash_into, whole, None)
                if part_size is not None:
                    nursery.start_soon(hash_into, parts, part_size)
        except OSError as exc:
            raise os_error(exc, path) from exc
        return FileDigest(whole[0], tuple(parts))

    def _slice_sha256s(self, path: str, slice_size: int | None) -> list[str]:
        """In a worker thread: the SHA-256 (hex) of each ``slice_size`` slice of the file
        (the last may be shorter; none for an empty file), or of the whole file when
        ``slice_size`` is ``None``."""
        digests: list[str] = []
        hasher = hashlib.sha256()
        left = slice_size  # bytes of the current slice still to hash
        buffer = memoryview(bytearray(_HASH_CHUNK))
        with self._open_source(path) as f:
            while count := f.readinto(buffer if left is None else buffer[: min(left, _HASH_CHUNK)]):
                hasher.update(buffer[:count])
                if left is not None:
                    left -= count
                    if not left:
                        digests.append(hasher.hexdigest())
                        hasher, left = hashlib.sha256(), slice_size
                trio.from_thread.check_cancelled()
        if left is None or left != slice_size:  # the whole file, or a shorter last slice
            digests.append(hasher.hexdigest())
        return digests

    # -- writing -----------------------------------------------------------

    async def open_writer(self, path: str, *, conflict: Conflict, tag: str) -> LocalWriter:
        return await self._writer(path, conflict, tag, resume=False)

    async def open_resumable(
        self, path: str, *, conflict: Conflict, tag: str, resume: bool
    ) -> LocalWriter:
        """A writer whose staged bytes outlive it: ``resume`` continues the temp file a
        previous writer with the same ``tag`` left (:meth:`LocalWriter.suspend`), at
        :attr:`LocalWriter.offset`; otherwise it starts empty. ``tag`` must be
        deterministic for the object being written, so a later request finds it again."""
        return await self._writer(path, conflict, tag, resume=resume)

    async def staged_size(self, path: str, *, tag: str) -> int:
        """Bytes a writer tagged ``tag`` has staged for ``path`` (0 if there is no temp)."""

        def size() -> int:
            temp = os.path.join(os.path.dirname(self.resolve(path)), temp_name(tag))
            try:
                st = os.lstat(temp)
            except (FileNotFoundError, NotADirectoryError):
                return 0
            return st.st_size if stat_mod.S_ISREG(st.st_mode) else 0

        return await trio.to_thread.run_sync(size)

    async def _writer(
        self, path: str, conflict: Conflict, tag: str, *, resume: bool
    ) -> LocalWriter:
        if not path:
            raise InvalidPath("cannot write to the location root itself")
        writer = LocalWriter(self, path, tag, conflict)
        if resume:  # a resumable writer's offset is known from the start
            await writer.open(resume=True)
        return writer

    def staging_path(self, path: str, tag: str) -> str:
        """The temp file's path in the directory ``path`` goes to, that directory made
        (blocking: from a worker thread). Only the directory is resolved: the writer
        publishes by renaming the temp within it, which replaces a symlink at the
        final name rather than writing through it."""
        parent, mode = self._walk(path.rpartition("/")[0])
        if mode is not None and not stat_mod.S_ISDIR(mode):
            raise FileExistsError(errno.EEXIST, "a file is in the way", parent)
        if mode is None:
            os.makedirs(parent, exist_ok=True)
            # A symlink could have raced in between resolve() and makedirs().
            if os.path.realpath(parent) != parent:
                raise InvalidPath(f"path {path!r} changed while being resolved")
        return os.path.join(parent, temp_name(tag))

    async def sweep(self, path: str, *, tag: str) -> None:
        def remove() -> None:
            temp = os.path.join(os.path.dirname(self.resolve(path)), temp_name(tag))
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(temp)

        await trio.to_thread.run_sync(remove)


class LocalFile:
    """An open regular file read by offset (``pread``), straight into the caller's
    buffer; a :class:`~streamer._storage.base.PositionalFile`. Blocking: call
    :meth:`readinto` from a worker thread."""

    def __init__(self, f: FileIO, path: str) -> None:
        self._file = f
        self._path = path

    def readinto(self, offset: int, buffer: memoryview) -> int:
        try:
            return os.preadv(self._file.fileno(), [buffer], offset)
        except OSError as exc:
            raise os_error(exc, self._path) from exc

    def close(self) -> None:
        self._file.close()


def _version(st: os.stat_result) -> str:
    """A tag that changes whenever the file at a path is replaced, resized or written."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _check_version(fd: int, version: str, path: str) -> None:
    if _version(os.fstat(fd)) != version:
        raise StorageError(f"{path} changed while being copied", code=SOURCE_CHANGED)


def _open_regular(real: str) -> FileIO | None:
    """Open a regular file for reading; ``None`` for anything else (FIFOs, devices
    and directories would hang or never end). O_NONBLOCK keeps a FIFO from
    blocking the open itself; it has no effect on regular files."""
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb", buffering=0)
