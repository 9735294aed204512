"""``/api/worker`` (seed 004): jobs that remote workers claim, download, process and upload.

Credentials: creating a job needs the API token (the app's hook). Listing, reading
and claiming need a *worker credential* (one of ``worker.tokens`` or the API
token). Everything about one claimed job (heartbeat, fail, release, the source
download, the result upload) needs that claim's *job token* (``?token=`` or
``Authorization: Bearer``), or the API token (operators). All but ``create`` are
public to the app's hook and check their own credentials.

The seed's two endpoints stay byte-compatible: ``GET /api/worker/download-video?
job_id=`` (plus ``Range``, ``If-Range``, zstd, ``X-Checksum-Sha256``) and ``POST
/api/worker/upload-video?job_id=`` (multipart field ``video`` or ``file``, or a raw
body; resumable with ``HEAD`` / ``PATCH`` and ``Upload-Offset``, tus-style).
"""

from __future__ import annotations

import mimetypes
from typing import Annotated

import msgspec
from quart import Blueprint, Response, request

from .._errors import BadRequest, Unauthorized, UnsupportedStorage
from .._worker.errors import UploadTooLong
from .._worker.models import ClaimRequest, CreateJob, FailRequest, JobStatus, job_json
from .._worker.service import WorkerJobs
from .._worker.tokens import JobClaims
from . import wire
from .app import json_response, read_body, read_query, services
from .describe import API_TOKEN, JOB_TOKEN, WORKER_TOKEN, Part, Reply, Stream, describe
from .shapes import WorkerJobShape

blueprint = Blueprint("worker", __name__)

PREFIX = "/api/worker"
UPLOAD = PREFIX + "/upload-video"
#: Result uploads are streams (no MAX_CONTENT_LENGTH, back-pressure).
STREAMING_ROUTES = frozenset({("POST", UPLOAD), ("PATCH", UPLOAD)})
PUBLIC_ENDPOINTS = frozenset(
    {
        "worker.list_jobs",
        "worker.get_job",
        "worker.claim",
        "worker.heartbeat",
        "worker.fail",
        "worker.release",
        "worker.download",
        "worker.upload",
        "worker.upload_patch",
        "worker.upload_offset",
    }
)
UPLOAD_FIELDS = ("video", "file")


class JobIdQuery(msgspec.Struct):
    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class StatusQuery(msgspec.Struct):
    status: JobStatus | None = None


class WorkerJobList(msgspec.Struct):
    jobs: list[WorkerJobShape]


class Claimed(msgspec.Struct, rename="camel"):
    """The claimed job, its job token (the credential of everything about it) and the
    seconds the worker may spend on its download, command and upload (the node's
    ``worker.download_timeout``, ``command_timeout``, ``upload_timeout``)."""

    job: WorkerJobShape
    token: str
    download_timeout: float
    upload_timeout: float
    command_timeout: float


class ResultStored(msgspec.Struct, rename="camel"):
    """The upload is complete, verified and in place; the job is completed."""

    size: int | None
    sha256: str | None
    job_id: str
    status: JobStatus


class ResultPartial(msgspec.Struct, rename="camel"):
    """Part of the upload arrived; resume from ``uploadOffset``."""

    job_id: str
    status: JobStatus
    upload_offset: int
    upload_length: int | None


_WORKER = (WORKER_TOKEN, API_TOKEN)
_JOB = (JOB_TOKEN, API_TOKEN)
_JOB_ID = {"job_id": "The worker job's id."}
_NO_JOB = {404: "No such job."}
_CLAIM_ERRORS = {
    **_NO_JOB,
    400: "The job is not being processed.",
    409: "The lease was lost: another claim holds the job now (lease_lost).",
}
_UPLOADED = {
    201: Reply("The result is complete, verified and in place.", ResultStored),
    200: Reply(
        "Part received; send the rest.", ResultPartial, {"Upload-Offset": "Bytes received."}
    ),
}
_UPLOAD_ERRORS = {
    **_CLAIM_ERRORS,
    409: "The lease was lost, or Upload-Offset is not what HEAD answers.",
    413: "More bytes than Upload-Length.",
}


def workers() -> WorkerJobs:
    ws = services().workers
    if ws is None:
        raise UnsupportedStorage("worker jobs are not enabled on this node")
    return ws


