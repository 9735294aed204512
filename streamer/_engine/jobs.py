"""The job model: a job, its files, their states and the JSON the API shows.

A job moves ``pending → in_progress → completed | failed | cancelled``; each of
its files moves ``queued → transferring → completed | skipped | error |
cancelled``. The JSON shapes (``Job.to_json``, ``FileTask.to_json``) are seed
000's, with a few extra fields.
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class FileStatus(enum.StrEnum):
    QUEUED = "queued"
    TRANSFERRING = "transferring"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (FileStatus.QUEUED, FileStatus.TRANSFERRING)


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, as the API reports times."""
    return time.time_ns() // 1_000_000


def new_job_id() -> str:
    return f"transfer-{secrets.token_hex(8)}"


@dataclass(slots=True)
class FileTask:
    """One file of a job: where it comes from, where it goes, how far it got.

    ``size`` is -1 (``UNKNOWN_SIZE``) for an import file whose server did not
    declare a length; the runner sets it once the file has been read.
    """

    index: int
    source: str
    destination: str
    size: int
    mtime_ns: int | None = None
    status: FileStatus = FileStatus.QUEUED
    loaded: int = 0
    sha256: str | None = None
    final_path: str | None = None
    error: str | None = None
    message: str | None = None
    #: What the source says the content hashes to (S3 metadata, Hub LFS pointer).
    expected_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.source,
            "destination": self.final_path or self.destination,
            "size": self.size,
            "loaded": self.loaded,
            "status": self.status.value,
            "sha256": self.sha256,
            "error": self.error,
            "message": self.message,
        }


@dataclass(slots=True)
class JobError:
    """An entry of ``job.errors``: seed 000's ``{file, error, message}``."""

    file: str | None
    error: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "error": self.error, "message": self.message}


@dataclass(slots=True)
class Job:
    """A unit of work run by the engine; ``spec`` is what the kind's runner needs.

    The counters are kept current as files change state, so a snapshot is cheap.
    ``version`` increases on every change; :attr:`changed` is set (and replaced)
    each time, which is how watchers wait without polling.
    """

    id: str
    kind: str
    spec: dict[str, Any]
    files: list[FileTask] = field(default_factory=list)
    status: JobStatus = JobStatus.PENDING
    created_at: int = field(default_factory=now_ms)
    started_at: int | None = None
    finished_at: int | None = None
    job_errors: list[JobError] = field(default_factory=list)
    current: FileTask | None = None
    version: int = 0
    changed: trio.Event = field(default_factory=trio.Event)
    # Summary counters, authoritative when ``files`` is not loaded.
    total_files: int = 0
    total_bytes: int = 0
    files_completed: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    bytes_transferred: int = 0

    def touch(self) -> None:
        """Record a change and wake every watcher."""
        self.version += 1
        self.changed.set()
        self.changed = trio.Event()

    def recount(self) -> None:
        """Recompute the summary counters from ``files``."""
        self.total_files = len(self.files)
        self.total_bytes = sum(max(f.size, 0) for f in self.files)  # -1: not known yet
        self.files_completed = sum(f.status is FileStatus.COMPLETED for f in self.files)
        self.files_failed = sum(f.status is FileStatus.ERROR for f in self.files)
        self.files_skipped = sum(f.status is FileStatus.SKIPPED for f in self.files)
        self.bytes_transferred = sum(f.loaded for f in self.files)

    @property
    def errors(self) -> list[JobError]:
        file_errors = [
            JobError(f.source, f.error, f.message or f.error)
            for f in self.files
            if f.status is FileStatus.ERROR and f.error
        ]
        return self.job_errors + file_errors

    def to_json(self, errors: list[JobError] | None = None) -> dict[str, Any]:
        """The ``job`` object of the API and of SSE events."""
        return {
            "id": self.id,
            "type": self.kind,
            "status": self.status.value,
            "filesCompleted": self.files_completed,
            "filesFailed": self.files_failed,
            "filesSkipped": self.files_skipped,
            "totalFiles": self.total_files,
            "bytesTransferred": self.bytes_transferred,
            "totalBytes": self.total_bytes,
            "createdAt": self.created_at,
            "startTime": self.started_at,
            "endTime": self.finished_at,
            "errors": [e.to_json() for e in (self.errors if errors is None else errors)],
            "source": self.spec.get("source"),
            "destination": self.spec.get("destination"),
        }
