"""Worker jobs (seed 004): the stored record, the request bodies and the job JSON.

Bodies and the job JSON are camelCase like seed 000's; the record is snake_case
and keeps times as seconds since the epoch.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec


class JobStatus(enum.StrEnum):
    """pending → processing → completed | failed (processing → pending on a lost lease)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class Place(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    """A file in a local location: ``{"locationId", "path"}``."""

    location_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class CreateJob(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="camel"
):
    """``POST /api/worker/jobs``."""

    source: Place
    output: Place
    metadata: dict[str, Any] = {}


class ClaimRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    """``POST /api/worker/jobs/claim``."""

    worker_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class FailRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``POST /api/worker/jobs/<id>/fail``: ``retry`` puts the job back if attempts remain."""

    message: Annotated[str, msgspec.Meta(max_length=8192)]
    retry: bool = False


class WorkLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds a worker may spend on a claimed job's source ``download``, its
    ``command`` and its result ``upload`` (``worker.*_timeout``), sent with every
    claim; a worker's own flags override them."""

    download: float = 1800.0
    upload: float = 1800.0
    command: float = 21600.0


class WorkerJob(msgspec.Struct, kw_only=True):
    """One job as stored. ``source_*`` caches the source's hash with the size and
    mtime it was taken at; ``upload_*`` is what the current attempt's upload declared
    (``Upload-Length``, ``X-Checksum-Sha256``), kept for its resumption."""

    id: str
    status: JobStatus
    source_location: str
    source_path: str
    output_location: str
    output_path: str
    metadata: dict[str, Any] = {}
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_sha256: str | None = None
    worker_id: str | None = None
    claim_id: str | None = None  # the ``jti`` of the current claim's job token
    attempts: int = 0
    max_attempts: int
    lease_expires_at: float | None = None
    created_at: float
    updated_at: float
    error: str | None = None
    result_size: int | None = None
    result_sha256: str | None = None
    upload_length: int | None = None
    upload_sha256: str | None = None

    @property
    def upload_tag(self) -> str:
        """Names the current attempt's staged upload (``.streamer-<tag>.part``)."""
        return f"worker-{self.id}-{self.attempts}"

    def finish(self, status: JobStatus, *, error: str | None) -> None:
        """End the current claim's lease with ``status`` (its upload declarations go)."""
        self.status = status
        self.lease_expires_at = None
        self.upload_length = self.upload_sha256 = None
        self.error = error

    def unclaim(self, *, error: str | None) -> None:
        """Back to ``pending``, claimed by nobody."""
        self.finish(JobStatus.PENDING, error=error)
        self.worker_id = self.claim_id = None


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def job_json(job: WorkerJob) -> dict[str, Any]:
    """The job as the API shows it (see the worker contract)."""
    result = None
    if job.status is JobStatus.COMPLETED:
        result = {"size": job.result_size, "sha256": job.result_sha256}
    return {
        "id": job.id,
        "status": job.status.value,
        "source": {
            "locationId": job.source_location,
            "path": job.source_path,
            "size": job.source_size,
            "sha256": job.source_sha256,
        },
        "output": {"locationId": job.output_location, "path": job.output_path},
        "metadata": job.metadata,
        "workerId": job.worker_id,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "leaseExpiresAt": iso(job.lease_expires_at),
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "error": job.error,
        "result": result,
    }
