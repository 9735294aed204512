"""The ``node-push`` runner: stream a server directory to another node, as Wings does.

One pass, nothing on disk: the tree is walked and framed as tar
(:func:`~streamer._pipeline.archive.tar_stream`), compressed (gzip or zstd),
hashed (SHA-256 of the compressed bytes), throttled to
``transfers.upload_limit`` and streamed as the ``archive`` part of a
``multipart/form-data`` body (chunked), followed by the ``checksum`` part
(hex digest), to the destination's ``POST /api/transfers`` with the Panel's
``Authorization`` header. Memory is a few chunks whatever the tree's size.

The ``before_archive`` hook runs first. A connection error, a timeout or an
answer 5xx/408/429 is retried as a whole new push, up to
``transfers.push_retries`` times, with exponential backoff; any other answer
(4xx: bad token, refused archive, checksum mismatch) fails at once. On failure
or cancel the Panel gets ``…/transfer/failure`` for the server; success is the
destination's to report.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Final

import httpx
import trio

from .._concurrency import open_nursery
from .._engine import FileTask, Job, JobControl
from .._errors import StorageError, StreamerError
from .._httpcoretls import lean_transport
from .._pipeline import Progress, Sha256, Stage, pump
from .._pipeline.archive import tar_stream
from .._pipeline.compression import Compress
from .._pipeline.throttle import Throttle
from . import multipart
from .panel import backoff
from .servers import estimate_tar_size, run_hook

if TYPE_CHECKING:
    from .service import NodeService, Push

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 30.0
CONNECT_TIMEOUT: Final = 15.0
WRITE_TIMEOUT: Final = 120.0
RESPONSE_TIMEOUT: Final = 900.0  # the destination may run its after_extract hook first
_RETRY_STATUSES: Final = frozenset({408, 429})


class PushFailed(StreamerError):
    """The destination refused the archive or could not be reached."""

    status_code = 502
    code = "push_failed"


class _Retryable(PushFailed):
    pass


class PushRunner:
    """Runs ``node-push`` jobs; see the module docstring."""

    resumable = False

    def __init__(self, node: NodeService) -> None:
        self._node = node

    async def recover(self, job: Job) -> None:
        pass

    async def run(self, job: Job, control: JobControl) -> None:
        node = self._node
        push = node.push_for(job)
        file = job.files[0]
        succeeded = False
        try:
            file.size = await trio.to_thread.run_sync(estimate_tar_size, push.root)
            job.total_bytes = file.size
            job.touch()
            hooks = node.config.servers.hooks
            await run_hook(
                "before_archive",
                hooks.before_archive,
                push.server,
                push.root,
                seconds=hooks.timeout_seconds,
            )
            retries = node.config.transfers.push_retries
            for attempt in range(retries + 1):
                try:
                    digest, size = await self._push_once(push, file, control)
                    break
                except _Retryable as exc:
                    if attempt == retries:
                        raise PushFailed(f"{exc.message} (after {retries + 1} attempts)") from None
                    delay = backoff(attempt + 1, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS)
                    log.warning(
                        "push of server %s failed (%s); retry %d of %d in %.1fs",
                        push.server,
                        exc.message,
                        attempt + 1,
                        retries,
                        delay,
                    )
                    await trio.sleep(delay)
            file.size = size
            job.total_bytes = size
            control.file_completed(file, sha256=digest, final_path=file.destination)
            succeeded = True
            log.info("pushed server %s to %s", push.server, file.destination)
        finally:
            node.push_done(push)
            if not succeeded:
                node.panel.report(push.server, success=False, job_id=job.id)

    async def _push_once(self, push: Push, file: FileTask, control: JobControl) -> tuple[str, int]:
        """One whole push; returns the archive's SHA-256 and the tar stream's size.
        Raises :class:`_Retryable` for what is worth another try."""
        control.file_started(file)
        estimate = file.size
        digest = Sha256()
        progress = Progress(lambda n: control.file_progress(file, n if n < estimate else estimate))
        stages: list[Stage] = [
            progress,
            Compress(push.format),
            digest,
            Throttle(self._node.upload),
        ]
        boundary = multipart.new_boundary()
        send, receive = trio.open_memory_channel[bytes](1)
        produced = False

        async def produce() -> None:
            nonlocal produced
            async with send:
                try:
                    await pump(tar_stream(push.root), stages, _ChannelSink(send))
                except OSError as exc:
                    raise StorageError(f"reading server {push.server}: {exc}") from None
                produced = True

        async def body() -> AsyncGenerator[bytes, None]:
            yield multipart.part_head(
                boundary,
                "archive",
                filename=f"archive.{push.format.extension}",
                content_type="application/octet-stream",
                first=True,
            )
            async for chunk in receive:
                yield chunk
            if not produced or digest.hexdigest is None:
                raise PushFailed("the archive stream ended early")
            yield (
                multipart.part_head(boundary, "checksum")
                + digest.hexdigest.encode()
                + multipart.closing(boundary)
            )

        headers = {
            "Authorization": push.authorization,
            "Content-Type": multipart.content_type(boundary),
        }
        timeout = httpx.Timeout(
            connect=CONNECT_TIMEOUT,
            read=RESPONSE_TIMEOUT,
            write=WRITE_TIMEOUT,
            pool=CONNECT_TIMEOUT,
        )
        content = body()
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, transport=lean_transport()) as client,
                receive,
                open_nursery() as nursery,
            ):
                nursery.start_soon(produce)
                try:
                    response = await client.post(push.url, content=content, headers=headers)
                finally:
                    # The destination may answer before taking the whole body.
                    nursery.cancel_scope.cancel()
                    await content.aclose()
                text = response.text[:300]
        except httpx.HTTPError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc or 'connection failed'}") from None
        status = response.status_code
        if 200 <= status < 300:
            assert digest.hexdigest is not None
            return digest.hexdigest, progress.total
        message = f"destination answered HTTP {status}: {text}"
        if status >= 500 or status in _RETRY_STATUSES:
            raise _Retryable(message)
        raise PushFailed(message, code="push_refused")


class _ChannelSink:
    def __init__(self, send: trio.MemorySendChannel[bytes]) -> None:
        self._send = send

    async def write(self, chunk: bytes) -> None:
        await self._send.send(chunk)
