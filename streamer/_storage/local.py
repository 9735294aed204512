"""Local directory storage: rooted, no symlink escapes, temp + fsync + atomic rename."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat as stat_mod
from collections.abc import AsyncIterator, Callable
from io import FileIO

import trio

from .. import _paths
from .._errors import InvalidPath, PathBlocked, SourceNotFound, StorageError
from .base import Conflict, Entry
from .writeback import Writeback

TEMP_PREFIX = ".streamer-"
TEMP_SUFFIX = ".part"
MAX_RENAME_ATTEMPTS = 10_000
_HASH_CHUNK = 1 << 20


def temp_name(tag: str) -> str:
    """The staging file name a writer tagged ``tag`` uses beside its destination."""
    return f"{TEMP_PREFIX}{tag}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


#: Errors that mean something at the destination is in the way (a 409, not a 5xx).
_BLOCKED = frozenset({errno.EEXIST, errno.EISDIR, errno.ENOTDIR})


def _os_error(exc: OSError, path: str) -> StorageError:
    """Map an OSError to a StorageError whose code names the errno."""
    if exc.errno == errno.ENOENT:
        return SourceNotFound(f"{path}: no such file or directory")
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    if exc.errno in _BLOCKED:
        return PathBlocked(f"{path}: {exc.strerror or exc}", code=name)
    return StorageError(f"{path}: {exc.strerror or exc}", code=name)


class LocalStorage:
    """A directory on this machine, addressed by cleaned relative paths.

    Every path is resolved (following symlinks) and must stay inside the root;
    a path that resolves outside raises :class:`InvalidPath`. Walks do not follow
    symlinks and never list staging files.
    """

    kind = "local"

    def __init__(self, location_id: str, root: str | os.PathLike[str]) -> None:
        self.location_id = location_id
        self.root = os.path.realpath(root)

    # -- paths -------------------------------------------------------------

    def resolve(self, path: str) -> str:
        """Absolute OS path for the cleaned relative ``path``, checked to stay inside.

        Blocking (one ``lstat`` per existing component): call it from a worker thread.
        The root is already real, so only the relative part is walked; the first
        symlink met hands over to ``realpath`` and the containment check.
        """
        current = self.root
        parts = path.split("/") if path else []
        for i, part in enumerate(parts):
            candidate = os.path.join(current, part)
            try:
                mode = os.lstat(candidate).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return os.path.join(candidate, *parts[i + 1 :])
            if stat_mod.S_ISLNK(mode):
                return self._resolve_links(os.path.join(candidate, *parts[i + 1 :]), path)
            current = candidate
        return current

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
            raise _os_error(exc, path) from exc
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
                raise _os_error(exc, rel) from exc
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
        open and the first read share one thread hop, and a short read ends the stream
        (regular files only return short at EOF)."""

        def open_and_read() -> tuple[FileIO | None, bytes]:
            f = _open_regular(self.resolve(path))
            if f is None:
                return None, b""
            if start:
                f.seek(start)
            return f, f.read(want())

        remaining = None if end is None else max(0, end - start)

        def want() -> int:
            return chunk_size if remaining is None else min(chunk_size, remaining)

        try:
            f, chunk = await trio.to_thread.run_sync(open_and_read)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        if f is None:
            raise SourceNotFound(f"{path}: not a regular file")
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

    async def file_sha256(self, path: str) -> str:
        """SHA-256 (hex) of the regular file at ``path``, hashed in a worker thread
        that stops within one chunk when the caller is cancelled (a big file takes
        seconds: a cancelled job must not wait for it)."""

        def digest() -> str:
            f = _open_regular(self.resolve(path))
            if f is None:
                raise SourceNotFound(f"{path}: not a regular file")
            hasher = hashlib.sha256()
            buffer = bytearray(_HASH_CHUNK)
            view = memoryview(buffer)
            with f:
                while count := f.readinto(buffer):
                    hasher.update(view[:count])
                    trio.from_thread.check_cancelled()
            return hasher.hexdigest()

        try:
            return await trio.to_thread.run_sync(digest)
        except OSError as exc:
            raise _os_error(exc, path) from exc

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
        try:
            temp, fd = await trio.to_thread.run_sync(self._open_temp, path, tag, resume)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        return LocalWriter(self, path, temp, fd, conflict)

    def _open_temp(self, path: str, tag: str, resume: bool = False) -> tuple[str, int]:
        parent = os.path.dirname(self.resolve(path))
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
            # A symlink could have raced in between resolve() and makedirs().
            if os.path.realpath(parent) != parent:
                raise InvalidPath(f"path {path!r} changed while being resolved")
        temp = os.path.join(parent, temp_name(tag))
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags if resume else flags | os.O_TRUNC, 0o666)
        if resume:
            os.lseek(fd, 0, os.SEEK_END)
        return temp, fd

    async def sweep(self, path: str, *, tag: str) -> None:
        def remove() -> None:
            temp = os.path.join(os.path.dirname(self.resolve(path)), temp_name(tag))
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(temp)

        await trio.to_thread.run_sync(remove)


