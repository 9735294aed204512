"""The errors of worker jobs (each a JSON 4xx with its code at the HTTP edge)."""

from __future__ import annotations

from .._errors import BadRequest, Conflict, StreamerError


class NotProcessing(BadRequest):
    code = "job_not_processing"


class LeaseLost(Conflict):
    code = "lease_lost"


class ChecksumMismatch(BadRequest):
    code = "checksum_mismatch"


class UploadTooLong(StreamerError):
    status_code = 413
    code = "upload_too_long"
