"""Writing S3 objects: buffered single PUTs, direct multipart uploads, and multipart
uploads published by copy.

An object that fits in one part is buffered and published by one PutObject
carrying ``x-amz-meta-sha256`` (hex) and ``x-amz-meta-mtime`` (decimal seconds
with nanoseconds, ``1700000000.123456789``, the format rclone uses).

A larger one whose SHA-256 the writer is told up front (``sha256=`` at
:meth:`S3Storage.open_writer`, e.g. a local file hashed first) is a *direct*
multipart upload to the final key: CreateMultipartUpload carries the metadata,
CompleteMultipartUpload publishes (with ``If-None-Match: *`` under ``skip``).
The bytes written are still hashed by the caller; :meth:`S3Writer.commit`
refuses (``SourceChanged``, and ``abort`` discards the upload) when they do not
hash to the digest announced, so no object ever carries a wrong ``sha256``.
``rename`` does not know its final key before the end, so it always stages.

Any other larger object is uploaded as a multipart upload to a *staging key* beside the
destination (``dir/.streamer-<tag>.part``, the local backend's temp name),
because the SHA-256 the metadata needs is only known at ``commit`` while
CreateMultipartUpload wants the metadata up front. ``commit`` completes the
staging object, then publishes it with a server-side multipart copy
(CreateMultipartUpload with the final metadata, UploadPartCopy in parallel,
CompleteMultipartUpload) and deletes the staging object. The copy costs S3
time, not our bandwidth; in exchange every policy is atomic on the final key
and the object appears complete, metadata included, or not at all.

``skip`` and ``rename`` probe each candidate name with HEAD (cheap, and spares
uploading bytes that would be discarded), then write with ``If-None-Match: *``
(PutObject, CompleteMultipartUpload) so a racing writer cannot be overwritten.
A server that answers 501 to conditional writes is remembered and gets the
HEAD-then-write fallback (best effort). Objects up to ``copy_object_max`` (S3's
5 GiB) are published by one CopyObject, bigger ones by UploadPartCopy; servers
that ignore ``If-None-Match`` on CopyObject (moto) leave only the HEAD probe
guarding ``skip``/``rename``. A 412 whose object carries our SHA-256 and size
is taken to be our own write landing on a retried request.

A process that dies mid-write leaves its multipart upload behind: the staging
one is found again by :meth:`S3Storage.sweep` (its key names the writer's tag);
a direct one, like a publish copy's, targets the final key where another
writer's upload may be running, and is left to a bucket lifecycle rule
(``AbortIncompleteMultipartUpload``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

import trio

from .. import _paths
from .._concurrency import cleanup, open_nursery
from .._errors import StorageError
from .background import BackgroundTasks
from .base import Conflict
from .local import temp_name
from .s3body import sha256_hex
from .s3errors import PRECONDITION_FAILED, SOURCE_CHANGED, S3Error
from .s3parts import PartBuffer

if TYPE_CHECKING:
    from .s3 import S3Storage
    from .s3object import ObjectInfo

SHA256_KEY = "sha256"
#: S3's code for a body that does not hash to its signed ``x-amz-content-sha256``.
CONTENT_SHA256_MISMATCH = "XAmzContentSHA256Mismatch"
TOO_MANY_PARTS = "TooManyParts"
MTIME_KEY = "mtime"
MAX_RENAME_ATTEMPTS = 10_000
_MTIME = re.compile(r"(-?)(\d+)(?:\.(\d+))?")


def staging_key(path: str, tag: str) -> str:
    """The key a multipart writer tagged ``tag`` stages ``path``'s bytes under."""
    return _paths.join(path.rpartition("/")[0], temp_name(tag))


def format_mtime(mtime_ns: int) -> str:
    """``x-amz-meta-mtime``: decimal seconds with nine fraction digits, as rclone writes it."""
    sign = "-" if mtime_ns < 0 else ""
    seconds, nanos = divmod(abs(mtime_ns), 1_000_000_000)
    return f"{sign}{seconds}.{nanos:09d}"


def parse_mtime(value: str) -> int | None:
    """Nanoseconds from decimal seconds (``1700000000``, ``1700000000.5``); None if malformed."""
    match = _MTIME.fullmatch(value.strip())
    if match is None:
        return None
    sign, seconds, fraction = match.groups()
    nanos = int(seconds) * 1_000_000_000 + int(((fraction or "") + "0" * 9)[:9])
    return -nanos if sign else nanos


def object_metadata(sha256: str, mtime_ns: int | None) -> dict[str, str]:
    """The user metadata streamer writes on every object it publishes."""
    metadata = {SHA256_KEY: sha256}
    if mtime_ns is not None:
        metadata[MTIME_KEY] = format_mtime(mtime_ns)
    return metadata


