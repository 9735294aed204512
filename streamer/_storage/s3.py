"""S3 bucket storage: keys are relative paths, "directories" are key prefixes.

Reading fetches ``part_size`` ranges, several in parallel, each resumed after
a dropped connection and pinned to the ETag of the first response. Writing is
:mod:`streamer._storage.s3writer`'s: nothing half-written or without its
``x-amz-meta-sha256`` is ever visible, and conflict policies are atomic.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterator

import trio

from .. import _paths
from .._concurrency import cleanup
from .._errors import InvalidPath, SourceNotFound, StorageError
from .background import BackgroundTasks
from .base import Conflict, CopyResult, Declare, Entry, Landed, Pinned
from .local import is_temp_name
from .s3client import S3Client
from .s3errors import SOURCE_CHANGED
from .s3object import ObjectInfo, stream_range
from .s3settings import S3Settings
from .s3writer import MTIME_KEY, SHA256_KEY, S3Writer, parse_mtime, staging_key

__all__ = ["S3Storage", "S3Writer", "staging_key"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_listable(key: str) -> bool:
    """Whether a listed key is a file streamer can address (not a marker, temp or odd key)."""
    if key.endswith("/") or is_temp_name(key.rpartition("/")[2]):
        return False
    try:
        return _paths.clean_relative(key) == key
    except InvalidPath:
        return False


def declared_sha256(info: ObjectInfo) -> str | None:
    """The SHA-256 the object's ``x-amz-meta-sha256`` declares (``None``: absent or not hex)."""
    sha256 = info.metadata.get(SHA256_KEY, "").lower()
    return sha256 if _HEX64.fullmatch(sha256) else None


def _entry(path: str, info: ObjectInfo) -> Entry:
    """A file entry: ``mtime_ns`` is the writer-recorded mtime when present, else LastModified."""
    mtime_ns = parse_mtime(info.metadata.get(MTIME_KEY, ""))
    return Entry(
        path,
        info.size,
        info.last_modified_ns if mtime_ns is None else mtime_ns,
        sha256=declared_sha256(info),
    )


def _ignore(sha256: str) -> None:
    del sha256


