"""The source half of a directory transfer: walk a tree, stream it as tar.

:func:`iter_tree` walks a directory without following symlinks;
:func:`tar_chunks` turns the walk into tar bytes (PAX/ustar, see
:mod:`.tarformat`) in chunks of about ``chunk_size``, reading file content in
pieces so that memory stays flat; :func:`tar_stream` is its async face for
the pipeline, one worker-thread hop per chunk.

The tree is live (a game server may be writing to it) and its owner may be
hostile, so the walk works on directory descriptors: every directory and file
is opened ``O_NOFOLLOW`` relative to its parent's descriptor, so a file
swapped for a symlink mid-walk is never followed out of the tree. The archive
stays well-formed whatever happens meanwhile: an entry that vanishes, or turns
into something else, before it is read is skipped; a file is archived with the
size it had when opened, cut at that size if it grows and padded with zeros if
it shrinks (GNU tar does the same). Sockets, FIFOs and devices are skipped, as
the destination refuses them. Hard links are archived as separate copies.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Final, ParamSpec, TypeVar

import trio

from .tarformat import END_OF_ARCHIVE, Member, MemberType, encode_member, padding

DEFAULT_CHUNK_SIZE: Final = 1 << 20

P = ParamSpec("P")
T = TypeVar("T")

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a file replaced by a FIFO must not block the open.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Errors that mean "this entry changed under us"; anything else propagates.
_Level = tuple[int, str, Iterator[str]]  # a directory being walked: fd, name prefix, names left
_RACE_ERRNOS: Final = frozenset(
    {errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EINVAL}
)


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a walked tree.

    ``member`` describes it as ``lstat`` saw it, named relative to the root
    (``/``-separated, no leading ``./``). ``dir_fd`` is a descriptor of its
    directory and ``basename`` its name there, for opening it race-free; the
    descriptor belongs to the walk and is valid only until the iterator
    advances.
    """

    member: Member
    dir_fd: int
    basename: str


def iter_tree(root: str) -> Iterator[TreeEntry]:
    """Every directory, regular file and symlink under ``root``, depth first.

    Entries of a directory come in sorted name order, each directory before
    its content; empty directories and symlinks (to anything) are entries of
    their own; ``root`` itself is not. Symlinks are never followed (``root``
    itself may be one). At most one descriptor per directory level is open.
    """
    stack: list[_Level] = []
    try:
        _push(stack, os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "")
        while stack:
            dir_fd, prefix, names = stack[-1]
            basename = next(names, None)
            if basename is None:
                stack.pop()
                os.close(dir_fd)
                continue
            entry = _entry(dir_fd, prefix + basename, basename)
            if entry is None:
                continue
            yield entry
            if entry.member.type is MemberType.DIR:
                sub_fd = _race_tolerant(os.open, basename, _DIR_FLAGS, dir_fd=dir_fd)
                if sub_fd is not None:
                    _push(stack, sub_fd, entry.member.name + "/")
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)


def tar_chunks(root: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Generator[bytes, None, None]:
    """The tar archive of the tree under ``root`` (see :func:`iter_tree`), in chunks.

    Chunks are at least ``chunk_size`` bytes, except the last, and at most
    ``chunk_size`` plus one member's headers: small files are batched, large
    files are read ``chunk_size`` at a time. Closing the generator early
    releases every descriptor.
    """
    out = bytearray()
    for entry in iter_tree(root):
        if entry.member.type is MemberType.FILE:
            yield from _file_chunks(entry, out, chunk_size)
        else:
            out += encode_member(entry.member)
        if len(out) >= chunk_size:
            yield bytes(out)
            out.clear()
    out += END_OF_ARCHIVE
    yield bytes(out)


async def tar_stream(
    root: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> AsyncGenerator[bytes, None]:
    """:func:`tar_chunks` as an async iterator; each chunk is made in a worker thread.

    Use it with ``contextlib.aclosing`` (as the pump does) so that the walk's
    descriptors are released when the consumer stops early.
    """
    chunks = tar_chunks(root, chunk_size)
    try:
        while (chunk := await trio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        chunks.close()  # quick: closes descriptors; never runs beside a next() in a thread


def _push(stack: list[_Level], dir_fd: int, prefix: str) -> None:
    """Put directory ``dir_fd`` (now owned by the walk) on top of the stack, names sorted."""
    try:
        names = sorted(os.listdir(dir_fd))
    except BaseException:
        os.close(dir_fd)
        raise
    stack.append((dir_fd, prefix, iter(names)))


def _entry(dir_fd: int, name: str, basename: str) -> TreeEntry | None:
    st = _race_tolerant(os.stat, basename, dir_fd=dir_fd, follow_symlinks=False)
    if st is None:
        return None
    if stat.S_ISDIR(st.st_mode):
        member = _member(name, st, MemberType.DIR)
    elif stat.S_ISREG(st.st_mode):
        member = _member(name, st, MemberType.FILE)
    elif stat.S_ISLNK(st.st_mode):
        target = _race_tolerant(os.readlink, basename, dir_fd=dir_fd)
        if target is None:
            return None
        member = _member(name, st, MemberType.SYMLINK, linkname=target)
    else:
        return None
    return TreeEntry(member=member, dir_fd=dir_fd, basename=basename)


def _file_chunks(entry: TreeEntry, out: bytearray, chunk_size: int) -> Iterator[bytes]:
    """Append a regular file's header and content to ``out``, yielding whenever it fills.

    The header and size come from ``fstat`` of the opened file; the content is
    exactly that size (cut if the file grew, zero-padded if it shrank).
    """
    fd = _race_tolerant(os.open, entry.basename, _FILE_FLAGS, dir_fd=entry.dir_fd)
    if fd is None:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        out += encode_member(_member(entry.member.name, st, MemberType.FILE))
        remaining = st.st_size
        while remaining:
            if len(out) >= chunk_size:
                yield bytes(out)
                out.clear()
            want = min(remaining, chunk_size - len(out))
            piece = os.read(fd, want) or bytes(want)  # b"": the file shrank, pad with zeros
            remaining -= len(piece)
            if not out and len(piece) == chunk_size:
                yield piece  # a whole chunk straight from the file, not copied
            else:
                out += piece
        out += padding(st.st_size)
    finally:
        os.close(fd)


def _race_tolerant(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T | None:
    """``fn(...)``, or ``None`` if it failed because the entry vanished or changed kind."""
    try:
        return fn(*args, **kwargs)
    except OSError as error:
        if error.errno in _RACE_ERRNOS:
            return None
        raise


def _member(name: str, st: os.stat_result, kind: MemberType, linkname: str = "") -> Member:
    return Member(
        name=name,
        type=kind,
        size=st.st_size if kind is MemberType.FILE else 0,
        mode=stat.S_IMODE(st.st_mode),
        mtime=st.st_mtime,
        linkname=linkname,
        uid=st.st_uid,
        gid=st.st_gid,
    )
