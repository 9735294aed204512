"""Seed 002's node-to-node server transfers, wire-compatible with Wings.

Source side (Panel auth: the API token or ``panel.token``):

* ``POST /api/servers/<uuid>/transfer`` ``{url, token, server: {uuid}}`` starts a
  ``node-push`` job (202); 404 for an unknown server directory, 409 while the
  server is transferring. ``archive_format`` (``tar.gz``/``tar.zst``) may
  override ``transfers.archive_format`` for this push.
* ``DELETE /api/servers/<uuid>/transfer`` cancels it at once (202).

Destination side (authenticated by the transfer JWT itself):

* ``POST /api/transfers`` with ``Authorization: Bearer <jwt>`` and a
  ``multipart/form-data`` body (``archive``, ``checksum``) receives, verifies
  and commits; it answers when the job has ended: 200, or the error.
* ``DELETE /api/transfers`` cancels an incoming transfer, for the server in
  ``?server=<uuid>`` (Panel auth) or in the presented JWT's ``sub`` (202).

``GET``/``PUT /api/settings/bandwidth`` read and change ``downloadLimit`` and
``uploadLimit`` (MiB/s, 0 = unlimited) at runtime.
"""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
import msgspec
from quart import Blueprint, Response, request
from werkzeug.http import parse_options_header

from .._config import bandwidth_limit_problem
from .._engine import JobStatus
from .._errors import (
    BadRequest,
    Conflict,
    InvalidBody,
    StreamerError,
    Unauthorized,
    UnsupportedStorage,
)
from .._node.multipart import check_boundary
from .._node.service import Gone, NodeService
from .app import json_response, read_body, read_query, services
from .describe import API_TOKEN, NODE_JWT, Part, Stream, describe

blueprint = Blueprint("node", __name__)

PUBLIC_ENDPOINTS = frozenset({"node.receive", "node.cancel_incoming"})
"""Endpoints that authenticate with the transfer JWT rather than the API token."""
STREAMING_ROUTES = frozenset({("POST", "/api/transfers")})
"""Routes whose request body is streamed (no size limit, back-pressure)."""


class ServerDetails(msgspec.Struct):
    """Wings' ``server`` object; fields other than ``uuid`` are accepted and ignored."""

    uuid: str | None = None


class PushRequest(msgspec.Struct):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    server: ServerDetails | None = None
    archive_format: Literal["tar.gz", "tar.zst"] | None = None


