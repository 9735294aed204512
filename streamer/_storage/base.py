"""The storage interface every backend implements.

Storages know nothing of jobs or HTTP. They take *cleaned* relative paths (see
:mod:`streamer._paths`) and guarantee two things: no path ever resolves outside
the location's root, and nothing half-written is ever visible under its final
name (writers stage bytes under a temporary name and publish on ``commit``).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Conflict(enum.StrEnum):
    """What a writer does when its destination already exists."""

    OVERWRITE = "overwrite"
    SKIP = "skip"
    RENAME = "rename"


#: ``Entry.size`` of a file whose size is known only once it has been read (an
#: HTTP download without Content-Length); the copy runner then records the size
#: it read instead of checking it.
UNKNOWN_SIZE = -1


@dataclass(frozen=True, slots=True)
class Entry:
    """One object in a storage: a file (or, from ``stat``, possibly a directory).

    ``size`` may be :data:`UNKNOWN_SIZE` for import sources; ``sha256``, when
    set, is what the source declares the content hashes to (verified on copy).
    """

    path: str
    size: int
    mtime_ns: int | None = None
    is_dir: bool = False
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class CopyResult:
    """The outcome of a server-side copy: final path (``None``: skipped), size, hash."""

    path: str | None
    size: int
    sha256: str | None


class Writer(Protocol):
    """Stages one object's bytes; publishes them atomically on :meth:`commit`.

    Exactly one of ``commit`` or ``abort`` ends a writer's life; ``abort`` is safe
    to call after a failed ``commit`` and must be called from a ``finally``.
    """

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; may apply back-pressure by awaiting."""
        ...

    async def commit(self, *, sha256: str, mtime_ns: int | None) -> str | None:
        """Publish the staged bytes, applying the writer's conflict policy. ``sha256``
        is the SHA-256 (hex) of every byte written, as the caller hashed them.

        Returns the final relative path (which differs from the requested one
        under ``rename``), or ``None`` when ``skip`` found the destination taken
        (the staged bytes are then discarded).
        """
        ...

    async def abort(self) -> None:
        """Discard the staged bytes; idempotent and safe after ``commit``."""
        ...


class Storage(Protocol):
    """A location: a local directory or an S3 bucket."""

    kind: str
    location_id: str

    async def stat(self, path: str) -> Entry | None:
        """The entry at ``path``, or ``None`` when nothing is there."""
        ...

    async def walk(self, path: str) -> list[Entry]:
        """Every file under the directory ``path``, recursively, sorted by path.

        Paths in the result are relative to the location root. Symbolic links are
        not followed. Raises :class:`~streamer._errors.SourceNotFound` when
        ``path`` is not a directory.
        """
        ...

    def read(self, path: str, *, chunk_size: int) -> AsyncIterator[bytes]:
        """Stream the file at ``path`` in chunks of at most ``chunk_size`` bytes."""
        ...

    async def open_writer(self, path: str, *, conflict: Conflict, tag: str) -> Writer:
        """Start writing ``path``. ``tag`` names the staging object so a later
        :meth:`sweep` (after a crash) can find and remove it."""
        ...

    async def sweep(self, path: str, *, tag: str) -> None:
        """Remove whatever a writer opened with ``tag`` for ``path`` left behind."""
        ...


@runtime_checkable
class VersionedSource(Protocol):
    """A source whose content is read at one version of something that moves (a Hub
    revision's commit): once listed, it names that version, so the job can record
    it and a resumed job (a restarted daemon included) reads the same version."""

    @property
    def version(self) -> str | None:
        """The version the listing came from (``None`` before listing)."""
        ...


@runtime_checkable
class ServerSideCopy(Protocol):
    """A storage that can copy from another storage without moving the bytes itself."""

    async def copy_within(
        self, source: object, source_path: str, path: str, *, conflict: Conflict, tag: str
    ) -> CopyResult | None:
        """Copy ``source_path`` of ``source`` to ``path``, or ``None`` when ``source``
        is not reachable server-side (another endpoint or kind)."""
        ...


