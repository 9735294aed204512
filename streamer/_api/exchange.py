"""``/api/v1/transfers`` (seed 003): hand files to remote workers and take results back.

``POST /api/v1/transfers`` needs the API token. The worker's endpoints
(``download``, ``upload``) take the transfer token (``?token=`` or
``Authorization: Bearer``) scoped to that transfer and direction; ``status`` and
``DELETE`` accept the API token or the transfer's token. All of them are public
to the app's API-token hook and check their own credentials. Uploads are
resumable tus-style: ``HEAD`` answers ``Upload-Offset``, ``PATCH`` with
``Upload-Offset`` continues from there.
"""

from __future__ import annotations

import msgspec
from quart import Blueprint, Response, request

from .._errors import BadRequest, Conflict, Unauthorized, UnsupportedStorage
from .._exchange.models import (
    FileTransferResponse,
    FileTransferStatus,
    Transfer,
    TransferRequest,
    TransferStatus,
    iso,
    status_json,
)
from .._exchange.service import Exchange
from .._exchange.tokens import Scope
from . import wire
from .app import json_response, read_body, services
from .describe import API_TOKEN, TRANSFER_TOKEN, Part, Reply, Stream, describe

blueprint = Blueprint("exchange", __name__)

PREFIX = "/api/v1/transfers"
#: Worker uploads are streams (no MAX_CONTENT_LENGTH, back-pressure).
STREAMING_PREFIXES = (("POST", PREFIX + "/"), ("PATCH", PREFIX + "/"))
PUBLIC_ENDPOINTS = frozenset(
    {
        "exchange.download",
        "exchange.upload",
        "exchange.upload_offset",
        "exchange.upload_patch",
        "exchange.status",
        "exchange.delete",
    }
)


def exchange() -> Exchange:
    ex = services().exchange
    if ex is None:
        raise UnsupportedStorage("the worker exchange is not enabled on this node")
    return ex


def _check_transfer_token(transfer_id: str, scope: Scope | None) -> None:
    exchange().signer.verify(wire.presented_token(), transfer_id, scope)


def _check_api_or_transfer_token(transfer_id: str) -> None:
    """The API token (Authorization) or any token of this transfer."""
    svc = services()
    header = request.headers.get("Authorization")
    if header or not svc.auth.enabled:
        try:
            svc.auth.check(header)
            return
        except Unauthorized:
            pass
    _check_transfer_token(transfer_id, None)


def _answer(transfer: Transfer, token: str) -> FileTransferResponse:
    base = f"{PREFIX}/{transfer.id}"
    staged = transfer.direction == "upload"
    return FileTransferResponse(
        transfer_id=transfer.id,
        status=transfer.status,
        download_url=f"{base}/download" if staged else None,
        upload_url=None if staged else f"{base}/upload",
        auth_token=token,
        expires_at=iso(transfer.expires_at),
        message=(
            f"staged {transfer.file_size} bytes for download"
            if staged
            else "ready to receive the upload"
        ),
        checksum=transfer.sha256 or transfer.checksum,
        file_size=transfer.file_size,
    )


class TransferDeleted(msgspec.Struct):
    transfer_id: str
    message: str


_TRANSFER = {"transfer_id": "The transfer's id (`transfer_id` of its creation)."}
_EITHER = (API_TOKEN, TRANSFER_TOKEN)
_NO_TRANSFER = {404: "No such transfer.", 410: "The transfer has expired."}
_UPLOAD_HEADERS = (wire.CHECKSUM_HEADER, wire.ENCODING_HEADER, wire.UPLOAD_LENGTH_HEADER)
_UPLOAD_BODY = Stream(
    "The file: the raw body, or the multipart field `file`.",
    parts=(Part("file", "The file's bytes.", required=True),),
)
_UPLOADED = {
    200: Reply(
        "Part received; send the rest.", FileTransferStatus, {"Upload-Offset": "Bytes received."}
    ),
    201: Reply("The file is complete, verified and in place.", FileTransferStatus),
}
_UPLOAD_ERRORS = {
    **_NO_TRANSFER,
    409: "The transfer is not waiting for an upload, or the offset is wrong.",
}


@blueprint.post(PREFIX)
@describe(
    "Create a worker exchange transfer",
    body=TransferRequest,
    responses={201: FileTransferResponse},
    errors={404: "The file to stage does not exist."},
)
async def create() -> Response:
    """``direction: upload`` stages a file for a worker to download; ``download``
    prepares a place for a worker's upload. The answer carries the transfer's token."""
    body = await read_body(TransferRequest)
    transfer, token = await exchange().create(body)
    return json_response(_answer(transfer, token), 201)


@blueprint.get(PREFIX + "/<transfer_id>/status")
@describe(
    "A transfer's status",
    auth=_EITHER,
    params=_TRANSFER,
    responses={200: FileTransferStatus},
    errors=_NO_TRANSFER,
)
async def status(transfer_id: str) -> Response:
    _check_api_or_transfer_token(transfer_id)
    ex = exchange()
    transfer = await ex.current(transfer_id)
    return json_response(status_json(transfer))


