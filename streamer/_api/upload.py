"""``PUT /api/upload/:locationId/*path``: stream one file into a local location (seed 001's
``local-upload``), as a job with progress like any other."""

from __future__ import annotations

from typing import Literal

import msgspec
from quart import Blueprint, Response, request

from .. import _paths
from .._engine import FileTask, Job, JobStatus
from .._engine.jobs import JobError, new_job_id
from .._engine.transfer import LocalEndpoint
from .._engine.upload import UploadRunner, UploadSpec
from .._errors import (
    BadRequest,
    Conflict,
    PayloadTooLarge,
    StorageError,
    StreamerError,
    UnsupportedStorage,
)
from .._storage.base import UNKNOWN_SIZE
from . import wire
from .app import json_response, read_query, services
from .describe import Stream, describe

blueprint = Blueprint("upload", __name__)

#: Prefix of the routes whose bodies are streams (no MAX_CONTENT_LENGTH, back-pressure).
STREAMING_PREFIXES = (("PUT", "/api/upload/"),)


class UploadQuery(msgspec.Struct, rename="camel"):
    conflict_resolution: Literal["overwrite", "skip", "rename"] = "overwrite"


class Uploaded(msgspec.Struct, rename="camel"):
    """The landed file (``path`` is null when skipped as a conflict)."""

    job_id: str
    path: str | None
    size: int
    sha256: str | None


@blueprint.put("/api/upload/<location_id>/<path:path>")
@describe(
    "Upload a file into a local location",
    body=Stream("The file's bytes (streamed; memory stays flat)."),
    query=UploadQuery,
    headers=(wire.CHECKSUM_HEADER,),
    params={
        "location_id": "A local location's id, e.g. local-0.",
        "path": "The file's path inside the location (may contain '/').",
    },
    responses={201: Uploaded, 200: Uploaded},
    errors={
        409: "The upload was cancelled.",
        413: "The body exceeds uploads.max_bytes.",
        422: "The bytes do not match X-Checksum-Sha256.",
        502: "The destination storage failed (the code names how).",
    },
)
async def upload(location_id: str, path: str) -> Response:
    """Stream the raw body into ``path`` of the local location ``location_id``.

    Headers: ``Content-Length`` (checked when sent), ``X-Checksum-Sha256`` (must
    match, else 422 and nothing lands). Query: ``conflictResolution`` =
    ``overwrite`` (default, as PUT means), ``skip`` or ``rename``.
    Answers 201 ``{jobId, path, size, sha256}`` once the file is in place.
    """
    svc = services()
    uploads = svc.uploads
    if uploads is None:
        raise UnsupportedStorage("uploads are not enabled on this node", code="uploads_disabled")
    destination = LocalEndpoint(location_id=location_id, path="")
    svc.locations.destination(destination)  # 400 for an unknown location
    target = _paths.clean_base(path, what="upload path")
    if not target:
        raise BadRequest("name the file to upload: /api/upload/<locationId>/<path>")
    declared = wire.declared_checksum()
    conflict = read_query(UploadQuery).conflict_resolution
    length = request.content_length
    if uploads.max_bytes and length is not None and length > uploads.max_bytes:
        raise PayloadTooLarge(
            f"upload of {length} bytes exceeds the {uploads.max_bytes}-byte limit"
        )

    spec = UploadSpec(destination=destination, conflict_resolution=conflict)
    size = UNKNOWN_SIZE if length is None else length
    job = Job(
        id=new_job_id(),
        kind="local-upload",
        spec=msgspec.to_builtins(spec),
        files=[FileTask(0, f"upload:{target}", target, size)],
    )
    uploads.runner.attach(
        job,
        request.body,
        declared_sha256=declared,
        max_bytes=uploads.max_bytes,
    )
    svc.engine.submit(job)
    try:
        while not job.status.finished:
            await job.changed.wait()
    finally:
        if not job.status.finished:  # the client went away: stop the job too
            svc.engine.cancel(job.id)
    error = uploads.runner.error_of(job)
    if error is not None:
        raise error
    if job.status is JobStatus.CANCELLED:
        raise Conflict(f"upload job {job.id} was cancelled; nothing was written", code="cancelled")
    if job.errors:
        raise _recorded_failure(job.errors[0])
    file = job.files[0]
    return json_response(
        Uploaded(job_id=job.id, path=file.final_path, size=file.size, sha256=file.sha256),
        201 if file.final_path else 200,
    )


def _recorded_failure(error: JobError) -> StreamerError:
    """The answer for an error the engine recorded without the runner seeing it
    (the runner keeps every :class:`StreamerError` of its own): a crash stays a
    500 ``internal_error``; anything else failed below the API, hence a 502."""
    if error.error == StreamerError.code:
        return StreamerError(error.message)
    return StorageError(error.message, code=error.error)


class Uploads:
    """The upload endpoint's collaborators (kept on :class:`Services`)."""

    def __init__(self, runner: UploadRunner, *, max_bytes: int = 0) -> None:
        self.runner = runner
        self.max_bytes = max_bytes
