"""One resumable, verified download into a file (see :func:`streamer.client.transfer.download`).

The first request is a plain ``GET`` (``Accept-Encoding: zstd`` when compression
is on), or, when a usable part file is left from before, a ``Range`` request
for its first missing byte pinned by ``If-Range`` with the saved ETag. A big
file from a server that takes ranges is cut into segments: the first
response fills the first segment, one ``Range`` request per other segment fills
the rest, all written in place into the preallocated part file while
:class:`~._partfile.FrontierHasher` hashes it in order. Any failure (a cut
connection, a short body, a 5xx) ends the attempt; the next one resumes every
segment where it stopped. A ``200`` where a ``206`` was asked for means the
resource changed: the part starts over. When every byte is in place and the
sha256 matches ``X-Checksum-Sha256``, the part is renamed onto the destination.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import httpx
import trio

from .._concurrency import cleanup, open_nursery
from .._fileio import pwrite_all
from .._httpbody import StreamedBody
from . import _partfile
from ._partfile import FrontierHasher, PartState, Segment
from ._wire import (
    DownloadResult,
    ProgressCallback,
    TransferError,
    TransferOptions,
    content_length,
    content_range,
    deadline,
    encoded,
    wire_errors,
)
from .http import ApiError, raise_for_error

log = logging.getLogger("streamer.client")

SAVE_INTERVAL = 1.0  # seconds between saves of the part state while bytes arrive


def part_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


class Download:
    """The state of one download across its attempts."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        destination: Path,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        options: TransferOptions,
        progress: ProgressCallback | None,
    ) -> None:
        self._client = client
        self._url = url
        self._params = dict(params or {})
        self._headers = dict(headers or {})
        self._options = options
        self._progress = progress
        self.destination = destination
        self.part = part_path(destination)
        self._state: PartState | None = None
        self._fd: int | None = None
        self._hasher: FrontierHasher | None = None
        self._loaded = False
        self.resumed: list[int] = []

    # -- the whole download --------------------------------------------------

    async def run(self) -> DownloadResult:
        backoff = self._options.backoff()
        try:
            with deadline(self._options.timeout, f"GET {self._url}"):
                path, size, digest, verified = await backoff.run(
                    self._attempt, ApiError, progress=self._present
                )
        except (ApiError, OSError):
            await cleanup(self._discard)
            raise
        finally:
            self._close()
        return DownloadResult(
            path, size, digest, verified, backoff.retries, tuple(self.resumed),
            ranges=len(self._state.segments) if self._state else 1,
        )  # fmt: skip

    def _present(self) -> int:
        return self._state.present if self._state is not None else 0

    async def _discard(self) -> None:
        self._close()
        self._state = None
        await trio.to_thread.run_sync(_partfile.remove_part, self.part)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    # -- one attempt -----------------------------------------------------------

    async def _attempt(self) -> tuple[Path, int, str, bool]:
        if not self._loaded:
            self._loaded = True
            await trio.to_thread.run_sync(self.destination.parent.mkdir, 0o777, True, True)
            self._state = await _partfile.load_state(self.part)
            if self._state is not None:
                await self._open_part(truncate=False)
        state = self._state
        lead_segment = state.first_missing() if state is not None else None
        if state is not None and lead_segment is None:
            return await self._finish()
        response = await self._get(lead_segment)
        try:
            lead = await self._accept(response, lead_segment)
        except BaseException:
            await cleanup(response.aclose)
            raise
        body = StreamedBody(response, decoded=True) if lead is not None else None
        try:
            await self._fill_all(lead, body)
        finally:
            if body is not None:
                await cleanup(body.close)
            if self._state is not None:
                await cleanup(_partfile.save_state, self.part, self._state)
        return await self._finish()

    async def _get(self, segment: Segment | None) -> httpx.Response:
        headers = dict(self._headers)
        if segment is None:
            headers["Accept-Encoding"] = "zstd" if self._options.compress else "identity"
        else:
            assert self._state is not None
            headers["Accept-Encoding"] = "identity"
            headers["Range"] = segment.range_header()
            if self._state.etag:
                headers["If-Range"] = self._state.etag
            if segment.pos > segment.start:
                self.resumed.append(segment.pos)
        request = self._client.build_request("GET", self._url, params=self._params, headers=headers)
        with wire_errors(f"GET {self._url}"):
            return await self._client.send(request, stream=True)

    async def _accept(self, response: httpx.Response, asked: Segment | None) -> Segment | None:
        """Check the first response of an attempt; the segment its body fills (None:
        nothing left to fill)."""
        status = response.status_code
        if status == 200:
            if asked is not None:
                log.info("%s: the resource changed (or ignores ranges): starting over", self._url)
            await self._start_over(response)
            assert self._state is not None
            return self._state.segments[0]
        if asked is not None and status == 416:
            assert self._state is not None
            _, _, total = content_range(response)
            if self._state.size is None and asked.end is None and asked.pos == total:
                self._state.learn_size(total)  # every byte had come; only the end was lost
                await response.aclose()
                return None
            await self._discard()
            raise TransferError(
                f"GET {self._url}: the resource now has {total} bytes", code="source_changed",
                status=status, retryable=True,
            )  # fmt: skip
        if asked is not None and status == 206:
            self._check_range(response, asked)
            return asked
        await raise_for_error(response)
        raise TransferError(
            f"GET {self._url}: unexpected {status}", code="unexpected_status", status=status
        )

    def _check_range(self, response: httpx.Response, segment: Segment) -> None:
        """A ``206`` must continue ``segment`` exactly, for the same resource."""
        assert self._state is not None
        first, last, total = content_range(response)
        etag = response.headers.get("etag")
        if self._state.etag and etag and etag != self._state.etag:
            raise TransferError(
                f"GET {self._url}: ETag {etag} answered If-Range {self._state.etag}",
                code="source_changed", status=206, retryable=True,
            )  # fmt: skip
        if self._state.size is None and segment.end is None:
            self._state.learn_size(total)
        if total != self._state.size or first != segment.pos or last is None:
            raise TransferError(
                f"GET {self._url}: asked {segment.range_header()} of {self._state.size}, got "
                f"{response.headers.get('content-range')}",
                code="invalid_range", status=206, retryable=True,
            )  # fmt: skip
        declared = content_length(response)
        if declared is not None and declared != last + 1 - first:
            raise TransferError(
                f"GET {self._url}: Content-Length {declared} for a range of {last + 1 - first}",
                code="length_mismatch", status=206, retryable=True,
            )  # fmt: skip

    async def _start_over(self, response: httpx.Response) -> None:
        """Plan a fresh part file for the whole resource described by ``response``."""
        compressed = encoded(response)
        size = None if compressed else content_length(response)
        takes_ranges = response.headers.get("accept-ranges", "").strip().lower() == "bytes"
        options = self._options
        ranges = 1
        if size is not None and takes_ranges and size >= options.parallel_min_size:
            ranges = max(1, options.parallel)
        checksum = response.headers.get("x-checksum-sha256", "").strip().lower() or None
        etag = response.headers.get("etag")
        if etag is not None and etag.startswith("W/"):
            etag = None  # a weak ETag cannot pin byte ranges
        self._state = PartState.plan(etag, checksum, size, ranges)
        await self._open_part(truncate=True)
        await _partfile.save_state(self.part, self._state)

    async def _open_part(self, *, truncate: bool) -> None:
        self._close()
        state = self._state
        assert state is not None

        def open_part() -> int:
            flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
            fd = os.open(self.part, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
            if truncate and state.size:
                try:
                    os.posix_fallocate(fd, 0, state.size)  # no "disk full" half-way through
                except OSError:
                    os.ftruncate(fd, state.size)
            return fd

        self._fd = await trio.to_thread.run_sync(open_part)
        self._hasher = FrontierHasher(self._fd)

    # -- filling segments ----------------------------------------------------------

    async def _fill_all(self, lead: Segment | None, body: StreamedBody | None) -> None:
        """Fill every missing segment (``lead`` from ``body``), hashing as they fill."""
        state, hasher = self._state, self._hasher
        assert state is not None and hasher is not None
        async with open_nursery() as nursery:
            nursery.start_soon(self._save_now_and_then)
            async with open_nursery() as workers:
                workers.start_soon(hasher.follow, state)
                if lead is not None and body is not None:
                    workers.start_soon(self._fill, lead, body)
                for segment in state.segments:
                    if segment is not lead and not segment.done:
                        workers.start_soon(self._fill, segment, None)
            nursery.cancel_scope.cancel()

    async def _save_now_and_then(self) -> None:
        while True:
            await trio.sleep(SAVE_INTERVAL)
            if self._state is not None:
                await _partfile.save_state(self.part, self._state)

    async def _fill(self, segment: Segment, body: StreamedBody | None) -> None:
        if body is None:
            response = await self._get(segment)
            try:
                if response.status_code == 200:
                    raise TransferError(
                        f"GET {self._url}: the resource changed during the download",
                        code="source_changed", status=200, retryable=True,
                    )  # fmt: skip
                if response.status_code != 206:
                    await raise_for_error(response)
                self._check_range(response, segment)
            except BaseException:
                await cleanup(response.aclose)
                raise
            body = StreamedBody(response, decoded=True)
            try:
                await self._copy(segment, body)
            finally:
                await cleanup(body.close)
        else:
            await self._copy(segment, body)

    async def _copy(self, segment: Segment, body: StreamedBody) -> None:
        """Body bytes into the part file at ``segment.pos``, a chunk at a time."""
        chunk_size = self._options.chunk_size
        bucket = self._options.bandwidth
        pending = bytearray()
        try:
            while not segment.done:
                with wire_errors(f"GET {self._url}"):
                    piece = await body.next()
                if piece is None:
                    if segment.end is not None:
                        raise TransferError(
                            f"GET {self._url}: the body ended at byte "
                            f"{segment.pos + len(pending)} of {segment.end}",
                            code="incomplete_body", retryable=True,
                        )  # fmt: skip
                    data, pending = pending, bytearray()
                    await self._write(segment, data)
                    assert self._state is not None
                    self._state.learn_size(segment.pos)
                    break
                if segment.end is not None:
                    piece = piece[: segment.end - segment.pos - len(pending)]
                if bucket is not None:
                    await bucket.consume(len(piece))
                pending += piece
                if len(pending) >= chunk_size or (
                    segment.end is not None and segment.pos + len(pending) >= segment.end
                ):
                    data, pending = pending, bytearray()
                    await self._write(segment, data)
        finally:
            if pending:  # what arrived before a failure is good: keep it
                with trio.CancelScope(shield=True):
                    await self._write(segment, pending)

    async def _write(self, segment: Segment, data: bytearray) -> None:
        if not data:
            return
        fd, hasher, state = self._fd, self._hasher, self._state
        assert fd is not None and hasher is not None and state is not None
        await trio.to_thread.run_sync(pwrite_all, fd, data, segment.pos)
        segment.pos += len(data)
        hasher.wake()
        if self._progress is not None:
            self._progress(state.present, state.size)

    # -- the end ---------------------------------------------------------------------

    async def _finish(self) -> tuple[Path, int, str, bool]:
        """Verify the complete part and rename it onto the destination."""
        state, hasher, fd = self._state, self._hasher, self._fd
        assert state is not None and hasher is not None and fd is not None
        await hasher.follow(state)  # catches up (a part complete from before)
        size = state.frontier()
        digest = hasher.hexdigest
        if state.checksum is not None and digest != state.checksum:
            await self._discard()
            raise TransferError(
                f"GET {self._url}: the {size} bytes hash to {digest}, "
                f"the server announced {state.checksum}",
                code="checksum_mismatch", retryable=True,
            )  # fmt: skip

        def commit() -> None:
            os.ftruncate(fd, size)
            if self._options.durable:
                os.fsync(fd)
            os.replace(self.part, self.destination)
            _partfile.remove_part(self.part)

        await trio.to_thread.run_sync(commit)
        self._close()
        return self.destination, size, digest, state.checksum is not None


async def download(
    client: httpx.AsyncClient,
    url: str,
    destination: str | os.PathLike[str],
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    options: TransferOptions | None = None,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """See :func:`streamer.client.transfer.download`."""
    job = Download(
        client,
        url,
        Path(destination),
        params=params,
        headers=headers,
        options=options or TransferOptions(),
        progress=progress,
    )
    return await job.run()
