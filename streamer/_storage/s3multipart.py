"""The multipart-upload operations of :class:`~streamer._storage.s3client.S3Client`.

Two of them are not idempotent, and are made safe where they are sent:
CreateMultipartUpload aborts the uploads an interrupted attempt may have
created, and a retried CompleteMultipartUpload that finds its upload gone looks
for the object it made (see each method).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from .._concurrency import cleanup
from .._errors import StorageError
from . import s3xml
from .s3body import Body, sha256_hex
from .s3errors import S3Error, S3NotFound
from .s3object import ObjectInfo
from .s3request import Reply, Request, copy_source, meta_headers

T = TypeVar("T")

NO_SUCH_UPLOAD = "NoSuchUpload"


class MultipartOps:
    """Mixin of :class:`~streamer._storage.s3client.S3Client`: multipart uploads."""

    #: Uploads aborted as created by an attempt whose answer was lost.
    orphans_aborted: int

    if TYPE_CHECKING:  # provided by S3Client

        async def _attempt(
            self, req: Request, ok: Sequence[int] = (200,), error_in_body: bool = False
        ) -> Reply: ...

        async def _call(
            self, req: Request, *, ok: Sequence[int] = (200,), error_in_body: bool = False
        ) -> Reply: ...

        async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T: ...

        async def payload_hash(self, body: Body, *, sha256: str | None = None) -> str: ...

        async def list_multipart_uploads(
            self, bucket: str, prefix: str
        ) -> list[s3xml.UploadSummary]: ...

        async def head_object(self, bucket: str, key: str) -> ObjectInfo | None: ...

    async def create_multipart_upload(
        self, bucket: str, key: str, *, metadata: Mapping[str, str], owned: bool = False
    ) -> str:
        """Start a multipart upload to ``key``; returns its upload id.

        Not idempotent: an attempt whose answer never arrives (dropped connection,
        5xx, an unreadable body, the caller's cancellation) may have created an
        upload whose id is never learnt. Such an attempt, before it is retried or
        its error (or cancellation) goes on, aborts the uploads to exactly ``key``
        that are not known to be someone else's: with ``owned`` (the key is the
        caller's alone, a staging key) every one; otherwise those missing from a
        listing taken before the first attempt (one ListMultipartUploads more per
        upload, and no clock involved: moto, for one, reports a fixed
        ``Initiated``). An upload to the same key that someone else starts
        meanwhile is aborted too; its CompleteMultipartUpload then fails
        (``NoSuchUpload``): an error, never a wrong object. A 4xx answer created
        nothing and is left alone. :attr:`orphans_aborted` counts the aborts.
        """
        req = Request("POST", bucket, key, query=[("uploads", "")], headers=meta_headers(metadata))
        known = None if owned else await self._upload_ids(bucket, key)

        async def attempt() -> str:
            try:
                return s3xml.parse_upload_id((await self._attempt(req)).body)
            except BaseException as exc:
                if not (isinstance(exc, S3Error) and 400 <= exc.status < 500):
                    await cleanup(self._abort_orphans, bucket, key, known)
                raise

        return await self._retrying(attempt)

    async def _upload_ids(self, bucket: str, key: str) -> set[str]:
        """The ids of the uploads in progress to exactly ``key``."""
        listed = await self.list_multipart_uploads(bucket, key)
        return {upload.upload_id for upload in listed if upload.key == key}

    async def _abort_orphans(self, bucket: str, key: str, known: set[str] | None) -> None:
        """Abort the uploads to exactly ``key`` whose ids are not in ``known`` (``None``:
        all). Best effort: errors are swallowed, the attempt's own error is what matters."""
        with contextlib.suppress(StorageError):
            for upload_id in await self._upload_ids(bucket, key) - (known or set()):
                await self.abort_multipart_upload(bucket, key, upload_id)
                self.orphans_aborted += 1

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: Body,
        *,
        sha256: str | None = None,
    ) -> str:
        """Upload part ``number`` (1-based); returns its ETag. ``sha256``: the body's,
        when known (signed as its payload hash, when payloads are signed)."""
        query = [("partNumber", str(number)), ("uploadId", upload_id)]
        req = Request(
            "PUT",
            bucket,
            key,
            query=query,
            body=body,
            payload_sha256=await self.payload_hash(body, sha256=sha256),
        )
        return str((await self._call(req)).headers.get("etag", ""))

    async def upload_part_copy(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        *,
        source_bucket: str,
        source_key: str,
        start: int,
        end: int,
        source_etag: str | None = None,
    ) -> str:
        """Make part ``number`` from bytes ``[start, end)`` of another object; returns its ETag."""
        headers = {
            "x-amz-copy-source": copy_source(source_bucket, source_key),
            "x-amz-copy-source-range": f"bytes={start}-{end - 1}",
        }
        if source_etag:
            headers["x-amz-copy-source-if-match"] = source_etag
        query = [("partNumber", str(number)), ("uploadId", upload_id)]
        req = Request("PUT", bucket, key, query=query, headers=headers)
        return s3xml.parse_etag((await self._call(req, error_in_body=True)).body)

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        etags: list[str],
        *,
        if_none_match: bool = False,
        landed: Callable[[ObjectInfo], bool] | None = None,
    ) -> str:
        """Assemble parts 1..n (``etags`` in order) into the object; returns its ETag.

        ``if_none_match``: only if the key does not exist (else ``PreconditionFailed``).
        ``landed``: whether an object found at ``key`` is the one this upload makes
        (size, ``sha256`` metadata). A retry that finds the upload gone
        (``NoSuchUpload``: an earlier attempt completed it, its answer lost) HEADs
        the key and returns that object's ETag if ``landed`` accepts it; otherwise,
        or without ``landed``, ``NoSuchUpload`` is raised.
        """
        body = s3xml.complete_body(etags)
        headers = {"If-None-Match": "*"} if if_none_match else {}
        req = Request(
            "POST",
            bucket,
            key,
            query=[("uploadId", upload_id)],
            headers=headers,
            body=body,
            payload_sha256=await sha256_hex(body),
        )
        tries = 0

        async def attempt() -> str:
            nonlocal tries
            tries += 1
            try:
                return s3xml.parse_etag((await self._attempt(req, error_in_body=True)).body)
            except S3NotFound as exc:
                if exc.code != NO_SUCH_UPLOAD or tries == 1 or landed is None:
                    raise
                info = await self.head_object(bucket, key)
                if info is None or not landed(info):
                    raise
                return info.etag

        return await self._retrying(attempt)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; an already gone upload is fine."""
        req = Request("DELETE", bucket, key, query=[("uploadId", upload_id)])
        try:
            await self._call(req, ok=(200, 204))
        except S3NotFound as exc:
            if exc.code != NO_SUCH_UPLOAD:
                raise
