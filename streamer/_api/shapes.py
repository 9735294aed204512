"""The JSON shapes of engine objects as the API shows them, as types for the
OpenAPI document.

The engine builds these objects as dicts (``Job.to_json``, ``FileTask.to_json``,
``check_conflicts``, the worker's ``job_json``); the types here describe them and
are checked against them strictly (every field required, no unknown field) by the test suite, so the
description cannot drift from what is sent.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .._engine import JobStatus
from .._engine.jobs import FileStatus
from .._worker.models import JobStatus as WorkerJobStatus


class _Shape(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class JobErrorShape(_Shape):
    """An entry of ``job.errors``: the file it concerns (null: the whole job)."""

    file: str | None
    error: str
    message: str


class JobShape(_Shape):
    """A job; times are milliseconds since the epoch."""

    id: str
    type: str
    status: JobStatus
    files_completed: int
    files_failed: int
    files_skipped: int
    total_files: int
    bytes_transferred: int
    total_bytes: int
    created_at: int
    start_time: int | None
    end_time: int | None
    errors: list[JobErrorShape]
    source: dict[str, Any] | None
    destination: dict[str, Any] | None


class FileShape(_Shape):
    """A file of a job; ``size`` is -1 while an import's size is unknown."""

    path: str
    destination: str
    size: int
    loaded: int
    status: FileStatus
    sha256: str | None
    error: str | None
    message: str | None


class LargeFolderWarning(_Shape):
    type: Literal["large_folder"]
    file_count: int
    total_size: int
    message: str


class ConflictCheck(_Shape):
    """Which source files already exist at the destination (by source path)."""

    conflicts: list[str]
    non_conflicting: list[str]
    warning: LargeFolderWarning | msgspec.UnsetType = msgspec.UNSET


class WorkerSource(_Shape):
    """The job's input; ``size`` and ``sha256`` appear once the background hash is done."""

    location_id: str
    path: str
    size: int | None
    sha256: str | None


class WorkerOutput(_Shape):
    location_id: str
    path: str


class WorkerResult(_Shape):
    size: int | None
    sha256: str | None


class WorkerJobShape(_Shape):
    """A worker job; times are ISO 8601 (UTC)."""

    id: str
    status: WorkerJobStatus
    source: WorkerSource
    output: WorkerOutput
    metadata: dict[str, Any]
    worker_id: str | None
    attempts: int
    max_attempts: int
    lease_expires_at: str | None
    created_at: str | None
    updated_at: str | None
    error: str | None
    result: WorkerResult | None
