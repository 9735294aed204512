"""What the transfer API answers, as typed values (seed 000's JSON shapes).

Decoding ignores fields this client does not know, so a newer node still talks
to an older client; encoding a value with ``msgspec.json.encode`` gives back the
node's camelCase JSON for the fields listed here.
"""

from __future__ import annotations

from typing import Any

import msgspec

FINISHED = frozenset({"completed", "failed", "cancelled"})


class _Answer(msgspec.Struct, rename="camel"):
    """Base of every answer: camelCase on the wire, unknown fields ignored."""


class JobError(_Answer):
    """An entry of ``job.errors``: the file (``None`` for the job as a whole), a code, a text."""

    error: str
    message: str
    file: str | None = None


class Job(_Answer):
    """A job as ``GET /api/transfer/:id`` and every SSE event show it."""

    id: str
    status: str
    type: str = ""
    files_completed: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    total_files: int = 0
    bytes_transferred: int = 0
    total_bytes: int = 0
    created_at: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    errors: list[JobError] = []
    source: dict[str, Any] | None = None
    destination: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        """Completed with no error at all (what exit code 0 of the CLI means)."""
        return self.status == "completed" and not self.errors


class FileState(_Answer):
    """One file of a job (``GET /api/transfer/:id/files``)."""

    path: str
    status: str
    destination: str | None = None
    size: int = -1
    loaded: int = 0
    sha256: str | None = None
    error: str | None = None
    message: str | None = None


class CurrentFile(_Answer):
    """The file in flight, as a ``progress`` event carries it."""

    path: str
    loaded: int = 0
    total: int = -1
    status: str = ""


class Event(_Answer):
    """One SSE message: ``progress``, or the final ``complete``, ``error`` or ``cancelled``."""

    type: str
    job: Job
    current_file: CurrentFile | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.type in ("complete", "error", "cancelled") or self.job.finished


class Submitted(_Answer):
    """The answer of ``POST /api/transfer``."""

    job_id: str
    status: str
    files_queued: int
    estimated_bytes: int


class LargeFolderWarning(_Answer):
    type: str
    file_count: int
    total_size: int
    message: str


class Conflicts(_Answer):
    """The answer of ``POST /api/transfer/check-conflicts``: source paths by whether
    the destination already has them."""

    conflicts: list[str]
    non_conflicting: list[str]
    warning: LargeFolderWarning | None = None


class Cancelled(_Answer):
    message: str
    job_id: str
    files_completed: int
    total_files: int


class Uploaded(_Answer):
    """The answer of ``PUT /api/upload/…``; ``path`` is ``None`` when the file was skipped."""

    job_id: str
    path: str | None
    size: int
    sha256: str | None
