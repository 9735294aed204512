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

import re
from collections.abc import AsyncIterable, AsyncIterator

import msgspec
import trio
import zstandard
from quart import Blueprint, Response, request

from .._errors import BadRequest, Conflict, StreamerError, Unauthorized, UnsupportedStorage
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
from .._node.multipart import (
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    parse_params,
)
from .app import json_response, read_body, services
from .describe import API_TOKEN, TRANSFER_TOKEN, Header, Part, Reply, Stream, describe

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
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
ZSTD_LEVEL = 3
_ZSTD_SLICE = 512  # compressed bytes per call: at most ~16 MiB out even for a bomb
_ZSTD_STEP_OUTPUT = 1 << 20


class RangeNotSatisfiable(StreamerError):
    status_code = 416
    code = "range_not_satisfiable"


def exchange() -> Exchange:
    ex = services().exchange
    if ex is None:
        raise UnsupportedStorage("the worker exchange is not enabled on this node")
    return ex


def _presented_token() -> str | None:
    token = request.args.get("token")
    if token:
        return token
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _check_transfer_token(transfer_id: str, scope: Scope | None) -> None:
    exchange().signer.verify(_presented_token(), transfer_id, scope)


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
_CHECKSUM = Header(
    "X-Checksum-Sha256",
    "Hex SHA-256 of the whole file; a mismatch fails the upload (nothing lands).",
    {"type": "string", "pattern": r"^[0-9a-fA-F]{64}$"},
)
_ENCODING = Header(
    "Content-Encoding",
    "`zstd` for a compressed body (identity otherwise).",
    {"type": "string", "enum": ["zstd", "identity"]},
)
_UPLOAD_LENGTH = Header(
    "Upload-Length",
    "The file's total size in bytes, when the body is not all of it.",
    {"type": "string", "pattern": r"^[0-9]{1,18}$"},
)
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


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single-range ``Range`` header; None: whole."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # multi-range or another unit: ignored, the whole file is sent
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
        if last and int(last) < start:
            return None
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"range {header!r} is outside the {size} bytes")
    return start, end


@blueprint.get(PREFIX + "/<transfer_id>/download")
@describe(
    "Download a staged file (worker)",
    auth=(TRANSFER_TOKEN,),
    params=_TRANSFER,
    headers=(
        Header("Range", "One range `bytes=START-END` (or `-SUFFIX`) to resume."),
        Header("If-Range", "The ETag of the first part: a stale one gets the whole file."),
        Header("Accept-Encoding", "`zstd` for a compressed whole-file answer."),
    ),
    responses={
        200: Reply(
            "The whole file.",
            Stream(""),
            {"ETag": '"<sha256>"', "X-Checksum-Sha256": "Hex SHA-256 of the file."},
        ),
        206: Reply("The requested range.", Stream(""), {"Content-Range": "bytes S-E/SIZE"}),
    },
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
    size = transfer.file_size
    etag = f'"{transfer.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "X-Checksum-Sha256": transfer.sha256 or "",
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{_quoted(transfer.original_filename)}"',
    }
    wanted = _parse_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if wanted is not None and if_range is not None and if_range != etag:
        wanted = None  # the file changed since the client's first part: start over
    start, end = wanted or (0, size)
    body: AsyncIterable[bytes] = ex.download(transfer, start, end)
    status_code = 200
    if wanted is not None:
        status_code = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if wanted is None and "zstd" in request.headers.get("Accept-Encoding", "").lower():
        body = _zstd_compress(body)
        headers["Content-Encoding"] = "zstd"
        headers["Vary"] = "Accept-Encoding"
    response = Response(
        body,
        status=status_code,
        content_type=transfer.content_type or "application/octet-stream",
        headers=headers,
    )
    if "Content-Encoding" not in headers:
        response.headers["Content-Length"] = str(end - start)
    response.timeout = None
    return response


def _quoted(name: str) -> str:
    return name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")


