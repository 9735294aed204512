"""One resumable, verified upload of a file (see :func:`streamer.client.transfer.upload`).

The server checks ``X-Checksum-Sha256`` before the file lands, so the checksum
must travel with the last byte. By default the file is hashed first, then sent
as the raw body of a ``POST`` with ``Upload-Length`` (zstd-compressed when asked:
``Content-Encoding: zstd``, chunked). With ``checksum_last`` a big file is hashed
*while* it is sent instead of read twice: the ``POST`` carries all but its last
:data:`LAST_PART` bytes (the server keeps them, answering ``200`` and
``Upload-Offset``), then a ``PATCH`` sends those with the checksum, which the
server checks over the whole file. After a failure the upload resumes tus-style:
``HEAD`` tells the bytes the server kept (``Upload-Offset``), ``PATCH`` sends the
rest from there, uncompressed, with the checksum (bytes not yet hashed are read
for it first).
"""

from __future__ import annotations

import hashlib
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
MIB = 1 << 20
#: With ``checksum_last``: files from this size on are hashed while sent; the bytes the
#: last request carries (with the checksum).
CHECKSUM_LAST_MIN = 16 * MIB
LAST_PART = MIB
#: 409 codes that a later HEAD + PATCH gets past (the server had not yet seen the cut
#: connection end, or received more of it meanwhile).
_RESUMABLE_CONFLICTS = frozenset({"offset_mismatch", "conflict"})


class RunningHash:
    """The sha256 of a file, fed the pieces it is read in, from its first byte on.

    :meth:`feed` takes a piece read at ``offset``: bytes already hashed are skipped
    (a resumed request sends some again); a piece past the bytes hashed so far is
    left out, and :meth:`finish` reads what is missing. Call both in threads, one at
    a time.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.hashed = 0

    def feed(self, offset: int, data: bytes) -> None:
        if offset <= self.hashed < offset + len(data):
            self._sha.update(memoryview(data)[self.hashed - offset :])
            self.hashed = offset + len(data)

    def finish(self, fd: int, size: int, chunk: int = 4 * MIB) -> str:
        """The hex digest of the file's ``size`` bytes (reading those not hashed yet)."""
        while self.hashed < size:
            data = os.pread(fd, min(chunk, size - self.hashed), self.hashed)
            if not data:
                raise TransferError(
                    f"the file shrank to {self.hashed} bytes while it was uploaded",
                    code="source_changed",
                )
            self.feed(self.hashed, data)
        return self._sha.hexdigest()


class FileBody(httpx.AsyncByteStream):
    """``source[offset:end]`` of a file of ``size`` bytes as a request body: read a
    chunk at a time in a thread (fed to ``hasher`` there, when given), throttled,
    counted, zstd-compressed when ``compress``.

    An iterator, not an async generator (nor httpx's wrapper of an iterable, which
    is one): a cut connection drops it half-way and nothing is left for the
    garbage collector to finalise. Send it as ``request.stream``.
    """

    def __init__(
        self,
        fd: int,
        offset: int,
        end: int,
        size: int,
        *,
        chunk_size: int,
        bucket: TokenBucket | None,
        compress: bool,
        sent: ProgressCallback | None,
        hasher: RunningHash | None = None,
    ) -> None:
        self._fd = fd
        self._pos = offset
        self._end = end
        self._size = size
        self._hasher = hasher
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
        while self._pos < self._end:
            want = min(self._chunk_size, self._end - self._pos)
            data = await trio.to_thread.run_sync(self._read, want)
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

    def _read(self, want: int) -> bytes:
        data = os.pread(self._fd, want, self._pos)
        if self._hasher is not None:
            self._hasher.feed(self._pos, data)
        return data


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
        checksum_last: bool = False,
    ) -> None:
        self._client = client
        self._url = url
        self._source = source
        self._checksum_last = checksum_last
        self._hasher: RunningHash | None = None
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
                if self._checksum_last and self._size >= CHECKSUM_LAST_MIN:
                    self._hasher = RunningHash()
                else:
                    self._sha256 = await trio.to_thread.run_sync(sha256_file, self._source)
                answer = await backoff.run(self._attempt, ApiError, progress=lambda: self.offset)
        finally:
            os.close(self._fd)
        self._check(answer)
        return UploadResult(self._size, self._sha256, backoff.retries, tuple(self.resumed), answer)

    async def _attempt(self) -> dict[str, Any]:
        if not self._posted:
            self._posted = True
            end = self._size - LAST_PART if self._hasher is not None else self._size
            answer = await self._send("POST", 0, end, compress=self._options.compress)
        else:
            offset = await self._server_offset()
            self.resumed.append(offset)
            answer = await self._send("PATCH", offset, self._size, compress=False)
        if answer is None:  # the planned first part is in: the rest, with the checksum
            answer = await self._send("PATCH", self.offset, self._size, compress=False)
        if answer is None:
            raise TransferError(
                f"{self._url}: the server has {self.offset} of {self._size} bytes",
                code="incomplete_upload", retryable=True,
            )  # fmt: skip
        return answer

    async def _send(
        self, method: str, offset: int, end: int, *, compress: bool
    ) -> dict[str, Any] | None:
        """Send bytes ``[offset, end)``; the server's answer, or None when it kept
        exactly the ``end`` bytes of a planned first part."""
        headers = {
            **self._headers,
            "Upload-Length": str(self._size),
            "Content-Type": "application/octet-stream",
            "Accept-Encoding": "identity",
        }
        if end == self._size and self._hasher is not None and not self._sha256:
            self._sha256 = await trio.to_thread.run_sync(self._hasher.finish, self._fd, self._size)
        if self._sha256:
            headers["X-Checksum-Sha256"] = self._sha256
        if method == "PATCH":
            headers["Upload-Offset"] = str(offset)
        if compress:
            headers["Content-Encoding"] = "zstd"
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(end - offset)
        body = FileBody(
            self._fd,
            offset,
            end,
            self._size,
            chunk_size=self._options.chunk_size,
            bucket=self._options.bandwidth,
            compress=compress,
            sent=self._progress,
            hasher=self._hasher if not self._sha256 else None,
        )
        request = self._client.build_request(
            method, self._url, params=self._params, headers=headers
        )
        request.stream = body
        with wire_errors(f"{method} {self._url}"):
            response = await self._client.send(request)
        return await self._answer(response, planned=end if end < self._size else None)

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

    async def _answer(
        self, response: httpx.Response, *, planned: int | None
    ) -> dict[str, Any] | None:
        """The answer to a complete upload; None when the server kept ``planned``
        bytes (a first part); other partial answers raise (retryable)."""
        status = response.status_code
        if status == 201:
            answer: dict[str, Any] = response.json()
            return answer
        if status == 200:  # the server kept part of it: resume from where it says
            offset = response.headers.get("upload-offset", "")
            if offset.isdigit():
                self.offset = max(self.offset, int(offset))
                if planned is not None and int(offset) == planned:
                    return None
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
    checksum_last: bool = False,
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
        checksum_last=checksum_last,
    )
    return await job.run()
