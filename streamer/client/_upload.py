"""One resumable, verified upload of a file (see :func:`streamer.client.transfer.upload`).

The file is hashed first (the server checks ``X-Checksum-Sha256`` before the
file lands), then sent as the raw body of a ``POST`` with ``Upload-Length``
(zstd-compressed when asked: ``Content-Encoding: zstd``, chunked). After a
failure the upload resumes tus-style: ``HEAD`` tells the bytes the server kept
(``Upload-Offset``), ``PATCH`` sends the rest from there, uncompressed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import trio
import zstandard

from .._pipeline.throttle import TokenBucket
from ._wire import (
    ProgressCallback,
    TransferError,
    TransferOptions,
    UploadResult,
    deadline,
    sha256_file,
    wire_errors,
)
from .http import ApiError, raise_for_error

ZSTD_LEVEL = 3
#: 409 codes that a later HEAD + PATCH gets past (the server had not yet seen the cut
#: connection end, or received more of it meanwhile).
_RESUMABLE_CONFLICTS = frozenset({"offset_mismatch", "conflict"})


class FileBody(httpx.AsyncByteStream):
    """``source[offset:size]`` as a request body: read a chunk at a time in a thread,
    throttled, counted, zstd-compressed when ``compress``.

    An iterator, not an async generator (nor httpx's wrapper of an iterable, which
    is one): a cut connection drops it half-way and nothing is left for the
    garbage collector to finalise. Send it as ``request.stream``.
    """

    def __init__(
        self,
        fd: int,
        offset: int,
        size: int,
        *,
        chunk_size: int,
        bucket: TokenBucket | None,
        compress: bool,
        sent: ProgressCallback | None,
    ) -> None:
        self._fd = fd
        self._pos = offset
        self._size = size
        self._chunk_size = chunk_size
        self._bucket = bucket
        self._sent = sent
        self._compressor = (
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj() if compress else None
        )
        self._flushed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while self._pos < self._size:
            want = min(self._chunk_size, self._size - self._pos)
            data = await trio.to_thread.run_sync(os.pread, self._fd, want, self._pos)
            if not data:
                raise TransferError(
                    f"the file shrank to {self._pos} bytes while it was uploaded",
                    code="source_changed",
                )
            if self._bucket is not None:
                await self._bucket.consume(len(data))
            self._pos += len(data)
            if self._sent is not None:
                self._sent(self._pos, self._size)
            if self._compressor is None:
                return data
            out = await trio.to_thread.run_sync(self._compressor.compress, data)
            if out:
                return out
        if self._compressor is not None and not self._flushed:
            self._flushed = True
            return self._compressor.flush()
        raise StopAsyncIteration


class Upload:
    """The state of one upload across its attempts."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        source: Path,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        options: TransferOptions,
        progress: ProgressCallback | None,
    ) -> None:
        self._client = client
        self._url = url
        self._source = source
        self._params = dict(params or {})
        self._headers = dict(headers or {})
        self._options = options
        self._progress = progress
        self._size = 0
        self._sha256 = ""
        self._fd = -1
        self._posted = False
        self.offset = 0  # bytes the server confirmed it keeps
        self.resumed: list[int] = []

    async def run(self) -> UploadResult:
        backoff = self._options.backoff()
        self._fd = await trio.to_thread.run_sync(
            os.open, self._source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        )
        try:
            self._size = os.fstat(self._fd).st_size
            with deadline(self._options.timeout, f"upload to {self._url}"):
                self._sha256 = await trio.to_thread.run_sync(sha256_file, self._source)
                answer = await backoff.run(self._attempt, ApiError, progress=lambda: self.offset)
        finally:
            os.close(self._fd)
        self._check(answer)
        return UploadResult(self._size, self._sha256, backoff.retries, tuple(self.resumed), answer)

    async def _attempt(self) -> dict[str, Any]:
        headers = {
            **self._headers,
            "X-Checksum-Sha256": self._sha256,
            "Upload-Length": str(self._size),
            "Content-Type": "application/octet-stream",
            "Accept-Encoding": "identity",
        }
        if not self._posted:
            self._posted = True
            method, offset, compress = "POST", 0, self._options.compress
        else:
            method, offset, compress = "PATCH", await self._server_offset(), False
            headers["Upload-Offset"] = str(offset)
            self.resumed.append(offset)
        if compress:
            headers["Content-Encoding"] = "zstd"
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(self._size - offset)
        body = FileBody(
            self._fd,
            offset,
            self._size,
            chunk_size=self._options.chunk_size,
            bucket=self._options.bandwidth,
            compress=compress,
            sent=self._progress,
        )
        request = self._client.build_request(
            method, self._url, params=self._params, headers=headers
        )
        request.stream = body
        with wire_errors(f"{method} {self._url}"):
            response = await self._client.send(request)
        return await self._answer(response)

    async def _server_offset(self) -> int:
        """``HEAD``: where the server's copy ends."""
        with wire_errors(f"HEAD {self._url}"):
            response = await self._client.head(
                self._url, params=self._params, headers=self._headers
            )
        await raise_for_error(response)
        offset = response.headers.get("upload-offset", "")
        total = response.headers.get("upload-length")
        if not offset.isdigit() or int(offset) > self._size:
            raise TransferError(
                f"HEAD {self._url}: Upload-Offset {offset!r} for a file of {self._size} bytes",
                code="invalid_offset",
                status=response.status_code,
            )
        if total is not None and total != str(self._size):
            raise TransferError(
                f"HEAD {self._url}: the server expects {total} bytes, the file has {self._size}",
                code="length_mismatch",
                status=response.status_code,
            )
        self.offset = int(offset)
        return self.offset

    async def _answer(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status == 201:
            answer: dict[str, Any] = response.json()
            return answer
        if status == 200:  # the server kept part of it: resume from where it says
            offset = response.headers.get("upload-offset", "")
            if offset.isdigit():
                self.offset = max(self.offset, int(offset))
            raise TransferError(
                f"{self._url}: the server has {offset or '?'} of {self._size} bytes",
                code="incomplete_upload", status=status, retryable=True,
            )  # fmt: skip
        try:
            await raise_for_error(response)
        except ApiError as exc:
            if status == 409 and exc.code in _RESUMABLE_CONFLICTS:
                raise TransferError(
                    exc.message, code=exc.code, status=status, retryable=True
                ) from None
            raise
        raise TransferError(
            f"{self._url}: unexpected {status}", code="unexpected_status", status=status
        )

    def _check(self, answer: dict[str, Any]) -> None:
        """The server's account of what landed must be what was sent (worker routes
        answer ``size``/``sha256``, the exchange ``total_bytes``/``checksum``)."""
        digest = answer.get("sha256", answer.get("checksum"))
        size = answer.get("size", answer.get("total_bytes"))
        if (digest is not None and digest != self._sha256) or (
            size is not None and size != self._size
        ):
            raise TransferError(
                f"{self._url}: the server stored {size} bytes hashing to {digest}, "
                f"sent {self._size} bytes hashing to {self._sha256}",
                code="checksum_mismatch",
            )


async def upload(
    client: httpx.AsyncClient,
    url: str,
    source: str | os.PathLike[str],
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    options: TransferOptions | None = None,
    progress: ProgressCallback | None = None,
) -> UploadResult:
    """See :func:`streamer.client.transfer.upload`."""
    job = Upload(
        client,
        url,
        Path(source),
        params=params,
        headers=headers,
        options=options or TransferOptions(),
        progress=progress,
    )
    return await job.run()