class S3Storage:
    """One bucket as a location (``location_id`` is the bucket name).

    The client must be inside its ``async with`` for reads of large objects and
    multipart writes (they run background tasks in its service nursery).
    ``settings`` defaults to the client's.
    """

    kind = "s3"

    def __init__(
        self, location_id: str, client: S3Client, settings: S3Settings | None = None
    ) -> None:
        self.location_id = location_id
        self.bucket = location_id
        self.client = client
        self.settings = settings or client.settings
        self.range_size = self.settings.part_size
        self.ranges_in_flight = self.settings.parts_in_flight
        # Cleared when the server answers a conditional write with 501 NotImplemented.
        self.conditional_writes = True

    # -- reading -----------------------------------------------------------

    async def stat(self, path: str) -> Entry | None:
        """HEAD the key; failing that, a prefix with keys under it is a directory.

        The root is a directory if the bucket exists (``NoSuchBucket`` otherwise).
        """
        if not path:
            await self.client.head_bucket(self.bucket)
            return Entry("", 0, is_dir=True)
        info = await self.client.head_object(self.bucket, path)
        if info is not None:
            return _entry(path, info)
        page = await self.client.list_objects_page(self.bucket, path + "/", max_keys=1)
        return Entry(path, 0, is_dir=True) if page.objects else None

    async def walk(self, path: str) -> list[Entry]:
        """Every key under ``path/``, sorted; sizes and LastModified come from the
        listing, ``sha256`` stays ``None`` (:meth:`stat` fills it; a copy learns it
        from the GET, see :meth:`read_declaring`).

        Keys ending in ``/`` (folder markers), staging keys, and keys that are not
        clean relative paths (``a//b``, ``a/../b``) are left out. A non-root
        ``path`` with no key under it raises :class:`SourceNotFound`.
        """
        prefix = path + "/" if path else ""
        summaries = await self.client.list_objects(self.bucket, prefix)
        if path and not summaries:
            raise SourceNotFound(f"{path}: not a directory")
        entries = [
            Entry(s.key, s.size, s.last_modified_ns) for s in summaries if _is_listable(s.key)
        ]
        entries.sort(key=lambda e: e.path)
        return entries

    def read(self, path: str, *, chunk_size: int) -> AsyncGenerator[bytes]:
        """:meth:`read_declaring`, ignoring what the object declares."""
        return self.read_declaring(path, chunk_size=chunk_size, declare=_ignore)

    async def read_declaring(
        self, path: str, *, chunk_size: int, declare: Declare
    ) -> AsyncGenerator[bytes]:
        """Stream the object by ranged GETs of ``part_size``, up to ``parts_in_flight``
        in parallel, all pinned to the ETag of the first; ``declare`` is told the
        first GET's ``x-amz-meta-sha256`` (that version's) before any chunk.

        Raises ``NoSuchKey``/``NoSuchBucket`` (both :class:`SourceNotFound`) or
        ``SourceChanged`` if the object is replaced mid-read. Close the iterator
        (``aclosing``) when abandoning it early, so that prefetching stops.
        """
        part = self.settings.part_size
        info, first = await self.client.get_range(self.bucket, path, start=0, end=part)
        sha256 = declared_sha256(info)
        if sha256 is not None:
            declare(sha256)
        if info.size <= part:
            for chunk in _split(first, chunk_size):
                yield chunk
            return
        parts = _Parts(self, path, info, first)
        try:
            for index in range(parts.count):
                data = await parts.take(index)
                for chunk in _split(data, chunk_size):
                    yield chunk
                parts.done()
        finally:
            await cleanup(parts.close)

    async def pin(self, path: str) -> Pinned:
        """The object's size, ETag and declared sha256, by HEAD
        (:class:`~streamer._storage.base.RangedSource`)."""
        info = await self.client.head_object(self.bucket, path)
        if info is None:
            raise SourceNotFound(f"{path}: no such key in bucket {self.bucket!r}")
        return Pinned(info.size, info.etag, declared_sha256(info))

    async def fetch_range(
        self, path: str, *, start: int, version: str, into: memoryview, landed: Landed
    ) -> None:
        """Bytes ``[start, start + len(into))`` of the object whose ETag is ``version``,
        received into ``into`` (``SourceChanged`` once that version is gone)."""

        def buffer(length: int) -> memoryview:
            if length != len(into):  # not the size pinned (a server ignoring If-Match)
                raise StorageError(
                    f"{path} changed while being copied (a range of {len(into)} bytes"
                    f" at {start} has {length})",
                    code=SOURCE_CHANGED,
                )
            return into

        await stream_range(
            self.client,
            self.bucket,
            path,
            start=start,
            end=start + len(into),
            into=buffer,
            landed=landed,
            etag=version,
        )

    # -- writing -----------------------------------------------------------

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
    ) -> S3Writer:
        """A writer for ``path``; ``size`` announces how many bytes will come (parts
        are then sized to fit S3's part limit), ``sha256`` their digest (see
        :class:`S3Writer`: a multipart object then skips the staging copy),
        ``part_sha256s`` those of its parts (signed as they are, not hashed again)."""
        if not path:
            raise InvalidPath("cannot write to the location root itself")
        return S3Writer(
            self,
            path,
            conflict,
            tag,
            sha256=sha256,
            mtime_ns=mtime_ns,
            part_sha256s=part_sha256s,
            size=size,
        )

    def wants_sha256_first(self, size: int) -> bool:
        """Whether announcing the digest saves work: objects written in several parts."""
        return size > self.settings.part_size

    def signed_part_size(self, size: int) -> int | None:
        """The part size when a ``size``-byte object goes in parts whose payloads are
        signed by their SHA-256 (``s3.sign_payload``), else ``None``."""
        part_size = self.settings.upload_part_size(size)
        return part_size if self.settings.signs_payload and size > part_size else None

    async def copy_within(
        self, source: object, source_path: str, path: str, *, conflict: Conflict, tag: str
    ) -> CopyResult | None:
        """Server-side copy from ``source`` when it is a bucket of the same endpoint
        (CopyObject/UploadPartCopy: no bytes through this node); ``None`` otherwise.

        The copy keeps the source's metadata, so its ``sha256`` (when the object
        has one) carries over and is reported; objects without it stay unhashed.
        """
        if not isinstance(source, S3Storage) or source.client is not self.client:
            return None
        info = await self.client.head_object(source.bucket, source_path)
        if info is None:
            raise SourceNotFound(f"{source_path}: no such key in bucket {source.bucket!r}")
        writer = S3Writer(self, path, conflict, tag)
        try:
            final = await writer.publish_copy(
                source.bucket, source_path, info.etag, info.size, dict(info.metadata)
            )
        finally:
            await cleanup(writer.abort)
        return CopyResult(final, info.size, info.metadata.get(SHA256_KEY))

    async def sweep(self, path: str, *, tag: str) -> None:
        """Abort the multipart uploads to ``path``'s staging key and delete the staging object.

        Uploads straight to ``path`` are not touched: they may be another
        writer's publish step (a crashed one is left to a bucket lifecycle
        rule, ``AbortIncompleteMultipartUpload``).
        """
        await self.remove_staging(staging_key(path, tag))

    async def remove_staging(self, key: str) -> None:
        """Abort every multipart upload to exactly ``key``, then delete ``key``."""
        for upload in await self.client.list_multipart_uploads(self.bucket, key):
            if upload.key == key:
                await self.client.abort_multipart_upload(self.bucket, key, upload.upload_id)
        await self.client.delete_object(self.bucket, key)

    async def is_ours(self, key: str, *, sha256: str, size: int) -> bool:
        """Whether ``key`` holds an object with our SHA-256 metadata and size."""
        info = await self.client.head_object(self.bucket, key)
        return info is not None and info.size == size and info.metadata.get(SHA256_KEY) == sha256