async def _unless_taken(write: Awaitable[object]) -> bool:
    """Await a (possibly exclusive) write; False when ``If-None-Match`` found the key taken."""
    try:
        await write
    except S3Error as exc:
        if exc.code == PRECONDITION_FAILED:
            return False
        raise
    return True


class S3Writer:
    """Writes one object; see the module docstring for how it publishes.

    Memory: the part being filled plus the parts uploading never exceed
    ``parts_in_flight`` parts; :meth:`write` waits (back-pressure) for a slot.
    Instead of :meth:`write`, a caller may fill the parts' buffers in place
    (:meth:`lend_part`, :meth:`part_filled`: a
    :class:`~streamer._storage.base.PartLender`), under the same bound.
    ``size`` announces how many bytes will come: an object too big for
    ``max_parts`` parts of ``part_size`` gets bigger parts, fewer at once
    (:meth:`S3Settings.upload_part_size`: the memory bound holds down to two
    parts). Without it a part past the limit fails ``TooManyParts`` before it is sent.

    ``sha256`` announces the digest of the bytes to come: a multipart object
    is then uploaded directly to its final key (except under ``rename``) with
    that digest and ``mtime_ns`` as metadata (the commit's ``mtime_ns`` is not
    used then), and :meth:`commit` raises ``SourceChanged`` unless its
    ``sha256`` is the one announced. ``part_sha256s`` announces each part's
    digest, which its upload then signs instead of hashing the part again;
    a server that finds the part's bytes hash otherwise refuses it, reported
    as ``SourceChanged`` (one that does not check is still caught by ``commit``).
    """

    def __init__(
        self,
        storage: S3Storage,
        path: str,
        conflict: Conflict,
        tag: str,
        *,
        sha256: str | None = None,
        mtime_ns: int | None = None,
        part_sha256s: tuple[str, ...] = (),
        size: int | None = None,
    ) -> None:
        self._storage = storage
        self._client = storage.client
        self._bucket = storage.bucket
        self._path = path
        self._conflict = conflict
        self._staging = staging_key(path, tag)
        self._announced = None if sha256 is None else object_metadata(sha256, mtime_ns)
        self._direct = self._announced is not None and conflict is not Conflict.RENAME
        self._upload_key = path if self._direct else self._staging
        settings = storage.settings
        assert sha256 is not None or not part_sha256s, "part digests without the whole's"
        self._part_size = settings.upload_part_size(size)
        self._part_sha256s = part_sha256s
        self._buffer = PartBuffer(self._part_size)
        self._size = 0
        self._slots = trio.Semaphore(settings.upload_parts_in_flight(self._part_size))
        self._has_slot = False  # whether the buffer being filled holds a slot
        self._tasks = BackgroundTasks(storage.client.nursery)
        self._upload_id: str | None = None  # the multipart upload of the bytes written
        self._direct_pending = False  # a direct upload exists and is not completed
        self._etags: list[str] = []
        self._staging_dirty = False  # an upload or object may exist under the staging key
        self._publishing: tuple[str, str] | None = None  # (key, upload id) of a publish copy
        self._closed = False

    async def write(self, chunk: bytes) -> None:
        assert not self._closed, "write after commit/abort"
        view = memoryview(chunk)
        while view:
            await self._make_room()
            view = self._buffer.fill(view)
        self._size += len(chunk)

    async def lend_part(self) -> memoryview:
        assert not self._closed, "lend_part after commit/abort"
        assert not self._buffer or self._buffer.full, "lend_part after a short part"
        await self._make_room()
        return self._buffer.lend()

    def part_filled(self, count: int) -> None:
        self._buffer.filled(count)
        self._size += count

    async def _make_room(self) -> None:
        """Ship the part being filled if it is full; hold a slot for the next bytes."""
        if self._buffer.full:
            await self._ship()
        if not self._has_slot:
            await self._slots.acquire()
            self._has_slot = True
        self._tasks.raise_if_failed()

    async def _ship(self) -> None:
        """Upload the buffer as the next part in the background (its slot goes with it);
        ``TooManyParts`` instead of a part past S3's limit."""
        max_parts = self._storage.settings.max_parts
        if len(self._etags) == max_parts:
            raise StorageError(
                f"{self._path}: more than {max_parts} parts of {self._part_size} bytes "
                "(S3's limit): announce the size, or raise s3.part_size_mib",
                code=TOO_MANY_PARTS,
            )
        if self._upload_id is None:
            if self._direct:
                assert self._announced is not None
                self._upload_id = await self._client.create_multipart_upload(
                    self._bucket, self._path, metadata=self._announced
                )
                self._direct_pending = True
            else:
                self._staging_dirty = True
                self._upload_id = await self._client.create_multipart_upload(
                    self._bucket, self._staging, metadata={}, owned=True
                )
        data = self._buffer.take()
        self._has_slot = False
        self._etags.append("")
        self._tasks.start_soon(self._upload_part, self._upload_id, len(self._etags), data)

    async def _upload_part(self, upload_id: str, number: int, data: memoryview) -> None:
        announced = self._part_sha256s[number - 1] if number <= len(self._part_sha256s) else None
        try:
            self._etags[number - 1] = await self._client.upload_part(
                self._bucket, self._upload_key, upload_id, number, data, sha256=announced
            )
            self._buffer.recycle(data)
        except S3Error as exc:
            if announced is None or exc.code != CONTENT_SHA256_MISMATCH:
                raise
            if await sha256_hex(data) == announced:
                raise  # the bytes are the ones hashed first: damaged on the wire
            raise StorageError(
                f"{self._path}: part {number} does not hash to the {announced} announced "
                "(the source changed?)",
                code=SOURCE_CHANGED,
            ) from exc
        finally:
            self._slots.release()

    async def commit(self, *, sha256: str, mtime_ns: int | None) -> str | None:
        assert not self._closed, "commit after commit/abort"
        self._closed = True
        metadata = object_metadata(sha256, mtime_ns)
        if self._announced is not None and sha256 != self._announced[SHA256_KEY]:
            raise StorageError(
                f"{self._path}: the bytes written hash to {sha256}, not to the "
                f"{self._announced[SHA256_KEY]} announced (the source changed?)",
                code=SOURCE_CHANGED,
            )
        if self._upload_id is None:
            # The body is every byte written, so ``sha256`` is its payload hash: signed as
            # such (no second hash), and the server refuses the PUT if they ever differ.
            body = self._buffer.take()
            digest = await self._client.payload_hash(body, sha256=sha256)
            write = partial(self._put, body, digest, metadata)
            return await self._publish(write, sha256)
        await self._upload_rest()
        if self._direct:
            return await self._publish(self._complete_direct, sha256)
        staging_etag = await self._complete_staging()
        try:
            source = (self._bucket, self._staging, staging_etag)
            return await self._publish(partial(self._copy, source, metadata), sha256)
        finally:
            await cleanup(self._remove_staging_quietly)

    async def publish_copy(
        self, source_bucket: str, source_key: str, etag: str, size: int, metadata: dict[str, str]
    ) -> str | None:
        """Publish a server-side copy of another object (same endpoint) under the
        conflict policy, keeping its ``metadata``; the bytes never pass through us.
        Returns the final key, or ``None`` when ``skip`` found the key taken."""
        assert not self._closed and not self._size, "publish_copy on a used writer"
        self._closed = True
        self._size = size
        source = (source_bucket, source_key, etag)
        return await self._publish(
            partial(self._copy, source, metadata), metadata.get(SHA256_KEY, "")
        )

    async def _publish(
        self, write: Callable[[str, bool], Awaitable[bool]], sha256: str
    ) -> str | None:
        """Run ``write(key, exclusive)`` under the conflict policy.

        ``write`` returns False when an exclusive write found the key taken (412).
        """
        if self._conflict is Conflict.OVERWRITE:
            await write(self._path, False)
            return self._path
        for candidate in self._candidates():
            if await self._client.head_object(self._bucket, candidate) is not None:
                continue
            if await self._write_exclusive(write, candidate):
                return candidate
            if await self._storage.is_ours(candidate, sha256=sha256, size=self._size):
                return candidate
        if self._conflict is Conflict.SKIP:
            return None
        raise StorageError(f"{self._path}: no free name for rename", code="EEXIST")

    def _candidates(self) -> Iterable[str]:
        if self._conflict is Conflict.SKIP:
            return [self._path]
        renames = (_paths.renamed(self._path, n) for n in range(1, MAX_RENAME_ATTEMPTS))
        return itertools.chain([self._path], renames)

    async def _write_exclusive(
        self, write: Callable[[str, bool], Awaitable[bool]], key: str
    ) -> bool:
        if not self._storage.conditional_writes:
            return await write(key, False)  # after the HEAD probe: best effort
        try:
            return await write(key, True)
        except S3Error as exc:
            if exc.code != "NotImplemented":
                raise
        self._storage.conditional_writes = False
        return await write(key, False)

    async def _put(
        self, body: memoryview, digest: str, metadata: dict[str, str], key: str, exclusive: bool
    ) -> bool:
        return await _unless_taken(
            self._client.put_object(
                self._bucket,
                key,
                body,
                metadata=metadata,
                payload_sha256=digest,
                if_none_match=exclusive,
            )
        )

    async def _upload_rest(self) -> None:
        """Upload the last part and wait for every part to be uploaded."""
        if self._buffer:
            await self._ship()
        await self._tasks.wait()
        self._tasks.raise_if_failed()

    async def _complete_direct(self, key: str, exclusive: bool) -> bool:
        """Publish the direct upload (``key`` is its key); False when ``If-None-Match`` found
        the key taken (the upload is then left for :meth:`abort`)."""
        assert self._upload_id is not None and key == self._path
        completed = await _unless_taken(
            self._client.complete_multipart_upload(
                self._bucket,
                key,
                self._upload_id,
                self._etags,
                if_none_match=exclusive,
                landed=self._landed(self._announced.get(SHA256_KEY) if self._announced else None),
            )
        )
        self._direct_pending = not completed
        return completed

    async def _complete_staging(self) -> str:
        """Complete the staging object (every part uploaded); returns its ETag."""
        assert self._upload_id is not None
        return await self._client.complete_multipart_upload(
            self._bucket, self._staging, self._upload_id, self._etags, landed=self._landed(None)
        )

    async def _copy(
        self, source: tuple[str, str, str], metadata: dict[str, str], key: str, exclusive: bool
    ) -> bool:
        """Publish ``source`` (bucket, key, etag) as ``key`` by a parallel multipart copy."""
        source_bucket, source_key, source_etag = source
        if self._size <= self._storage.settings.copy_object_max:  # some servers lack UploadPartCopy
            return await self._copy_whole(source, metadata, key, exclusive)
        await self._abort_publishing()  # an earlier attempt's, e.g. before a 501 fallback
        upload_id = await self._client.create_multipart_upload(self._bucket, key, metadata=metadata)
        self._publishing = (key, upload_id)
        settings = self._storage.settings
        step = max(settings.copy_part_size, -(-self._size // settings.max_parts))
        ranges = [(start, min(start + step, self._size)) for start in range(0, self._size, step)]
        etags = [""] * len(ranges)
        limiter = trio.CapacityLimiter(self._storage.settings.parts_in_flight)

        async def copy_part(index: int, start: int, end: int) -> None:
            async with limiter:
                etags[index] = await self._client.upload_part_copy(
                    self._bucket,
                    key,
                    upload_id,
                    index + 1,
                    source_bucket=source_bucket,
                    source_key=source_key,
                    start=start,
                    end=end,
                    source_etag=source_etag,
                )

        async with open_nursery() as nursery:
            for index, (start, end) in enumerate(ranges):
                nursery.start_soon(copy_part, index, start, end)
        try:
            await self._client.complete_multipart_upload(
                self._bucket,
                key,
                upload_id,
                etags,
                if_none_match=exclusive,
                landed=self._landed(metadata.get(SHA256_KEY)),
            )
        except S3Error as exc:
            if exc.code != PRECONDITION_FAILED:
                raise  # abort() aborts the upload
            await self._abort_publishing()
            return False
        self._publishing = None
        return True

    def _landed(self, sha256: str | None) -> Callable[[ObjectInfo], bool]:
        """Whether an object is the one a completed upload of ours made: our size and,
        when given, our ``sha256`` metadata (a staging key is ours alone: size only)."""

        def check(info: ObjectInfo) -> bool:
            return info.size == self._size and (
                sha256 is None or info.metadata.get(SHA256_KEY) == sha256
            )

        return check

    async def _copy_whole(
        self, source: tuple[str, str, str], metadata: dict[str, str], key: str, exclusive: bool
    ) -> bool:
        """One CopyObject: for objects up to ``copy_object_max`` (empty ones included)."""
        source_bucket, source_key, source_etag = source
        return await _unless_taken(
            self._client.copy_object(
                self._bucket,
                key,
                source_bucket,
                source_key,
                metadata=metadata,
                source_etag=source_etag,
                if_none_match=exclusive,
            )
        )

    async def _abort_publishing(self) -> None:
        """Abort the publish copy's upload unless it completed."""
        if self._publishing is not None:
            key, upload_id = self._publishing
            await self._client.abort_multipart_upload(self._bucket, key, upload_id)
            self._publishing = None

    async def _remove_staging_quietly(self) -> None:
        """After commit: a failure to delete the staging object is left to abort()/sweep()."""
        with contextlib.suppress(S3Error):
            await self._remove_staging()

    async def _remove_staging(self) -> None:
        if self._staging_dirty:
            await self._storage.remove_staging(self._staging)
            self._staging_dirty = False

    async def abort(self) -> None:
        """Stop part uploads, abort multipart uploads, delete the staging object."""
        self._closed = True
        self._buffer.clear()
        self._tasks.cancel()
        await self._tasks.wait()
        await self._abort_publishing()
        await self._abort_direct()
        await self._remove_staging()

    async def _abort_direct(self) -> None:
        if self._direct_pending:
            assert self._upload_id is not None
            await self._client.abort_multipart_upload(self._bucket, self._path, self._upload_id)
            self._direct_pending = False