def _check_worker_credential() -> None:
    svc = services()
    if svc.worker_auth is None:
        raise UnsupportedStorage("worker jobs are not enabled on this node")
    svc.worker_auth.check(request.headers.get("Authorization"))


def _job_claims(job_id: str) -> JobClaims | None:
    """The claims of the presented job token for ``job_id``; None for the API token."""
    svc = services()
    header = request.headers.get("Authorization")
    if header or not svc.auth.enabled:
        try:
            svc.auth.check(header)
            return None
        except Unauthorized:
            pass
    return workers().signer.verify(wire.presented_token(), job_id)


def _job_id() -> str:
    return read_query(JobIdQuery).job_id


# -- jobs ---------------------------------------------------------------------


@blueprint.post(PREFIX + "/jobs")
@describe(
    "Create a worker job",
    body=CreateJob,
    responses={201: WorkerJobShape},
    errors={400: "The source is not a file of a local location."},
)
async def create() -> Response:
    """The source is hashed in the background; ``source.size``/``sha256`` appear then."""
    body = await read_body(CreateJob)
    job = await workers().create(body)
    return json_response(job_json(job), 201)


@blueprint.get(PREFIX + "/jobs")
@describe("List worker jobs", auth=_WORKER, query=StatusQuery, responses={200: WorkerJobList})
async def list_jobs() -> Response:
    _check_worker_credential()
    jobs = workers().jobs(read_query(StatusQuery).status)
    return json_response({"jobs": [job_json(j) for j in jobs]})


@blueprint.get(PREFIX + "/jobs/<job_id>")
@describe(
    "Show a worker job",
    auth=_WORKER,
    params=_JOB_ID,
    responses={200: WorkerJobShape},
    errors=_NO_JOB,
)
async def get_job(job_id: str) -> Response:
    _check_worker_credential()
    return json_response(job_json(workers().get(job_id)))


@blueprint.post(PREFIX + "/jobs/claim")
@describe(
    "Claim the oldest pending job",
    auth=_WORKER,
    body=ClaimRequest,
    responses={200: Claimed, 204: Reply("Nothing is pending (no body).")},
)
async def claim() -> Response:
    """The job turns ``processing`` with a lease; keep it with heartbeats."""
    _check_worker_credential()
    body = await read_body(ClaimRequest)
    claimed = await workers().claim(body.worker_id)
    if claimed is None:
        return Response(b"", status=204)
    job, token = claimed
    limits = workers().limits
    return json_response(
        {
            "job": job_json(job),
            "token": token,
            "downloadTimeout": limits.download,
            "uploadTimeout": limits.upload,
            "commandTimeout": limits.command,
        }
    )


@blueprint.post(PREFIX + "/jobs/<job_id>/heartbeat")
@describe(
    "Renew a claimed job's lease",
    auth=_JOB,
    params=_JOB_ID,
    responses={200: WorkerJobShape},
    errors=_CLAIM_ERRORS,
)
async def heartbeat(job_id: str) -> Response:
    claims = _job_claims(job_id)
    return json_response(job_json(workers().heartbeat(job_id, claims)))


@blueprint.post(PREFIX + "/jobs/<job_id>/fail")
@describe(
    "Report a claimed job as failed",
    auth=_JOB,
    params=_JOB_ID,
    body=FailRequest,
    responses={200: WorkerJobShape},
    errors=_CLAIM_ERRORS,
)
async def fail(job_id: str) -> Response:
    claims = _job_claims(job_id)
    body = await read_body(FailRequest)
    job = await workers().fail(job_id, claims, body.message, retry=body.retry)
    return json_response(job_json(job))


@blueprint.post(PREFIX + "/jobs/<job_id>/release")
@describe(
    "Give a claimed job back (not a failed attempt)",
    auth=_JOB,
    params=_JOB_ID,
    responses={200: WorkerJobShape},
    errors=_CLAIM_ERRORS,
)
async def release(job_id: str) -> Response:
    claims = _job_claims(job_id)
    return json_response(job_json(await workers().release(job_id, claims)))


# -- the source (server → worker) ---------------------------------------------------


