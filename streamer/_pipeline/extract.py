"""Write a tar event stream into a staging directory, refusing anything unsafe.

:class:`SafeExtractor` is the destination half of a directory transfer: it
consumes :class:`~.tarstream.TarReader` events and recreates the tree under a
staging directory it owns. The archive is hostile until proven otherwise;
safety is enforced here, not delegated to :mod:`tarfile`'s filters:

* member names must be relative, free of ``..`` and NUL (``.`` segments,
  empty segments and a leading ``./`` are dropped; the root entry ``.`` is
  ignored);
* every parent directory is opened component by component with
  ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's descriptor, and every
  file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to its
  directory's descriptor, so nothing is ever written through a symlink, even
  one planted in the staging directory behind our back;
* a symlink target must be relative, and may climb with leading ``..``
  segments only as far as the staging root and never after a named segment
  (``../x/y`` is fine, ``x/../..`` is not): by induction over the links in the
  tree, resolving any link then never leaves the root;
* a hard link must name a regular file already extracted (the staging
  directory started empty, so a regular file there is an earlier member);
* devices, FIFOs, sockets and unknown types are refused, as are members
  declared twice (except directories), content beyond a member's declared
  size, and more than ``max_members`` members.

Refusals raise :class:`UnsafeArchive`; a broken event stream raises
:class:`~.tarstream.MalformedArchive`. Permission bits are kept
(``mode & 0o777``: setuid, setgid and sticky are dropped, group/world write is
kept as archived, as the source had it); ownership is not restored (files
belong to the daemon; Wings re-owns server files itself). mtimes are restored
for files, symlinks and directories; directories get theirs and their modes
last, deepest first, because writing into a directory changes its mtime and a
read-only directory could not be filled.

All I/O is blocking: run the extractor in a worker thread. It writes content
as it arrives, so memory stays flat whatever the member sizes; what it keeps
grows only with the number of directories (their deferred metadata).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final

from .._errors import Conflict, StreamerError
from .tarstream import (
    ArchiveLimitExceeded,
    Data,
    Event,
    MalformedArchive,
    Member,
    MemberEnd,
    MemberType,
)

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_DIR_MODE: Final = 0o755  # for parents the archive does not list (umask applies)
_DIR_CACHE_SIZE: Final = 64

Parts = tuple[str, ...]


class UnsafeArchive(StreamerError):
    """The archive tries to write outside its staging directory or to create special files."""

    status_code = 400
    code = "unsafe_archive"


class SafeExtractor:
    """Recreate an archive's tree under ``staging``; see the module docstring.

    ``staging`` is created (mode 0o700) if missing and must otherwise be an
    empty directory (:class:`~streamer._errors.Conflict` if not). Feed events
    in order with :meth:`feed`, then call :meth:`finish` once the reader has
    seen the end of the archive, or :meth:`abort` on any failure. Either way
    the caller owns the staging directory afterwards (to move it into place or
    delete it). Usable as a context manager that aborts on exit.
    """

    def __init__(
        self,
        staging: str,
        *,
        max_members: int | None = None,
        on_file_complete: Callable[[int], None] | None = None,
    ) -> None:
        """``on_file_complete`` is called with each regular file's descriptor once its
        content, mode and mtime are written, just before it is closed (to sync it)."""
        self._max_members = max_members
        self._on_file_complete = on_file_complete
        self.members = 0
        """Members extracted so far."""
        self.bytes_written = 0
        """Content bytes written so far."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(staging, 0o700)
        root_fd = os.open(staging, _DIR_FLAGS)
        if os.listdir(root_fd):
            os.close(root_fd)
            raise Conflict(f"staging directory {staging!r} is not empty")
        self._root_fd: int | None = root_fd
        self._dirs: OrderedDict[Parts, int] = OrderedDict()  # LRU of open directory fds
        self._dir_meta: dict[Parts, Member] = {}  # directories whose mode/mtime come last
        self._member: Member | None = None  # the member whose content is expected
        self._file_fd: int | None = None
        self._written = 0
        self._ended = False

    def __enter__(self) -> SafeExtractor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    # -- events -------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> None:
        """Apply ``events`` (as returned by :meth:`TarReader.feed`) in order."""
        for event in events:
            if isinstance(event, Data):
                self._write(event.data)
            elif isinstance(event, Member):
                self._start(event)
            elif isinstance(event, MemberEnd):
                self._end_member()
            else:  # ArchiveEnd
                self._end_archive()

    def finish(self) -> None:
        """Apply directory modes and mtimes, then release every descriptor.

        Raises :class:`MalformedArchive` if the end of the archive was not fed.
        """
        try:
            if not self._ended:
                raise MalformedArchive("archive ended without its end-of-archive marker")
            for parts in sorted(self._dir_meta, key=len, reverse=True):
                member = self._dir_meta[parts]
                fd = self._open_dir(parts)
                os.fchmod(fd, member.mode & 0o777)
                os.utime(fd, ns=_times(member))
        finally:
            self.abort()

    def abort(self) -> None:
        """Close every open descriptor; safe to call more than once."""
        fds = [self._file_fd, *self._dirs.values(), self._root_fd]
        self._file_fd, self._root_fd = None, None
        self._dirs.clear()
        for fd in fds:
            if fd is not None:
                os.close(fd)

    # -- members ------------------------------------------------------------

    def _start(self, member: Member) -> None:
        if self._member is not None or self._ended:
            where = "after the end of the archive" if self._ended else "inside another member"
            raise MalformedArchive(f"member {member.name!r} starts {where}")
        self.members += 1
        if self._max_members is not None and self.members > self._max_members:
            raise ArchiveLimitExceeded(f"archive has more than {self._max_members} members")
        parts = _member_parts(member.name, what="member name")
        self._member, self._written = member, 0
        if not parts:
            if member.type is not MemberType.DIR:
                raise UnsafeArchive(f"member {member.name!r} would replace the staging root")
            return  # the archive's "." entry: the staging root is ours
        kind = member.type
        if kind is MemberType.DIR:
            self._open_dir(parts)
            self._dir_meta[parts] = member
        elif kind is MemberType.FILE:
            self._create_file(parts, member)
        elif kind is MemberType.SYMLINK:
            self._create_symlink(parts, member)
        elif kind is MemberType.HARDLINK:
            self._create_hardlink(parts, member)
        else:
            raise UnsafeArchive(f"member {member.name!r} is a {kind.name.lower()}, not allowed")

    def _create_file(self, parts: Parts, member: Member) -> None:
        parent = self._open_dir(parts[:-1])
        try:
            self._file_fd = os.open(parts[-1], _FILE_FLAGS, 0o600, dir_fd=parent)
        except FileExistsError:
            raise UnsafeArchive(f"member {member.name!r} already exists") from None

    def _create_symlink(self, parts: Parts, member: Member) -> None:
        _check_symlink_target(parts, member)
        parent = self._open_dir(parts[:-1])
        try:
            os.symlink(member.linkname, parts[-1], dir_fd=parent)
        except FileExistsError:
            raise UnsafeArchive(f"member {member.name!r} already exists") from None
        os.utime(parts[-1], ns=_times(member), dir_fd=parent, follow_symlinks=False)

    def _create_hardlink(self, parts: Parts, member: Member) -> None:
        """Link to an earlier regular file: staging started empty, so that is what it holds."""
        target = _member_parts(member.linkname, what=f"hard link target of {member.name!r}")
        try:
            source_dir = os.dup(self._open_dir(target[:-1], create=False))  # may be evicted next
        except FileNotFoundError:
            source_dir = None
        try:
            if source_dir is None or not target or not _is_regular(target[-1], source_dir):
                raise UnsafeArchive(
                    f"hard link {member.name!r} -> {member.linkname!r}: no earlier regular file"
                )
            parent = self._open_dir(parts[:-1])
            os.link(
                target[-1],
                parts[-1],
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except FileExistsError:
            raise UnsafeArchive(f"member {member.name!r} already exists") from None
        finally:
            if source_dir is not None:
                os.close(source_dir)

    def _write(self, data: bytes) -> None:
        member = self._member
        if member is None:
            raise MalformedArchive("content outside any member")
        if self._file_fd is None:
            raise UnsafeArchive(f"member {member.name!r} of type {member.type.name} has content")
        self._written += len(data)
        if self._written > member.size:
            raise UnsafeArchive(
                f"member {member.name!r} has more content than its declared {member.size} bytes"
            )
        view = memoryview(data)
        while view:
            view = view[os.write(self._file_fd, view) :]
        self.bytes_written += len(data)

    def _end_member(self) -> None:
        member = self._member
        if member is None:
            raise MalformedArchive("member end outside any member")
        if self._file_fd is not None:
            if self._written != member.size:
                raise MalformedArchive(
                    f"member {member.name!r} ended after {self._written} of {member.size} bytes"
                )
            fd, self._file_fd = self._file_fd, None
            try:
                os.fchmod(fd, member.mode & 0o777)
                os.utime(fd, ns=_times(member))
                if self._on_file_complete is not None:
                    self._on_file_complete(fd)
            finally:
                os.close(fd)
        self._member = None

    def _end_archive(self) -> None:
        if self._member is not None:
            raise MalformedArchive(f"archive ended inside member {self._member.name!r}")
        self._ended = True

    # -- directories --------------------------------------------------------

    def _open_dir(self, parts: Parts, *, create: bool = True) -> int:
        """A descriptor of directory ``parts``, borrowed from the cache.

        It stays valid until the next call. Every component is opened with
        ``O_NOFOLLOW`` from its parent's descriptor; a symlink or non-directory
        on the way raises :class:`UnsafeArchive`; a missing one is created
        (mode 0o755 less umask), or raises :class:`FileNotFoundError` if not
        ``create``.
        """
        assert self._root_fd is not None, "extractor already closed"
        known = len(parts)
        while known and parts[:known] not in self._dirs:
            known -= 1
        fd = self._root_fd
        if known:
            fd = self._dirs[parts[:known]]
            self._dirs.move_to_end(parts[:known])
        for depth in range(known, len(parts)):
            fd = _open_child_dir(fd, parts[depth], parts[: depth + 1], create=create)
            self._dirs[parts[: depth + 1]] = fd
            if len(self._dirs) > _DIR_CACHE_SIZE:
                os.close(self._dirs.popitem(last=False)[1])
        return fd


def _open_child_dir(parent: int, name: str, parts: Parts, *, create: bool) -> int:
    try:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # lost a race: O_NOFOLLOW still decides
                os.mkdir(name, _NEW_DIR_MODE, dir_fd=parent)
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeArchive(
                f"{'/'.join(parts)!r} is a symlink or not a directory; refusing to go through"
            ) from None
        raise


def _is_regular(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _member_parts(name: str, *, what: str) -> Parts:
    """``name`` split into segments, refusing absolute paths, ``..`` and NUL."""
    if "\0" in name:
        raise UnsafeArchive(f"{what} {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeArchive(f"{what} {name!r} is absolute")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{what} {name!r} contains '..'")
    return parts


def _check_symlink_target(parts: Parts, member: Member) -> None:
    """Refuse a symlink whose target could resolve outside the staging root.

    The target may start with ``..`` segments, at most as many as the link has
    parent directories, and have none after its first named segment.
    """
    target = member.linkname
    if not target or "\0" in target or target.startswith("/"):
        raise UnsafeArchive(f"symlink {member.name!r} -> {target!r}: target must be relative")
    segments = [part for part in target.split("/") if part not in ("", ".")]
    climbs = 0
    while climbs < len(segments) and segments[climbs] == "..":
        climbs += 1
    if ".." in segments[climbs:] or climbs > len(parts) - 1:
        raise UnsafeArchive(f"symlink {member.name!r} -> {target!r} leaves the staging root")


def _times(member: Member) -> tuple[int, int]:
    ns = round(member.mtime * 1_000_000_000)
    return ns, ns