class BandwidthSetting(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    download_limit: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    upload_limit: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None


class BandwidthLimits(msgspec.Struct, rename="camel"):
    """MiB/s; 0 = unlimited."""

    download_limit: float
    upload_limit: float


class JobStarted(msgspec.Struct, rename="camel"):
    job_id: str
    status: JobStatus


class JobStopped(msgspec.Struct, rename="camel"):
    job_id: str
    message: str


class Received(msgspec.Struct, rename="camel"):
    job_id: str
    status: JobStatus
    sha256: str | None
    bytes: int


class CancelQuery(msgspec.Struct):
    server: str | None = None


_SERVER = {"server_id": "The server's uuid (its directory under servers.root)."}
_NO_SERVER = {404: "No such server directory, or no transfer of it."}


def node_service() -> NodeService:
    node = services().node
    if node is None:
        raise UnsupportedStorage(
            "node transfers are not set up on this node", code="node_transfers_disabled"
        )
    return node


@blueprint.post("/api/servers/<server_id>/transfer")
@describe(
    "Push a server's directory to another node (Wings)",
    body=PushRequest,
    params=_SERVER,
    responses={202: JobStarted},
    errors={**_NO_SERVER, 409: "The server is already transferring."},
)
async def push(server_id: str) -> Response:
    body = await read_body(PushRequest)
    url = _destination_url(body.url)
    job = node_service().start_push(
        server_id, url=url, token=body.token, archive_format=body.archive_format
    )
    return json_response(JobStarted(job_id=job.id, status=job.status), 202)


@blueprint.delete("/api/servers/<server_id>/transfer")
@describe(
    "Cancel a server's outgoing push",
    params=_SERVER,
    responses={202: JobStopped},
    errors=_NO_SERVER,
)
async def cancel_push(server_id: str) -> Response:
    job = node_service().cancel_push(server_id)
    return json_response(JobStopped(job_id=job.id, message="transfer cancelled"), 202)


@blueprint.post("/api/transfers")
@describe(
    "Receive a server's archive from another node (Wings)",
    auth=(NODE_JWT,),
    body=Stream(
        "The archive (tar.gz or tar.zst) and its SHA-256, as Wings sends them.",
        media_type=None,
        parts=(
            Part("archive", "The archive's bytes.", required=True),
            Part("checksum", "Hex SHA-256 of the archive bytes.", binary=False),
        ),
    ),
    responses={200: Received},
    errors={
        409: "A newer push for this server replaced this one.",
        410: "The transfer was cancelled.",
        500: "The transfer failed (the message says why).",
    },
)
async def receive() -> Response:
    """Answers once the archive is verified, extracted and committed, or failed."""
    node = node_service()
    claims = node.verify(request.headers.get("Authorization"))
    boundary = _boundary(request.headers.get("Content-Type"))
    incoming = await node.start_receive(claims, boundary=boundary, remote=request.remote_addr)
    await incoming.feed(request.body)
    job = await incoming.finished()
    if incoming.error is not None:
        raise incoming.error
    if incoming.superseded:
        raise Conflict("a newer push for this server replaced this one", code="superseded")
    if job.status is JobStatus.CANCELLED:
        raise Gone("the transfer was cancelled")
    if job.status is not JobStatus.COMPLETED:
        message = job.errors[0].message if job.errors else "the transfer failed"
        raise StreamerError(message, code="transfer_failed")
    file = job.files[0]
    return json_response(
        Received(job_id=job.id, status=job.status, sha256=file.sha256, bytes=file.size)
    )


@blueprint.delete("/api/transfers")
@describe(
    "Cancel an incoming transfer",
    auth=(API_TOKEN, NODE_JWT),
    query=CancelQuery,
    responses={202: JobStopped},
    errors={404: "No incoming transfer for that server."},
)
async def cancel_incoming() -> Response:
    """With the API token, name the server in ``?server=<uuid>``; the transfer's own
    JWT cancels the server it names."""
    node = node_service()
    header = request.headers.get("Authorization")
    server = read_query(CancelQuery).server
    try:
        services().auth.check(header)
    except Unauthorized:
        claims = node.verify(header)  # the transfer's own JWT may cancel it
        if server is not None and server.lower() != claims.server:
            raise Unauthorized("the token is for another server", code="invalid_token") from None
        server = claims.server
    if not server:
        raise BadRequest("name the server: ?server=<uuid>", code="missing_server")
    job = node.cancel_receive(server)
    return json_response(JobStopped(job_id=job.id, message="transfer cancelled"), 202)


@blueprint.get("/api/settings/bandwidth")
@describe("Node transfer bandwidth limits", responses={200: BandwidthLimits})
async def get_bandwidth() -> Response:
    return json_response(node_service().bandwidth())


@blueprint.put("/api/settings/bandwidth")
@describe(
    "Change node transfer bandwidth limits",
    body=BandwidthSetting,
    responses={200: BandwidthLimits},
)
async def set_bandwidth() -> Response:
    """Takes effect at once for running transfers and is remembered."""
    body = await read_body(BandwidthSetting)
    for name, value in (("downloadLimit", body.download_limit), ("uploadLimit", body.upload_limit)):
        problem = None if value is None else bandwidth_limit_problem(value)
        if problem:
            raise InvalidBody(f"{name}: {problem}")
    limits = node_service().set_bandwidth(download=body.download_limit, upload=body.upload_limit)
    return json_response(limits)


def _destination_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise BadRequest(f"url is not a URL: {url[:200]!r}", code="invalid_url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadRequest("url must be an http(s) URL with a host", code="invalid_url")
    return url


def _boundary(content_type: str | None) -> str:
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data" or "boundary" not in options:
        raise BadRequest(
            "expected Content-Type: multipart/form-data; boundary=...", code="invalid_content_type"
        )
    return check_boundary(options["boundary"])