@blueprint.get(PREFIX + "/download-video")
@describe(
    "Download a claimed job's source",
    auth=_JOB,
    query=JobIdQuery,
    headers=wire.RANGE_HEADERS,
    responses=wire.DOWNLOAD_REPLIES,
    errors={
        **_CLAIM_ERRORS,
        404: "No such job, or its source file is gone.",
        416: "The range is outside the file.",
    },
)
async def download() -> Response:
    """The job's source: whole, one ``Range``, or zstd (``HEAD`` answers the headers)."""
    job_id = _job_id()
    claims = _job_claims(job_id)
    ws = workers()
    job = ws.claimed(job_id, claims)
    size, sha256 = await ws.source(job)
    name = job.source_path.rsplit("/", 1)[-1]
    return wire.file_response(
        size=size,
        sha256=sha256,
        filename=name,
        content_type=mimetypes.guess_type(name)[0],
        read=lambda start, end: ws.read_source(job, start, end),
    )


# -- the result (worker → server) ---------------------------------------------------


async def _receive(offset: int | None) -> Response:
    job_id = _job_id()
    claims = _job_claims(job_id)
    ws = workers()
    job = ws.claimed(job_id, claims)
    checksum = wire.declared_checksum()
    body, raw = wire.plaintext_body(UPLOAD_FIELDS)
    total = wire.int_header("Upload-Length")
    length = request.content_length
    start = offset or 0
    resumed_total = job.upload_length if offset is not None else None
    if total is None and raw and length is not None:
        total = resumed_total if resumed_total is not None else start + length
    if total is not None and raw and length is not None and start + length > total:
        raise UploadTooLong(f"{start} + {length} body bytes exceed Upload-Length {total}")
    received = await ws.receive(job, body, offset=offset, total=total, checksum=checksum)
    done = received.job
    if received.complete:
        stored = ResultStored(
            size=done.result_size, sha256=done.result_sha256, job_id=done.id, status=done.status
        )
        response = json_response(stored, 201)
    else:
        partial = ResultPartial(
            job_id=done.id,
            status=done.status,
            upload_offset=received.offset,
            upload_length=done.upload_length,
        )
        response = json_response(partial)
    response.headers["Upload-Offset"] = str(received.offset)
    return response


@blueprint.post(UPLOAD)
@describe(
    "Upload a claimed job's result",
    auth=_JOB,
    query=JobIdQuery,
    body=Stream(
        "The result: the raw body, or the multipart field `video` (or `file`).",
        parts=(Part("video", "The result's bytes."), Part("file", "Same, by its other name.")),
    ),
    headers=(wire.CHECKSUM_HEADER, wire.ENCODING_HEADER, wire.UPLOAD_LENGTH_HEADER),
    responses=_UPLOADED,
    errors=_UPLOAD_ERRORS,
)
async def upload() -> Response:
    """A fresh upload (starts over); complete when Upload-Length (or a raw body's
    Content-Length) is reached, or when the body ends if no total is known."""
    return await _receive(None)


@blueprint.patch(UPLOAD)
@describe(
    "Resume a result upload from Upload-Offset",
    auth=_JOB,
    query=JobIdQuery,
    body=Stream("The rest of the result, raw."),
    headers=(
        wire.UPLOAD_OFFSET_HEADER,
        wire.CHECKSUM_HEADER,
        wire.ENCODING_HEADER,
        wire.UPLOAD_LENGTH_HEADER,
    ),
    responses=_UPLOADED,
    errors=_UPLOAD_ERRORS,
)
async def upload_patch() -> Response:
    offset = wire.int_header("Upload-Offset")
    if offset is None:
        raise BadRequest("PATCH needs an Upload-Offset header (see HEAD)", code="missing_offset")
    return await _receive(offset)


@blueprint.route(UPLOAD, methods=["HEAD"])
@describe(
    "How much of a result upload arrived",
    auth=_JOB,
    query=JobIdQuery,
    responses={
        200: Reply(
            "No body.",
            None,
            {
                "Upload-Offset": "Bytes safely received.",
                "Upload-Length": "The declared total, when known.",
                "X-Job-Status": "The job's status.",
            },
        )
    },
    errors=_CLAIM_ERRORS,
)
async def upload_offset() -> Response:
    job_id = _job_id()
    claims = _job_claims(job_id)
    ws = workers()
    job = ws.claimed(job_id, claims)
    response = Response(b"", status=200)
    response.headers["Upload-Offset"] = str(await ws.upload_offset(job))
    current = ws.get(job_id)
    if current.upload_length is not None:
        response.headers["Upload-Length"] = str(current.upload_length)
    response.headers["X-Job-Status"] = current.status.value
    response.headers["Cache-Control"] = "no-store"
    return response