async def _zstd_compress(source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    async for piece in source:
        out = await trio.to_thread.run_sync(compressor.compress, piece)
        if out:
            yield out
    yield compressor.flush()


# -- worker → server -----------------------------------------------------------


async def _file_part(body: AsyncIterable[bytes], boundary: str) -> AsyncIterator[bytes]:
    """The content of the multipart field ``file``; other fields are ignored."""
    parser = MultipartParser(boundary)
    inside = found = False
    async for piece in body:
        for event in parser.feed(piece):
            if isinstance(event, PartStart):
                inside = event.name == "file"
                found |= inside
            elif isinstance(event, PartData) and inside:
                yield event.data
            elif isinstance(event, PartEnd):
                inside = False
    parser.finish()
    if not found:
        raise BadRequest("the multipart body has no 'file' field", code="missing_file")


async def _zstd_decompress(source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Decompress a zstd body with bounded output per step (a tiny bomb stays small)."""
    decompressor = zstandard.ZstdDecompressor(max_window_size=1 << 27).decompressobj()

    def step(data: bytes) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        produced = 0
        while data and produced < _ZSTD_STEP_OUTPUT:
            try:
                piece = decompressor.decompress(data[:_ZSTD_SLICE])
            except zstandard.ZstdError as exc:
                raise BadRequest(f"zstd body is corrupt: {exc}", code="corrupt_body") from None
            data = data[_ZSTD_SLICE:]
            out.append(piece)
            produced += len(piece)
        return b"".join(out), data

    async for piece in source:
        rest = piece
        while rest:
            out, rest = await trio.to_thread.run_sync(step, rest)
            if out:
                yield out
    if not decompressor.eof:
        raise BadRequest("the zstd body ends inside a frame", code="corrupt_body")


def _plaintext_body() -> tuple[AsyncIterable[bytes], bool]:
    """The uploaded file's bytes, and whether they are the raw body (length known)."""
    body: AsyncIterable[bytes] = request.body
    raw = True
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "zstd":
        body, raw = _zstd_decompress(body), False
    elif encoding not in ("", "identity"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}", code="unsupported_encoding")
    mime, _, params = (request.headers.get("Content-Type") or "").partition(";")
    if mime.strip().lower() == "multipart/form-data":
        boundary = parse_params(";" + params).get("boundary")
        if not boundary:
            raise BadRequest("multipart body without a boundary", code="malformed_multipart")
        body, raw = _file_part(body, boundary), False
    return body, raw


def _int_header(name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BadRequest(f"{name} must be a non-negative integer", code="invalid_header")
    return int(value)


async def _receive(transfer_id: str, offset: int | None) -> Response:
    _check_transfer_token(transfer_id, "upload")
    ex = exchange()
    transfer = await ex.live(transfer_id)
    declared = request.headers.get("X-Checksum-Sha256")
    if declared is not None and not _SHA256.match(declared):
        raise BadRequest("X-Checksum-Sha256 must be 64 hex digits", code="invalid_checksum")
    body, raw = _plaintext_body()
    total = _int_header("Upload-Length")
    length = request.content_length
    if total is None and transfer.file_size is None and raw and length is not None:
        total = (offset or 0) + length
    transfer = await ex.receive(
        transfer,
        body,
        offset=offset,
        total=total,
        checksum=declared and declared.lower(),
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
    headers=(_CHECKSUM, _ENCODING, _UPLOAD_LENGTH),
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
    headers=(
        Header(
            "Upload-Offset",
            "Bytes already received (from HEAD).",
            {"type": "string", "pattern": r"^[0-9]{1,18}$"},
            required=True,
        ),
        _CHECKSUM,
        _ENCODING,
        _UPLOAD_LENGTH,
    ),
    responses=_UPLOADED,
    errors=_UPLOAD_ERRORS,
)
async def upload_patch(transfer_id: str) -> Response:
    offset = _int_header("Upload-Offset")
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