@blueprint.delete(PREFIX + "/<transfer_id>")
@describe(
    "Delete a transfer and its staged data",
    auth=_EITHER,
    params=_TRANSFER,
    responses={200: TransferDeleted},
    errors=_NO_TRANSFER,
)
async def delete(transfer_id: str) -> Response:
    _check_api_or_transfer_token(transfer_id)
    await exchange().delete(transfer_id)
    return json_response(TransferDeleted(transfer_id=transfer_id, message="transfer deleted"))


# -- server → worker -----------------------------------------------------------


@blueprint.get(PREFIX + "/<transfer_id>/download")
@describe(
    "Download a staged file (worker)",
    auth=(TRANSFER_TOKEN,),
    params=_TRANSFER,
    headers=wire.RANGE_HEADERS,
    responses=wire.DOWNLOAD_REPLIES,
    errors={
        **_NO_TRANSFER,
        409: "Nothing is staged for this transfer.",
        416: "The range is outside the file.",
    },
)
async def download(transfer_id: str) -> Response:
    _check_transfer_token(transfer_id, "download")
    ex = exchange()
    transfer = await ex.live(transfer_id)
    if transfer.status is TransferStatus.FAILED or transfer.file_size is None:
        raise Conflict(f"transfer {transfer_id} has nothing staged")
    return wire.file_response(
        size=transfer.file_size,
        sha256=transfer.sha256,
        filename=transfer.original_filename,
        content_type=transfer.content_type,
        read=lambda start, end: ex.download(transfer, start, end),
    )


# -- worker → server -----------------------------------------------------------


async def _receive(transfer_id: str, offset: int | None) -> Response:
    _check_transfer_token(transfer_id, "upload")
    ex = exchange()
    transfer = await ex.live(transfer_id)
    declared = wire.declared_checksum()
    body, raw = wire.plaintext_body(("file",))
    total = wire.int_header("Upload-Length")
    length = request.content_length
    if total is None and transfer.file_size is None and raw and length is not None:
        total = (offset or 0) + length
    transfer = await ex.receive(
        transfer,
        body,
        offset=offset,
        total=total,
        checksum=declared,
    )
    response = json_response(
        status_json(transfer), 201 if transfer.status is TransferStatus.COMPLETED else 200
    )
    response.headers["Upload-Offset"] = str(transfer.bytes_transferred)
    return response


@blueprint.post(PREFIX + "/<transfer_id>/upload")
@describe(
    "Upload a result file (worker)",
    auth=(TRANSFER_TOKEN,),
    params=_TRANSFER,
    body=_UPLOAD_BODY,
    headers=_UPLOAD_HEADERS,
    responses=_UPLOADED,
    errors=_UPLOAD_ERRORS,
)
async def upload(transfer_id: str) -> Response:
    return await _receive(transfer_id, None)


@blueprint.patch(PREFIX + "/<transfer_id>/upload")
@describe(
    "Resume an upload from Upload-Offset (worker)",
    auth=(TRANSFER_TOKEN,),
    params=_TRANSFER,
    body=Stream("The rest of the file, raw."),
    headers=(wire.UPLOAD_OFFSET_HEADER, *_UPLOAD_HEADERS),
    responses=_UPLOADED,
    errors=_UPLOAD_ERRORS,
)
async def upload_patch(transfer_id: str) -> Response:
    offset = wire.int_header("Upload-Offset")
    if offset is None:
        raise BadRequest("PATCH needs an Upload-Offset header (see HEAD)", code="missing_offset")
    return await _receive(transfer_id, offset)


@blueprint.route(PREFIX + "/<transfer_id>/upload", methods=["HEAD"])
@describe(
    "How much of an upload arrived (worker)",
    auth=(TRANSFER_TOKEN,),
    params=_TRANSFER,
    responses={
        200: Reply(
            "No body.",
            None,
            {
                "Upload-Offset": "Bytes safely received.",
                "Upload-Length": "The file's size, when known.",
                "X-Transfer-Status": "The transfer's status.",
            },
        )
    },
    errors=_NO_TRANSFER,
)
async def upload_offset(transfer_id: str) -> Response:
    _check_transfer_token(transfer_id, "upload")
    ex = exchange()
    transfer = await ex.live(transfer_id)
    if transfer.status is TransferStatus.COMPLETED:
        received = transfer.file_size or 0
    else:
        received = await ex.received(transfer)
    response = Response(b"", status=200)
    response.headers["Upload-Offset"] = str(received)
    if transfer.file_size is not None:
        response.headers["Upload-Length"] = str(transfer.file_size)
    response.headers["X-Transfer-Status"] = transfer.status.value
    response.headers["Cache-Control"] = "no-store"
    return response
