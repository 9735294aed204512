"""HTTP pieces shared by the endpoints that move files to and from workers
(``/api/v1/transfers`` of seed 003 and ``/api/worker`` of seed 004).

* Downloads: :func:`file_response` answers a whole file or one ``Range`` (206,
  ``If-Range`` against the ETag, 416 outside), with ``X-Checksum-Sha256`` and an
  optional zstd body for ``Accept-Encoding: zstd``.
* Uploads: :func:`plaintext_body` yields the uploaded file's bytes from a raw or
  ``multipart/form-data`` body (the accepted field names are the caller's), zstd
  decompressed with bounded output per step (a tiny bomb stays small).
* Credentials and headers: :func:`presented_token` (``?token=`` or Bearer),
  :func:`int_header`, :func:`declared_checksum`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection
from typing import Final

import trio
import zstandard
from quart import Response, request

from .._errors import BadRequest, StreamerError
from .._node.multipart import MultipartParser, PartData, PartEnd, PartStart, parse_params
from .describe import Header, Reply, Stream

ZSTD_LEVEL: Final = 3
_ZSTD_SLICE = 512  # compressed bytes per call: at most ~16 MiB out even for a bomb
_ZSTD_STEP_OUTPUT = 1 << 20
SHA256_PATTERN: Final = r"^[0-9a-fA-F]{64}$"
_SHA256 = re.compile(SHA256_PATTERN)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COUNT: Final = {"type": "string", "pattern": r"^[0-9]{1,18}$"}

# The headers these helpers read, as the OpenAPI document describes them.
CHECKSUM_HEADER: Final = Header(
    "X-Checksum-Sha256",
    "Hex SHA-256 of the whole file; on a mismatch nothing lands.",
    {"type": "string", "pattern": SHA256_PATTERN},
)
ENCODING_HEADER: Final = Header(
    "Content-Encoding",
    "`zstd` for a compressed body (identity otherwise).",
    {"type": "string", "enum": ["zstd", "identity"]},
)
UPLOAD_LENGTH_HEADER: Final = Header(
    "Upload-Length", "The file's total size in bytes, when the body is not all of it.", _COUNT
)
UPLOAD_OFFSET_HEADER: Final = Header(
    "Upload-Offset", "Bytes already received (from HEAD).", _COUNT, required=True
)
RANGE_HEADERS: Final = (
    Header("Range", "One range `bytes=START-END` (or `-SUFFIX`) to resume."),
    Header("If-Range", "The ETag of the first part: a stale one gets the whole file."),
    Header("Accept-Encoding", "`zstd` for a compressed whole-file answer."),
)
#: The answers of a file download built by :func:`file_response` (exchange, worker).
DOWNLOAD_REPLIES: Final = {
    200: Reply(
        "The whole file (zstd-encoded if asked).",
        Stream(""),
        {"ETag": '"<sha256>"', "X-Checksum-Sha256": "Hex SHA-256 of the file."},
    ),
    206: Reply("The requested range.", Stream(""), {"Content-Range": "bytes S-E/SIZE"}),
}


class RangeNotSatisfiable(StreamerError):
    status_code = 416
    code = "range_not_satisfiable"


# -- credentials and headers -------------------------------------------------


def presented_token() -> str | None:
    """The token of ``?token=``, else of ``Authorization: Bearer``; None if neither."""
    token = request.args.get("token")
    if token:
        return token
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def int_header(name: str) -> int | None:
    """The non-negative integer value of header ``name`` (None if absent; 400 if not one)."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BadRequest(f"{name} must be a non-negative integer", code="invalid_header")
    return int(value)


def declared_checksum() -> str | None:
    """``X-Checksum-Sha256`` in lower case (None if absent; 400 unless 64 hex digits)."""
    declared = request.headers.get("X-Checksum-Sha256")
    if declared is None:
        return None
    if not _SHA256.match(declared):
        raise BadRequest("X-Checksum-Sha256 must be 64 hex digits", code="invalid_checksum")
    return declared.lower()


# -- downloads ----------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single-range ``Range`` header; None: whole.

    Multi-range and other units are ignored (the whole file is sent); a range
    starting at or past the end raises :class:`RangeNotSatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
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


def file_response(
    *,
    size: int,
    sha256: str | None,
    filename: str,
    content_type: str | None,
    read: Callable[[int, int], AsyncIterable[bytes]],
) -> Response:
    """Answer the request with a file of ``size`` bytes whose bytes ``read(start, end)``
    streams: 200 whole (zstd when asked), 206 for a satisfiable ``Range`` (ignored when
    ``If-Range`` is not the current ETag), 416 for a range outside the file."""
    etag = f'"{sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "X-Checksum-Sha256": sha256 or "",
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{quoted(filename)}"',
    }
    wanted = parse_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if wanted is not None and if_range is not None and if_range != etag:
        wanted = None  # the file changed since the client's first part: start over
    start, end = wanted or (0, size)
    body: AsyncIterable[bytes] = read(start, end)
    status_code = 200
    if wanted is not None:
        status_code = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if wanted is None and "zstd" in request.headers.get("Accept-Encoding", "").lower():
        body = zstd_compress(body)
        headers["Content-Encoding"] = "zstd"
        headers["Vary"] = "Accept-Encoding"
    response = Response(
        body,
        status=status_code,
        content_type=content_type or "application/octet-stream",
        headers=headers,
    )
    if "Content-Encoding" not in headers:
        response.headers["Content-Length"] = str(end - start)
    response.timeout = None
    return response


def quoted(name: str) -> str:
    """``name`` safe inside a quoted ``Content-Disposition`` filename."""
    return name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")


async def zstd_compress(source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    async for piece in source:
        out = await trio.to_thread.run_sync(compressor.compress, piece)
        if out:
            yield out
    yield compressor.flush()


# -- uploads --------------------------------------------------------------------


async def file_part(
    body: AsyncIterable[bytes], boundary: str, fields: Collection[str]
) -> AsyncIterator[bytes]:
    """The content of the first multipart field named in ``fields``; others are ignored."""
    parser = MultipartParser(boundary)
    inside = found = False
    async for piece in body:
        for event in parser.feed(piece):
            if isinstance(event, PartStart):
                inside = not found and event.name in fields
                found |= inside
            elif isinstance(event, PartData) and inside:
                yield event.data
            elif isinstance(event, PartEnd):
                inside = False
    parser.finish()
    if not found:
        names = " or ".join(repr(f) for f in fields)
        raise BadRequest(f"the multipart body has no {names} field", code="missing_file")


async def zstd_decompress(source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
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


def plaintext_body(fields: Collection[str]) -> tuple[AsyncIterable[bytes], bool]:
    """The uploaded file's bytes, and whether they are the raw body (its length known).

    ``Content-Encoding: zstd`` is decompressed; a ``multipart/form-data`` body
    yields the first field named in ``fields``. Other encodings are a 400.
    """
    body: AsyncIterable[bytes] = request.body
    raw = True
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "zstd":
        body, raw = zstd_decompress(body), False
    elif encoding not in ("", "identity"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}", code="unsupported_encoding")
    mime, _, params = (request.headers.get("Content-Type") or "").partition(";")
    if mime.strip().lower() == "multipart/form-data":
        boundary = parse_params(";" + params).get("boundary")
        if not boundary:
            raise BadRequest("multipart body without a boundary", code="malformed_multipart")
        body, raw = file_part(body, boundary, fields), False
    return body, raw
