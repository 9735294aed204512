"""The runner for ``local-upload`` jobs: a client streams one file into a location.

The bytes come from an HTTP request body, which the API hands over with
:meth:`UploadRunner.attach` before submitting the job; the job then runs like any
other (queued behind the shared limiter, visible through SSE, cancellable).
The body goes through the same pipeline (sha256, progress) into a writer and is
published only when its length matches ``Content-Length`` (when sent) and its
SHA-256 matches ``X-Checksum-Sha256`` (when sent): otherwise nothing lands.
Uploads cannot resume after a restart (the body is gone): such jobs fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import msgspec

from .._concurrency import cleanup
from .._errors import ChecksumMismatch, PayloadTooLarge, StorageError, StreamerError
from .._pipeline import Progress, Sha256, coalesce, pump
from .._storage import Conflict, Storage
from .._storage.base import UNKNOWN_SIZE
from .._storage.registry import Locations
from .engine import JobControl
from .jobs import Job
from .transfer import LocalEndpoint

CHUNK = 1 << 20


class UploadSpec(msgspec.Struct, frozen=True, rename="camel"):
    """What a ``local-upload`` job persists (its ``spec``)."""

    destination: LocalEndpoint
    conflict_resolution: str = "overwrite"


@dataclass(slots=True)
class _Pending:
    body: AsyncIterable[bytes]
    declared_sha256: str | None
    max_bytes: int
    error: StreamerError | None = None


async def _limited(body: AsyncIterable[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """Pass the body through, failing once it exceeds ``max_bytes`` (0: no cap)."""
    seen = 0
    async for piece in body:
        seen += len(piece)
        if max_bytes and seen > max_bytes:
            raise PayloadTooLarge(f"upload exceeds the {max_bytes}-byte limit")
        yield piece


class UploadRunner:
    """See the module docstring."""

    resumable = False

    def __init__(self, locations: Locations) -> None:
        self._locations = locations
        self._pending: dict[str, _Pending] = {}

    def attach(
        self, job: Job, body: AsyncIterable[bytes], *, declared_sha256: str | None, max_bytes: int
    ) -> None:
        """Hand the request body of ``job`` (not yet submitted) to the runner."""
        self._pending[job.id] = _Pending(body, declared_sha256, max_bytes)

    def error_of(self, job: Job) -> StreamerError | None:
        """The failure of a finished upload job, to answer its request with (then forgotten)."""
        pending = self._pending.pop(job.id, None)
        return None if pending is None else pending.error

    async def recover(self, job: Job) -> None:
        return None  # not resumable: the engine fails interrupted uploads

    async def run(self, job: Job, control: JobControl) -> None:
        """Receive the body into place. Every failure (the destination's lookup
        included) is the file's error and is kept for :meth:`error_of`, class and
        status intact."""
        pending = self._pending[job.id]
        file = job.files[0]
        control.file_started(file)
        try:
            spec = msgspec.convert(job.spec, UploadSpec)
            storage = self._locations.destination(spec.destination)
            final, digest, size = await self._receive(
                storage, job, pending, Conflict(spec.conflict_resolution), control
            )
        except StreamerError as exc:
            pending.error = exc
            control.file_failed(file, exc)
            return
        if file.size == UNKNOWN_SIZE:
            control.file_sized(file, size)
        if final is None:
            control.file_skipped(file)
        else:
            control.file_completed(file, sha256=digest, final_path=final)

    async def _receive(
        self, storage: Storage, job: Job, pending: _Pending, conflict: Conflict, control: JobControl
    ) -> tuple[str | None, str, int]:
        file = job.files[0]
        digest = Sha256()
        progress = Progress(lambda loaded: control.file_progress(file, loaded))
        writer = await storage.open_writer(file.destination, conflict=conflict, tag=job.id)
        try:
            body = coalesce(_limited(pending.body, pending.max_bytes), CHUNK)
            await pump(body, [digest, progress], writer)
            assert digest.hexdigest is not None
            if file.size != UNKNOWN_SIZE and progress.total != file.size:
                raise StorageError(
                    f"the body ended after {progress.total} of {file.size} bytes",
                    code="IncompleteBody",
                )
            if pending.declared_sha256 and pending.declared_sha256 != digest.hexdigest:
                raise ChecksumMismatch(
                    f"the body hashes to {digest.hexdigest}, "
                    f"X-Checksum-Sha256 declared {pending.declared_sha256}"
                )
            final = await writer.commit(sha256=digest.hexdigest, mtime_ns=None)
        finally:
            await cleanup(writer.abort)
        return final, digest.hexdigest, progress.total
