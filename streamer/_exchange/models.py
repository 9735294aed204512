"""The exchange's records and wire shapes (seed 003's models, snake_case)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


class TransferStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"


class TransferRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``POST /api/v1/transfers``.

    ``direction: upload`` is server → worker (stage ``path`` of ``location_id``);
    ``download`` is worker → server (the worker's upload lands at ``path``).
    """

    worker_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256, examples=["worker-1"])]
    direction: Literal["upload", "download"]
    location_id: Annotated[str, msgspec.Meta(min_length=1, examples=["local-0"])]
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, examples=["models/a.bin"])]
    original_filename: str | None = None
    content_type: str | None = None
    checksum: Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)] | None = None
    file_size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    expires_in: Annotated[float, msgspec.Meta(gt=0)] | None = None
    metadata: dict[str, Any] = {}


class Transfer(msgspec.Struct, kw_only=True):
    """One transfer as stored; times are seconds since the epoch."""

    id: str
    worker_id: str
    direction: Literal["upload", "download"]
    location_id: str
    path: str
    original_filename: str
    content_type: str | None
    checksum: str | None  # declared (lower-case hex)
    sha256: str | None  # of the plaintext, once known
    file_size: int | None
    status: TransferStatus
    bytes_transferred: int = 0
    error_message: str | None = None
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float
    metadata: dict[str, Any] = {}

    @property
    def scope(self) -> Literal["download", "upload"]:
        """What the worker does: download what we staged, or upload its result."""
        return "download" if self.direction == "upload" else "upload"

    @property
    def finished(self) -> bool:
        return self.status in (
            TransferStatus.COMPLETED,
            TransferStatus.FAILED,
            TransferStatus.EXPIRED,
        )


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


class FileTransferStatus(msgspec.Struct, kw_only=True):
    """Seed 003's ``FileTransferStatus``; times are ISO 8601 (UTC)."""

    transfer_id: str
    status: TransferStatus
    progress_percent: float
    bytes_transferred: int
    total_bytes: int
    error_message: str | None
    started_at: str | None
    completed_at: str | None
    direction: Literal["upload", "download"]
    worker_id: str
    checksum: str | None
    expires_at: str | None


class FileTransferResponse(msgspec.Struct, kw_only=True):
    """Seed 003's ``FileTransferResponse``: where and how the worker moves the file."""

    transfer_id: str
    status: TransferStatus
    download_url: str | None
    upload_url: str | None
    auth_token: str
    expires_at: str | None
    message: str
    checksum: str | None
    file_size: int | None


def status_json(t: Transfer) -> FileTransferStatus:
    """Seed 003's ``FileTransferStatus`` of ``t``."""
    total = t.file_size or 0
    if t.status is TransferStatus.COMPLETED:
        percent = 100.0
    else:
        percent = round(100.0 * t.bytes_transferred / total, 2) if total else 0.0
    return FileTransferStatus(
        transfer_id=t.id,
        status=t.status,
        progress_percent=min(percent, 100.0),
        bytes_transferred=t.bytes_transferred,
        total_bytes=total,
        error_message=t.error_message,
        started_at=iso(t.started_at),
        completed_at=iso(t.completed_at),
        direction=t.direction,
        worker_id=t.worker_id,
        checksum=t.sha256 or t.checksum,
        expires_at=iso(t.expires_at),
    )
