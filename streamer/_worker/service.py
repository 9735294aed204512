"""Worker jobs (seed 004): create, list, claim with a lease, heartbeat, fail, release,
serve the source, receive the result; a sweeper returns expired leases.

* :meth:`WorkerJobs.create` records a ``pending`` job and hashes its source in the
  background (the hash is cached with the file's size and mtime; a download waits
  for it, or hashes again if the file changed).
* :meth:`WorkerJobs.claim` hands the oldest pending job to a worker (``processing``,
  one more attempt, a lease of ``lease_seconds``) with a job token for that claim.
  :meth:`heartbeat` renews the lease; :meth:`fail`, :meth:`release` and an expired
  lease (:meth:`sweep`, run every ``sweep_interval`` by :meth:`run`) put the job back
  to ``pending`` or, once its attempts are spent, ``failed``.
* :meth:`receive` streams the worker's result into a temp file beside the output
  path (``.streamer-worker-<id>-<attempt>.part``), hashing it on the way. A cut body
  keeps what arrived; :meth:`upload_offset` finds it again and a later call with
  that ``offset`` continues it. The staged prefix is hashed again from disk unless a
  request of this process staged it and ended cleanly (a body shorter than
  ``Upload-Length``): then its hash, kept for that file and length, goes on. Once
  complete it is checked against the declared checksum, fsynced and renamed into
  place, and the job is ``completed``.

Every state change reloads the record and saves it without an ``await`` in between,
so the event loop never interleaves two changes of one job.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import trio

from .. import _paths
from .._concurrency import cleanup, run_every
from .._errors import BadRequest, Conflict, InvalidPath, NotFound, SourceNotFound, StreamerError
from .._pipeline import Sha256, capped, write_through
from .._storage import Conflict as ConflictPolicy
from .._storage.local import LocalStorage
from .._storage.registry import Locations
from .errors import ChecksumMismatch, LeaseLost, NotProcessing, UploadTooLong
from .models import CreateJob, JobStatus, WorkerJob, WorkLimits
from .staged import StagedHashes, staged_file
from .store import WorkerJobStore
from .tokens import JobClaims, JobTokenSigner

log = logging.getLogger("streamer.worker")

READ_CHUNK = 1 << 20
HASH_ROUNDS = 4  # a source that changes this often while hashed is refused
#: How long a request for an upload waits for another one of the same job to end (a
#: cut connection the server has not noticed yet) before answering 409.
SETTLE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Received:
    """Where an upload stands after a request: ``complete`` once the job is done."""

    job: WorkerJob
    offset: int
    complete: bool


class WorkerJobs:
    """See the module docstring. ``clock`` gives seconds since the epoch (tests drive it);
    ``limits`` are the time limits every claim tells its worker."""

    def __init__(
        self,
        store: WorkerJobStore,
        locations: Locations,
        signer: JobTokenSigner,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        token_ttl: float = 86400.0,
        sweep_interval: float = 10.0,
        limits: WorkLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.limits = limits or WorkLimits()
        self.signer = signer
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.token_ttl = token_ttl
        self.sweep_interval = sweep_interval
        self._locations = locations
        self._clock = clock
        self._nursery: trio.Nursery | None = None
        self._hashing: dict[str, trio.Event] = {}
        self._receiving: dict[str, trio.Event] = {}
        self._staged_hashes = StagedHashes()

    def close(self) -> None:
        self.store.close()

    # -- records -----------------------------------------------------------

    async def create(self, request: CreateJob) -> WorkerJob:
        """Record a pending job; 400 unless the source is a file in a local location and
        both paths are clean relative paths inside their locations."""
        source_path = _clean(request.source.path, "source.path")
        output_path = _clean(request.output.path, "output.path")
        source = self._local(request.source.location_id)
        output = self._local(request.output.location_id)
        entry = await source.stat(source_path)  # InvalidPath for a symlink leading out
        if entry is None or entry.is_dir:
            raise BadRequest(
                f"source {request.source.location_id}:{source_path} is not a file",
                code="source_not_found",
            )
        await trio.to_thread.run_sync(output.resolve, output_path)  # the same for the output
        now = self._clock()
        job = WorkerJob(
            id=str(uuid.uuid4()),
            status=JobStatus.PENDING,
            source_location=request.source.location_id,
            source_path=source_path,
            output_location=request.output.location_id,
            output_path=output_path,
            metadata=request.metadata,
            max_attempts=self.max_attempts,
            created_at=now,
            updated_at=now,
        )
        self.store.insert(job)
        if self._nursery is not None:
            self._nursery.start_soon(self._hash_in_background, job.id)
        return job

    def get(self, job_id: str) -> WorkerJob:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no worker job {job_id!r}")
        return job

    def jobs(self, status: JobStatus | None = None) -> list[WorkerJob]:
        return self.store.jobs(status)

    # -- claims --------------------------------------------------------------

    async def claim(self, worker_id: str) -> tuple[WorkerJob, str] | None:
        """The oldest pending job, now ``processing`` for ``worker_id``, and its job
        token; None when nothing is pending. Expired leases are returned first."""
        await self.sweep()
        now = self._clock()
        claim_id = self.signer.new_claim_id()
        job = self.store.claim(worker_id, claim_id, now=now, lease_until=now + self.lease_seconds)
        if job is None:
            return None
        log.info("worker job %s: claimed by %s (attempt %d)", job.id, worker_id, job.attempts)
        token = self.signer.issue(job.id, worker_id, job.attempts, claim_id, ttl=self.token_ttl)
        return job, token

    def claimed(self, job_id: str, claims: JobClaims | None) -> WorkerJob:
        """The job if it is ``processing`` (400 otherwise, 404 if unknown) under the claim
        ``claims`` names (409 ``lease_lost`` if it was re-claimed); ``claims`` None (an
        operator's API token) skips the claim check."""
        job = self.get(job_id)
        if job.status is not JobStatus.PROCESSING:
            raise NotProcessing(f"worker job {job_id} is {job.status.value}, not processing")
        if claims is not None and (
            claims.worker_id != job.worker_id
            or claims.attempt != job.attempts
            or claims.claim_id != job.claim_id
        ):
            raise LeaseLost(
                f"worker job {job_id} is no longer claimed by {claims.worker_id!r} "
                f"(attempt {claims.attempt}); its lease expired or it was released"
            )
        return job

    def heartbeat(self, job_id: str, claims: JobClaims | None) -> WorkerJob:
        """Renew the claim's lease for another ``lease_seconds``."""
        job = self.claimed(job_id, claims)
        now = self._clock()
        job.lease_expires_at = now + self.lease_seconds
        job.updated_at = now
        self.store.save(job)
        return job

    async def fail(
        self, job_id: str, claims: JobClaims | None, message: str, *, retry: bool
    ) -> WorkerJob:
        """End the claim as a failure: ``pending`` again if ``retry`` and attempts remain,
        else ``failed`` with ``message``."""
        job = self._ending(job_id, claims)
        tag = job.upload_tag
        if retry and job.attempts < job.max_attempts:
            job.unclaim(error=message)
        else:
            job.finish(JobStatus.FAILED, error=message)
        job.updated_at = self._clock()
        self.store.save(job)
        log.info("worker job %s: failed (%s) -> %s", job.id, message, job.status.value)
        await self._drop_upload(job, tag)
        return job

    async def release(self, job_id: str, claims: JobClaims | None) -> WorkerJob:
        """Give the job back (a worker shutting down): ``pending``, the attempt uncounted."""
        job = self._ending(job_id, claims)
        tag = job.upload_tag
        job.unclaim(error=None)
        job.attempts -= 1
        job.updated_at = self._clock()
        self.store.save(job)
        log.info("worker job %s: released", job.id)
        await self._drop_upload(job, tag)
        return job

    def _ending(self, job_id: str, claims: JobClaims | None) -> WorkerJob:
        job = self.claimed(job_id, claims)
        if job_id in self._receiving:
            raise Conflict(f"worker job {job_id} is receiving an upload; retry when it ends")
        return job

    async def sweep(self) -> int:
        """Return every job whose lease expired to ``pending`` (the attempt counts), or
        mark it ``failed`` once its attempts are spent; return how many. Jobs receiving
        an upload right now are left alone (they are busy, not gone)."""
        now = self._clock()
        swept = [j for j in self.store.expired_leases(now) if j.id not in self._receiving]
        tags = []
        for job in swept:  # records first: nobody may use the old claims from now on
            tags.append(job.upload_tag)
            if job.attempts >= job.max_attempts:
                job.finish(JobStatus.FAILED, error=f"lease expired after {job.attempts} attempts")
            else:
                job.unclaim(error=f"lease of attempt {job.attempts} expired")
            job.updated_at = now
            self.store.save(job)
            log.info("worker job %s: lease expired -> %s", job.id, job.status.value)
        for job, tag in zip(swept, tags, strict=True):
            await self._drop_upload(job, tag)
        return len(swept)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work: source hashing of new jobs, and the lease sweeper (once at
        start, then every ``sweep_interval`` seconds)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await run_every(
                    self.sweep_interval,
                    self.sweep,
                    errors=(OSError, StreamerError),
                    logger=log,
                    what="worker lease sweep",
                    task_status=task_status,
                )
            finally:
                self._nursery = None

    # -- the source ----------------------------------------------------------

    async def source(self, job: WorkerJob) -> tuple[int, str]:
        """The source's current size and SHA-256: the cached hash if the file still has
        the size and mtime it was hashed at, else (after waiting for a hash in progress)
        a fresh one. 404 if the file is gone."""
        storage = self._local(job.source_location)
        for _ in range(HASH_ROUNDS):
            entry = await storage.stat(job.source_path)
            if entry is None or entry.is_dir:
                raise SourceNotFound(f"the source of worker job {job.id} is missing")
            current = self.get(job.id)
            if current.source_sha256 is not None and (
                current.source_size,
                current.source_mtime_ns,
            ) == (entry.size, entry.mtime_ns):
                return entry.size, current.source_sha256
            running = self._hashing.get(job.id)
            if running is not None:
                await running.wait()
            else:
                await self._hash_source(job.id)
        raise Conflict(f"the source of worker job {job.id} keeps changing", code="source_changing")

    def read_source(self, job: WorkerJob, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start .. end - 1`` of the job's source."""
        storage = self._local(job.source_location)
        return storage.read(job.source_path, chunk_size=READ_CHUNK, start=start, end=end)

    async def _hash_in_background(self, job_id: str) -> None:
        try:
            await self._hash_source(job_id)
        except (OSError, StreamerError) as exc:
            log.warning("worker job %s: hashing the source failed: %s", job_id, exc)

    async def _hash_source(self, job_id: str) -> None:
        """Hash the source and cache the result with the size and mtime it was taken at
        (unless the file changed meanwhile: then nothing is cached)."""
        done = self._hashing[job_id] = trio.Event()
        try:
            job = self.get(job_id)
            storage = self._local(job.source_location)
            before = await storage.stat(job.source_path)
            if before is None or before.is_dir:
                return
            digest = Sha256()
            try:
                async for chunk in storage.read(job.source_path, chunk_size=READ_CHUNK):
                    await digest.feed(chunk)
                await digest.flush()
            finally:
                digest.close()
            after = await storage.stat(job.source_path)
            if after != before or (current := self.store.get(job_id)) is None:
                return
            current.source_size = after.size
            current.source_mtime_ns = after.mtime_ns
            current.source_sha256 = digest.hexdigest
            current.updated_at = self._clock()
            self.store.save(current)
        finally:
            del self._hashing[job_id]
            done.set()

    # -- the result ----------------------------------------------------------

    async def upload_offset(self, job: WorkerJob) -> int:
        """Bytes of the current attempt's upload safely staged (where a resume starts);
        an upload still being received is given :data:`SETTLE_SECONDS` to end first."""
        await self._settle(job.id)
        return await self._staged(job)

    async def _staged(self, job: WorkerJob) -> int:
        storage = self._local(job.output_location)
        return await storage.staged_size(job.output_path, tag=job.upload_tag)

    async def receive(
        self,
        job: WorkerJob,
        body: AsyncIterable[bytes],
        *,
        offset: int | None,
        total: int | None,
        checksum: str | None,
    ) -> Received:
        """Take (part of) the result of ``job`` (a ``processing`` job, see :meth:`claimed`).

        ``offset`` None starts over; otherwise it must equal :meth:`upload_offset` (409
        ``offset_mismatch``). ``total`` (bytes of the whole file) and ``checksum`` are
        remembered for resumptions; the upload is complete when ``total`` bytes are
        staged, or when ``body`` ends if no total is known. Bytes beyond ``total`` are
        refused (413). A complete upload whose SHA-256 is not ``checksum`` is removed
        (400 ``checksum_mismatch``); else it is renamed into place, job ``completed``.
        """
        await self._settle(job.id)
        if job.id in self._receiving:
            raise Conflict(f"worker job {job.id} is receiving on another request")
        job = self.claimed(job.id, _claim_of(job))  # it may have changed meanwhile
        ended = self._receiving[job.id] = trio.Event()
        try:
            return await self._receive(job, body, offset, total, checksum)
        finally:
            del self._receiving[job.id]
            ended.set()

    async def _settle(self, job_id: str) -> None:
        """Wait (bounded) until no request is receiving an upload for ``job_id``."""
        with trio.move_on_after(SETTLE_SECONDS):
            while (ended := self._receiving.get(job_id)) is not None:
                await ended.wait()

    async def _receive(
        self,
        job: WorkerJob,
        body: AsyncIterable[bytes],
        offset: int | None,
        total: int | None,
        checksum: str | None,
    ) -> Received:
        storage = self._local(job.output_location)
        if offset is not None:
            if total is not None and job.upload_length not in (None, total):
                raise BadRequest(f"Upload-Length {total} differs from {job.upload_length}")
            if checksum and job.upload_sha256 not in (None, checksum):
                raise BadRequest("X-Checksum-Sha256 differs from the one the upload began with")
            have = await self._staged(job)
            if offset != have:
                raise Conflict(
                    f"Upload-Offset {offset} does not match the {have} bytes received",
                    code="offset_mismatch",
                )
        job = self._declare(job, offset is None, total, checksum)
        writer = await storage.open_resumable(
            job.output_path,
            conflict=ConflictPolicy.OVERWRITE,
            tag=job.upload_tag,
            resume=offset is not None,
        )
        complete = keep = False
        try:
            staged = await trio.to_thread.run_sync(
                staged_file, storage, job.output_path, job.upload_tag
            )
            kept = await self._staged_hashes.take(job.id, staged, writer.offset)
            prefix = kept or hashlib.sha256()
            if kept is None and writer.offset:
                await writer.hash_staged(prefix.update)
            digest = Sha256(start=prefix)  # feeds ``prefix`` itself
            try:

                async def write(data: bytes) -> None:
                    await digest.feed(data)
                    await writer.write(data)

                await write_through(
                    capped(body, job.upload_length, seen=writer.offset, too_long=_too_long), write
                )
                complete = job.upload_length in (None, writer.offset)
                if not complete:
                    await digest.flush()
                    keep = True
                    return Received(job, writer.offset, False)
                await digest.flush()
            finally:
                digest.close()
            assert digest.hexdigest is not None
            size = writer.offset
            if job.upload_sha256 is not None and digest.hexdigest != job.upload_sha256:
                raise ChecksumMismatch(
                    f"the upload hashes to {digest.hexdigest}, declared {job.upload_sha256}"
                )
            self.claimed(job.id, _claim_of(job))  # still ours (the sweeper skips us)
            await writer.commit(sha256=digest.hexdigest, mtime_ns=None)
        finally:
            if complete:
                await cleanup(writer.abort)  # removes the temp unless it was published
            else:
                await cleanup(writer.suspend)  # keeps what arrived for a resume
                if keep:
                    await cleanup(self._staged_hashes.keep, job.id, staged, writer.offset, prefix)
        done = self.get(job.id)
        done.finish(JobStatus.COMPLETED, error=None)
        done.result_size, done.result_sha256 = size, digest.hexdigest
        done.updated_at = self._clock()
        self.store.save(done)
        log.info("worker job %s: completed (%d bytes, sha256 %s)", job.id, size, done.result_sha256)
        return Received(done, size, True)

    def _declare(
        self, job: WorkerJob, fresh: bool, total: int | None, checksum: str | None
    ) -> WorkerJob:
        """Record what the upload declares (a fresh one forgets the previous one's)."""
        current = self.get(job.id)
        if fresh:
            current.upload_length, current.upload_sha256 = total, checksum
        else:
            current.upload_length = current.upload_length if total is None else total
            current.upload_sha256 = current.upload_sha256 or checksum
        current.updated_at = self._clock()
        self.store.save(current)
        return current

    async def _drop_upload(self, job: WorkerJob, tag: str) -> None:
        """Remove a staged upload of an ended claim (best effort)."""
        self._staged_hashes.forget(job.id)
        try:
            await self._local(job.output_location).sweep(job.output_path, tag=tag)
        except (OSError, StreamerError) as exc:
            log.warning("worker job %s: cannot remove the staged upload: %s", job.id, exc)

    def _local(self, location_id: str) -> LocalStorage:
        storage = self._locations.get("local", location_id)
        assert isinstance(storage, LocalStorage)
        return storage


def _clean(path: str, what: str) -> str:
    cleaned = _paths.clean_relative(path, what=what)
    if not cleaned:
        raise InvalidPath(f"{what} must name a file, not the location root")
    return cleaned


def _claim_of(job: WorkerJob) -> JobClaims:
    assert job.worker_id is not None and job.claim_id is not None
    return JobClaims(job.id, job.worker_id, job.attempts, 0.0, job.claim_id)


def _too_long(limit: int) -> UploadTooLong:
    return UploadTooLong(f"the upload exceeds its declared length of {limit} bytes")