class LocalWriter:
    """Writes to ``.streamer-<tag>.part`` beside the destination; see :class:`Writer`."""

    def __init__(
        self, storage: LocalStorage, path: str, temp: str, fd: int, conflict: Conflict
    ) -> None:
        self._storage = storage
        self._path = path
        self._temp = temp
        self._fd: int | None = fd
        self._conflict = conflict
        self._published = False
        self._writeback = Writeback(fd)
        self.offset = os.lseek(fd, 0, os.SEEK_CUR)
        """Bytes staged so far (a resumed writer starts at what was there)."""

    async def write(self, chunk: bytes) -> None:
        assert self._fd is not None, "write after commit/abort"
        await trio.to_thread.run_sync(self._write_sync, self._fd, chunk)

    def _write_sync(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
            self.offset += written
        self._writeback.wrote(len(data))

    async def hash_staged(self, update: Callable[[bytes], object]) -> None:
        """Feed the bytes staged before this writer opened (``0 .. offset``) to
        ``update`` (e.g. a hash's), in a thread: a resumed upload's prefix is hashed
        again from disk rather than trusted."""
        await self.read_back(update, 0, self.offset)

    async def read_back(self, update: Callable[[bytes], object], start: int, end: int) -> None:
        """Feed the staged bytes ``[start, end)`` to ``update`` in order, in a thread."""
        assert self._fd is not None, "read after commit/abort"
        fd = self._fd

        def run() -> None:
            position = start
            while position < end:
                piece = os.pread(fd, min(_HASH_CHUNK, end - position), position)
                if not piece:
                    raise StorageError(f"{self._path}: staged bytes vanished", code="EIO")
                update(piece)
                position += len(piece)

        await trio.to_thread.run_sync(run)

    # -- positional writes (see base.PositionalWriter) ------------------------

    async def preallocate(self, size: int) -> None:
        """Size the staged file to ``size`` bytes (disk space reserved where supported)."""
        assert self._fd is not None, "preallocate after commit/abort"
        fd = self._fd

        def run() -> None:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:  # e.g. EOPNOTSUPP: a sparse file will do
                if exc.errno == errno.ENOSPC:
                    raise
                os.ftruncate(fd, size)

        if not size:
            return
        try:
            await trio.to_thread.run_sync(run)
        except OSError as exc:
            raise _os_error(exc, self._path) from exc

    async def write_at(self, offset: int, data: memoryview) -> None:
        assert self._fd is not None, "write after commit/abort"
        fd = self._fd

        def run() -> None:
            view, position = data, offset
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written

        try:
            await trio.to_thread.run_sync(run)
        except OSError as exc:
            raise _os_error(exc, self._path) from exc

    async def range_written(self, start: int, end: int) -> None:
        assert self._fd is not None, "range_written after commit/abort"
        await trio.to_thread.run_sync(self._writeback.start, start, end - start)

    async def suspend(self) -> None:
        """Fsync and close, keeping the staged bytes for a later
        :meth:`LocalStorage.open_resumable` (a cut upload); idempotent, and ``abort``
        afterwards is a no-op."""
        fd, self._fd = self._fd, None
        self._published = True  # nothing for abort to remove: the temp is kept on purpose
        if fd is not None:

            def sync_close() -> None:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

            await trio.to_thread.run_sync(sync_close)

    async def commit(self, *, sha256: str, mtime_ns: int | None) -> str | None:
        del sha256  # local files carry no metadata; the engine records the hash
        assert self._fd is not None, "commit after commit/abort"
        try:
            final = await trio.to_thread.run_sync(self._commit_sync, mtime_ns)
        except OSError as exc:
            raise _os_error(exc, self._path) from exc
        self._published = final is not None
        return final

    def _commit_sync(self, mtime_ns: int | None) -> str | None:
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            os.fsync(fd)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        final = self._publish()
        if final is not None:
            _fsync_dir(os.path.dirname(self._temp))
        return final

    def _publish(self) -> str | None:
        """Move the temp file to its final name under the conflict policy."""
        real = self._storage.resolve(self._path)
        if self._conflict is Conflict.OVERWRITE:
            if os.path.isdir(real):
                raise PathBlocked(f"{self._path}: a directory is in the way", code="EISDIR")
            os.replace(self._temp, real)
            return self._path
        candidates = [self._path]
        if self._conflict is Conflict.RENAME:
            candidates += (_paths.renamed(self._path, n) for n in range(1, MAX_RENAME_ATTEMPTS))
        for candidate in candidates:
            if _move_no_replace(self._temp, self._storage.resolve(candidate)):
                return candidate
        os.unlink(self._temp)
        if self._conflict is Conflict.SKIP:
            return None
        raise PathBlocked(f"{self._path}: no free name for rename", code="EEXIST")

    async def abort(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self._published:
            with contextlib.suppress(FileNotFoundError):
                await trio.to_thread.run_sync(os.unlink, self._temp)
            self._published = True  # nothing left to remove


def _open_regular(real: str) -> FileIO | None:
    """Open a regular file for reading; ``None`` for anything else (FIFOs, devices
    and directories would hang or never end). O_NONBLOCK keeps a FIFO from
    blocking the open itself; it has no effect on regular files."""
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb", buffering=0)


def _move_no_replace(source: str, target: str) -> bool:
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


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