@runtime_checkable
class DigestFirst(Protocol):
    """A storage whose writers publish more cheaply when told the content's size and
    SHA-256 before the bytes (S3: parts sized to fit its part limit, a direct
    multipart upload instead of a staged copy)."""

    def wants_sha256_first(self, size: int) -> bool:
        """Whether announcing the digest of a ``size``-byte file is worth hashing it first."""
        ...

    def signed_part_size(self, size: int) -> int | None:
        """The size of the parts a writer of a ``size``-byte object hashes one by one
        to sign them (S3 over plain http), or ``None`` when it hashes none: their
        SHA-256s, announced with the content's, spare it that pass."""
        ...

    async def open_writer(
        self,
        path: str,
        *,
        conflict: Conflict,
        tag: str,
        size: int | None = None,
        sha256: str | None = None,
        mtime_ns: int | None = None,
        part_sha256s: tuple[str, ...] = (),
    ) -> Writer:
        """:meth:`Storage.open_writer`, announcing ``size`` (the bytes to come, if
        known), ``sha256`` (and ``mtime_ns``): the writer's ``commit`` raises
        ``SourceChanged`` unless its ``sha256`` is that one.
        ``part_sha256s`` announces the SHA-256 of each :meth:`signed_part_size` slice
        of the content; a part whose bytes hash otherwise fails (``SourceChanged``)."""
        ...


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A file's SHA-256 (hex) and, when asked for, that of each ``part_size`` slice
    (the last one may be shorter), hashed before the file is copied."""

    sha256: str
    part_sha256s: tuple[str, ...] = ()


@runtime_checkable
class HashableSource(Protocol):
    """A storage that can hash a file cheaply before it is copied (a local disk)."""

    async def file_digest(self, path: str, *, part_size: int | None = None) -> FileDigest:
        """The SHA-256 of the file at ``path`` as it is now and, with ``part_size``,
        of each of its ``part_size`` slices."""
        ...


#: Told the SHA-256 (hex) a source declares for the content it is reading.
Declare = Callable[[str], None]


@runtime_checkable
class DeclaringSource(Protocol):
    """A source that learns while reading what a file declares it hashes to, which
    its listing may not carry (S3: the ``x-amz-meta-sha256`` of the version a GET
    delivers; ListObjectsV2 has no user metadata). The reader verifies it."""

    def read_declaring(
        self, path: str, *, chunk_size: int, declare: Declare
    ) -> AsyncIterator[bytes]:
        """:meth:`Storage.read`, calling ``declare`` with the declared SHA-256 (when the
        file has one) before the first chunk."""
        ...


@dataclass(frozen=True, slots=True)
class Pinned:
    """One version of a file, as :meth:`RangedSource.pin` found it: its size, a tag
    of that version, and the SHA-256 it declares (``None``: none)."""

    size: int
    version: str
    sha256: str | None = None


#: Awaited after each receive into a range's buffer with how many of its bytes
#: are in so far (they are final; the count only grows).
Landed = Callable[[int], Awaitable[None]]


@runtime_checkable
class RangedSource(Protocol):
    """A storage that serves byte ranges of one pinned version of a file, several at a
    time (S3: ranged GETs with ``If-Match``)."""

    range_size: int
    ranges_in_flight: int

    async def pin(self, path: str) -> Pinned:
        """The file's current version (size, tag, declared SHA-256); SourceNotFound if missing."""
        ...

    async def fetch_range(
        self, path: str, *, start: int, version: str, into: memoryview, landed: Landed
    ) -> None:
        """Receive bytes ``[start, start + len(into))`` of version ``version`` into
        ``into``, in order (resuming after drops), awaiting ``landed`` as they come;
        ``SourceChanged`` if that version is gone."""
        ...


@runtime_checkable
class PositionalWriter(Protocol):
    """A writer that also takes bytes at any offset of a file of known size (local disk)."""

    async def preallocate(self, size: int) -> None:
        """Make the staged file ``size`` bytes long before positional writes."""
        ...

    async def write_at(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset`` of the staged file (concurrent calls allowed, for
        distinct offsets). Chunks of a :func:`~streamer._storage.directio.direct_buffer`
        at aligned offsets may bypass the page cache."""
        ...


class PositionalFile(Protocol):
    """An open file read at any offset into the caller's buffer. Its methods block:
    call them from a worker thread."""

    def readinto(self, offset: int, buffer: memoryview) -> int:
        """Read up to ``len(buffer)`` bytes at ``offset`` into ``buffer``; returns how
        many (0 at the end of the file)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class PositionalSource(Protocol):
    """A storage whose files can be read straight into the caller's buffers (local disk)."""

    async def open_positional(self, path: str) -> PositionalFile:
        """Open the regular file at ``path``; SourceNotFound if it is not one."""
        ...


@runtime_checkable
class PartLender(Protocol):
    """A writer that lends the buffer of its next part to be filled in place (S3
    multipart), so the bytes are not copied into it; the part then ships as if
    written. Lent buffers and parts uploading together never exceed the writer's
    memory bound: :meth:`lend_part` waits for room."""

    async def lend_part(self) -> memoryview:
        """The empty buffer of the next part, a whole part long. The previous lent
        part, if any, must have been returned full by :meth:`part_filled`."""
        ...

    def part_filled(self, count: int) -> None:
        """The first ``count`` bytes of the lent buffer are the object's next bytes
        (fewer than a whole part only for the last part); the buffer is the writer's again."""
        ...
