"""Seed 000's Transfer API: create, inspect, stream progress, cancel, clean up."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from quart import Blueprint, Response, request

from .._engine import Job, JobStatus
from .._engine.jobs import new_job_id
from .._engine.transfer import TransferSpec, check_conflicts, kind_of, plan
from .._errors import BadRequest
from .app import json_response, read_body, services
from .sse import job_stream

blueprint = Blueprint("transfer", __name__)

PUBLIC_ENDPOINTS = frozenset({"transfer.progress"})


class TicketRequest(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    resource: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    resource_type: Literal["transfer"] = "transfer"


class ConcurrencySetting(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    max_concurrent_transfers: Annotated[int, msgspec.Meta(ge=1, le=64)]


@blueprint.post("/api/transfer")
async def create() -> Response:
    spec = await read_body(TransferSpec)
    svc = services()
    planned = await plan(spec, svc.locations)
    job = Job(id=new_job_id(), kind=kind_of(spec), spec=spec.to_json(), files=planned.files)
    svc.engine.submit(job)
    return json_response(
        {
            "jobId": job.id,
            "status": JobStatus.PENDING.value,
            "filesQueued": len(planned.files),
            "estimatedBytes": planned.total_bytes,
        }
    )


@blueprint.post("/api/transfer/check-conflicts")
async def conflicts() -> Response:
    spec = await read_body(TransferSpec)
    return json_response(await check_conflicts(spec, services().locations))


@blueprint.get("/api/transfer")
async def list_jobs() -> Response:
    raw = request.args.get("status")
    try:
        status = None if raw is None else JobStatus(raw)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise BadRequest(
            f"unknown status {raw!r} (one of {allowed})", code="invalid_status"
        ) from None
    return json_response({"jobs": [j.to_json() for j in services().engine.list(status)]})


@blueprint.get("/api/transfer/<job_id>")
async def show(job_id: str) -> Response:
    return json_response({"job": services().engine.get(job_id).to_json()})


@blueprint.get("/api/transfer/<job_id>/files")
async def files(job_id: str) -> Response:
    listed = services().engine.files(job_id)
    return json_response({"jobId": job_id, "files": [f.to_json() for f in listed]})


@blueprint.post("/api/auth/sse-ticket")
async def sse_ticket() -> Response:
    body = await read_body(TicketRequest)
    svc = services()
    svc.engine.get(body.resource)  # 404 for an unknown job
    ticket = svc.tickets.issue(body.resource)
    return json_response({"ticket": ticket, "expiresIn": int(svc.tickets.ttl)})


@blueprint.get("/api/transfer/progress/<job_id>")
async def progress(job_id: str) -> Response:
    svc = services()
    svc.tickets.redeem(request.args.get("ticket"), job_id)
    job = svc.engine.get(job_id)
    response = Response(
        job_stream(job, svc.closing),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # a stream lives as long as its job
    return response


@blueprint.post("/api/transfer/cancel/<job_id>")
async def cancel(job_id: str) -> Response:
    job = services().engine.cancel(job_id)
    return json_response(
        {
            "message": "Transfer cancelled",
            "jobId": job.id,
            "filesCompleted": job.files_completed,
            "totalFiles": job.total_files,
        }
    )


@blueprint.post("/api/transfer/cleanup/<job_id>")
async def cleanup(job_id: str) -> Response:
    services().engine.cleanup(job_id)
    return json_response({"message": "Transfer job cleaned up", "jobId": job_id})


@blueprint.get("/api/settings/max-concurrent-transfers")
async def get_max_concurrent() -> Response:
    return json_response({"maxConcurrentTransfers": services().engine.max_concurrent})


@blueprint.put("/api/settings/max-concurrent-transfers")
async def set_max_concurrent() -> Response:
    body = await read_body(ConcurrencySetting)
    services().engine.max_concurrent = body.max_concurrent_transfers
    return json_response({"maxConcurrentTransfers": body.max_concurrent_transfers})
