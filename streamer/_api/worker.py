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

from quart import Blueprint, Response, request

from .._errors import BadRequest, Unauthorized, UnsupportedStorage
from .._worker.models import ClaimRequest, CreateJob, FailRequest, JobStatus, job_json
from .._worker.service import UploadTooLong, WorkerJobs
from .._worker.tokens import JobClaims
from . import wire
from .app import json_response, read_body, services

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
    job_id = request.args.get("job_id", "")
    if not job_id:
        raise BadRequest("the job_id query parameter is required", code="missing_job_id")
    return job_id


# -- jobs ---------------------------------------------------------------------


@blueprint.post(PREFIX + "/jobs")
async def create() -> Response:
    body = await read_body(CreateJob)
    job = await workers().create(body)
    return json_response(job_json(job), 201)


@blueprint.get(PREFIX + "/jobs")
async def list_jobs() -> Response:
    _check_worker_credential()
    wanted = request.args.get("status")
    if wanted is not None and wanted not in {s.value for s in JobStatus}:
        raise BadRequest(f"status must be one of {', '.join(s.value for s in JobStatus)}")
    jobs = workers().jobs(JobStatus(wanted) if wanted else None)
    return json_response({"jobs": [job_json(j) for j in jobs]})


@blueprint.get(PREFIX + "/jobs/<job_id>")
async def get_job(job_id: str) -> Response:
    _check_worker_credential()
    return json_response(job_json(workers().get(job_id)))


@blueprint.post(PREFIX + "/jobs/claim")
async def claim() -> Response:
    _check_worker_credential()
    body = await read_body(ClaimRequest)
    claimed = await workers().claim(body.worker_id)
    if claimed is None:
        return Response(b"", status=204)
    job, token = claimed
    return json_response({"job": job_json(job), "token": token})


@blueprint.post(PREFIX + "/jobs/<job_id>/heartbeat")
async def heartbeat(job_id: str) -> Response:
    claims = _job_claims(job_id)
    return json_response(job_json(workers().heartbeat(job_id, claims)))


@blueprint.post(PREFIX + "/jobs/<job_id>/fail")
async def fail(job_id: str) -> Response:
    claims = _job_claims(job_id)
    body = await read_body(FailRequest)
    job = await workers().fail(job_id, claims, body.message, retry=body.retry)
    return json_response(job_json(job))


@blueprint.post(PREFIX + "/jobs/<job_id>/release")
async def release(job_id: str) -> Response:
    claims = _job_claims(job_id)
    return json_response(job_json(await workers().release(job_id, claims)))


# -- the source (server → worker) ---------------------------------------------------


@blueprint.get(PREFIX + "/download-video")
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
        response = json_response(
            {
                "size": done.result_size,
                "sha256": done.result_sha256,
                "jobId": done.id,
                "status": done.status.value,
            },
            201,
        )
    else:
        response = json_response(
            {
                "jobId": done.id,
                "status": done.status.value,
                "uploadOffset": received.offset,
                "uploadLength": done.upload_length,
            }
        )
    response.headers["Upload-Offset"] = str(received.offset)
    return response


@blueprint.post(UPLOAD)
async def upload() -> Response:
    return await _receive(None)


@blueprint.patch(UPLOAD)
async def upload_patch() -> Response:
    offset = wire.int_header("Upload-Offset")
    if offset is None:
        raise BadRequest("PATCH needs an Upload-Offset header (see HEAD)", code="missing_offset")
    return await _receive(offset)


@blueprint.route(UPLOAD, methods=["HEAD"])
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
