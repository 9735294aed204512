"""Seed 000's Transfer API: create, inspect, stream progress, cancel, clean up."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from quart import Blueprint, Response, request

from .._engine import Job, JobStatus
from .._engine.jobs import new_job_id
from .._engine.transfer import TransferSpec, check_conflicts, kind_of, plan
from .app import json_response, read_body, read_query, services
from .describe import SSE_TICKET, Reply, Stream, describe
from .shapes import ConflictCheck, FileShape, JobShape
from .sse import job_stream

blueprint = Blueprint("transfer", __name__)

PUBLIC_ENDPOINTS = frozenset({"transfer.progress"})


class TicketRequest(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    resource: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    resource_type: Literal["transfer"] = "transfer"


class ConcurrencySetting(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    max_concurrent_transfers: Annotated[int, msgspec.Meta(ge=1, le=64)]


class _Answer(msgspec.Struct, rename="camel"):
    pass


class TransferCreated(_Answer):
    job_id: str
    status: JobStatus
    files_queued: int
    estimated_bytes: int


class JobQuery(msgspec.Struct):
    status: JobStatus | None = None


class JobList(_Answer):
    jobs: list[JobShape]


class JobEnvelope(_Answer):
    job: JobShape


class JobFiles(_Answer):
    job_id: str
    files: list[FileShape]


class TicketIssued(_Answer):
    ticket: str
    expires_in: int


class JobCancelled(_Answer):
    message: str
    job_id: str
    files_completed: int
    total_files: int


class JobCleanedUp(_Answer):
    message: str
    job_id: str


_JOB_ID = {"job_id": "The job's id (`jobId` of its creation)."}
_NO_JOB = {404: "No such job."}


@blueprint.post("/api/transfer")
@describe(
    "Start a transfer",
    body=TransferSpec,
    responses={200: TransferCreated},
    errors={404: "A source item does not exist."},
)
async def create() -> Response:
    """Plan the transfer (expanding directories) and queue it as a job."""
    spec = await read_body(TransferSpec)
    svc = services()
    planned = await plan(spec, svc.locations)
    job = Job(id=new_job_id(), kind=kind_of(spec), spec=planned.spec.to_json(), files=planned.files)
    svc.engine.submit(job)
    return json_response(
        TransferCreated(
            job_id=job.id,
            status=JobStatus.PENDING,
            files_queued=len(planned.files),
            estimated_bytes=planned.total_bytes,
        )
    )


@blueprint.post("/api/transfer/check-conflicts")
@describe(
    "Which files of a transfer already exist",
    body=TransferSpec,
    responses={200: ConflictCheck},
    errors={404: "A source item does not exist."},
)
async def conflicts() -> Response:
    """Plan the transfer without starting it; warns about large folders."""
    spec = await read_body(TransferSpec)
    return json_response(await check_conflicts(spec, services().locations))


@blueprint.get("/api/transfer")
@describe("List jobs", query=JobQuery, responses={200: JobList})
async def list_jobs() -> Response:
    query = read_query(JobQuery)
    return json_response({"jobs": [j.to_json() for j in services().engine.list(query.status)]})


@blueprint.get("/api/transfer/<job_id>")
@describe("Show a job", params=_JOB_ID, responses={200: JobEnvelope}, errors=_NO_JOB)
async def show(job_id: str) -> Response:
    return json_response({"job": services().engine.get(job_id).to_json()})


@blueprint.get("/api/transfer/<job_id>/files")
@describe("List a job's files", params=_JOB_ID, responses={200: JobFiles}, errors=_NO_JOB)
async def files(job_id: str) -> Response:
    listed = services().engine.files(job_id)
    return json_response({"jobId": job_id, "files": [f.to_json() for f in listed]})


@blueprint.post("/api/auth/sse-ticket")
@describe(
    "Get a one-time ticket for a job's progress stream",
    body=TicketRequest,
    responses={200: TicketIssued},
    errors=_NO_JOB,
)
async def sse_ticket() -> Response:
    body = await read_body(TicketRequest)
    svc = services()
    svc.engine.get(body.resource)  # 404 for an unknown job
    ticket = svc.tickets.issue(body.resource)
    return json_response(TicketIssued(ticket=ticket, expires_in=int(svc.tickets.ttl)))


@blueprint.get("/api/transfer/progress/<job_id>")
@describe(
    "A job's progress as Server-Sent Events",
    auth=(SSE_TICKET,),
    params=_JOB_ID,
    responses={
        200: Reply(
            "Events whose `data:` is JSON `{type, job, currentFile?, error?}`; `type` is "
            "progress, then complete, error or cancelled (the last event).",
            Stream("", media_type="text/event-stream"),
        )
    },
    errors=_NO_JOB,
)
async def progress(job_id: str) -> Response:
    """The job's state first, then an event per change (at most 10 per second), a
    comment every 15 s of silence, and a final event; the stream then ends."""
    svc = services()
    svc.tickets.redeem(request.args.get("ticket"), job_id)
    job = svc.engine.get(job_id)
    response = Response(
        svc.subscribers.track(job_stream(job, svc.closing)),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # a stream lives as long as its job
    return response


@blueprint.post("/api/transfer/cancel/<job_id>")
@describe(
    "Cancel a job",
    params=_JOB_ID,
    responses={200: JobCancelled},
    errors={**_NO_JOB, 409: "The job has already finished."},
)
async def cancel(job_id: str) -> Response:
    """The file in flight stops at once; its temp file is removed."""
    job = services().engine.cancel(job_id)
    return json_response(
        JobCancelled(
            message="Transfer cancelled",
            job_id=job.id,
            files_completed=job.files_completed,
            total_files=job.total_files,
        )
    )


@blueprint.post("/api/transfer/cleanup/<job_id>")
@describe(
    "Forget a finished job",
    params=_JOB_ID,
    responses={200: JobCleanedUp},
    errors={**_NO_JOB, 409: "The job is still pending or running."},
)
async def cleanup(job_id: str) -> Response:
    services().engine.cleanup(job_id)
    return json_response(JobCleanedUp(message="Transfer job cleaned up", job_id=job_id))


@blueprint.get("/api/settings/max-concurrent-transfers")
@describe("How many jobs run at once", responses={200: ConcurrencySetting})
async def get_max_concurrent() -> Response:
    return json_response(ConcurrencySetting(services().engine.max_concurrent))


@blueprint.put("/api/settings/max-concurrent-transfers")
@describe(
    "Change how many jobs run at once",
    body=ConcurrencySetting,
    responses={200: ConcurrencySetting},
)
async def set_max_concurrent() -> Response:
    """Takes effect at once (waiting jobs start when raised) and is remembered."""
    body = await read_body(ConcurrencySetting)
    services().engine.max_concurrent = body.max_concurrent_transfers
    return json_response(body)