def _split(data: bytearray, chunk_size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for offset in range(0, len(view), chunk_size):
        yield bytes(view[offset : offset + chunk_size])


class _Parts:
    """The parts of a large object: part 0 already read, the rest fetched ahead.

    Fetches run in the client's service nursery. At most ``parts_in_flight``
    parts are held (being fetched, or waiting to be consumed, part 0 included);
    :meth:`done` frees a part's slot. Every GET is pinned to the first's ETag.
    """

    def __init__(self, storage: S3Storage, key: str, info: ObjectInfo, first: bytearray) -> None:
        part = storage.settings.part_size
        self._client = storage.client
        self._bucket = storage.bucket
        self._key = key
        self._etag = info.etag
        self._ranges = [
            (start, min(start + part, info.size)) for start in range(0, info.size, part)
        ]
        self._data: list[bytearray | None] = [first] + [None] * (self.count - 1)
        self._ready = [trio.Event() for _ in self._ranges]
        self._ready[0].set()
        self._slots = trio.Semaphore(storage.settings.parts_in_flight - 1)  # part 0 holds one
        self._tasks = BackgroundTasks(storage.client.nursery)
        self._tasks.start_soon(self._schedule)

    @property
    def count(self) -> int:
        return len(self._ranges)

    async def _schedule(self) -> None:
        for index in range(1, self.count):
            await self._slots.acquire()
            self._tasks.start_soon(self._fetch, index)

    async def _fetch(self, index: int) -> None:
        start, end = self._ranges[index]
        try:
            _, self._data[index] = await self._client.get_range(
                self._bucket, self._key, start=start, end=end, etag=self._etag
            )
        finally:
            self._ready[index].set()

    async def take(self, index: int) -> bytearray:
        """Part ``index``'s bytes, once fetched (re-raises the first fetch error)."""
        await self._ready[index].wait()
        self._tasks.raise_if_failed()
        data, self._data[index] = self._data[index], None
        assert data is not None
        return data

    def done(self) -> None:
        """The consumer is finished with the part it took last: fetch another."""
        self._slots.release()

    async def close(self) -> None:
        """Stop fetching and wait for the fetches to end."""
        self._tasks.cancel()
        await self._tasks.wait()
