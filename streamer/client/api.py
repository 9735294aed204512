"""An async client of a node's transfer API (seed 000) and its upload endpoint.

Build it on a client from :func:`streamer.client.connect`::

    async with connect("http://127.0.0.1:8080", token) as http:
        api = TransferApi(http)
        submitted = await api.submit(body)
        final = await api.follow(submitted.job_id, print)

Every method raises :class:`streamer.client.ApiError` for an error answer and
lets ``httpx.TransportError`` through when the node cannot be reached.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import trio
from httpx_sse import SSEError, aconnect_sse

from .._retry import Backoff
from .http import ApiError, raise_for_error
from .models import Cancelled, Conflicts, Event, FileState, Job, Submitted, Uploaded

T = TypeVar("T")

CHUNK = 1 << 20
#: An SSE stream is silent at most 15 s (heartbeats); give up on it after this.
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=60.0)
#: An upload may wait in the node's queue before its body is read, and the answer
#: comes once the file is on disk: no read or write deadline.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=None, write=None)
#: Reconnections of a progress stream that broke before the job's final event.
STREAM_RETRIES = 5

Progress = Callable[[int], None]


class _Jobs(msgspec.Struct):
    jobs: list[Job]


class _JobAnswer(msgspec.Struct):
    job: Job


class _Files(msgspec.Struct):
    files: list[FileState]


class _Ticket(msgspec.Struct):
    ticket: str


class _Concurrency(msgspec.Struct, rename="camel"):
    max_concurrent_transfers: int


class _StreamBroke(Exception):
    """The progress stream ended or failed before the job's final event."""

    retryable = True
    retry_after = None


class TransferApi:
    """The transfer API of one node, over an ``httpx.AsyncClient`` the caller owns."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _call(
        self, method: str, url: str, answer: type[T], json: Any = None, **kwargs: Any
    ) -> T:
        response = await self.http.request(method, url, json=json, **kwargs)
        await raise_for_error(response)
        return msgspec.json.decode(response.content, type=answer)

    # -- jobs --------------------------------------------------------------

    async def submit(self, body: dict[str, Any]) -> Submitted:
        """Queue a transfer (``POST /api/transfer``); ``body`` is seed 000's request."""
        return await self._call("POST", "/api/transfer", Submitted, body)

    async def check_conflicts(self, body: dict[str, Any]) -> Conflicts:
        """Which files of ``body`` the destination already has, and the large-folder warning."""
        return await self._call("POST", "/api/transfer/check-conflicts", Conflicts, body)

    async def jobs(self, status: str | None = None) -> list[Job]:
        """Every job the node remembers, optionally only those in ``status``."""
        params = {} if status is None else {"status": status}
        return (await self._call("GET", "/api/transfer", _Jobs, params=params)).jobs

    async def job(self, job_id: str) -> Job:
        return (await self._call("GET", f"/api/transfer/{_segment(job_id)}", _JobAnswer)).job

    async def files(self, job_id: str) -> list[FileState]:
        return (await self._call("GET", f"/api/transfer/{_segment(job_id)}/files", _Files)).files

    async def cancel(self, job_id: str) -> Cancelled:
        """Stop a pending or running job (409 ``job_finished`` once it is over)."""
        return await self._call("POST", f"/api/transfer/cancel/{_segment(job_id)}", Cancelled)

    async def cleanup(self, job_id: str) -> None:
        """Forget a finished job (409 ``job_active`` while it runs)."""
        response = await self.http.post(f"/api/transfer/cleanup/{_segment(job_id)}")
        await raise_for_error(response)

    # -- settings ----------------------------------------------------------

    async def max_concurrent(self) -> int:
        url = "/api/settings/max-concurrent-transfers"
        return (await self._call("GET", url, _Concurrency)).max_concurrent_transfers

    async def set_max_concurrent(self, value: int) -> int:
        url, body = "/api/settings/max-concurrent-transfers", {"maxConcurrentTransfers": value}
        return (await self._call("PUT", url, _Concurrency, body)).max_concurrent_transfers

    # -- progress ----------------------------------------------------------

    async def sse_ticket(self, job_id: str) -> str:
        """A one-time ticket for the progress stream of ``job_id``."""
        body = {"resource": job_id, "resourceType": "transfer"}
        return (await self._call("POST", "/api/auth/sse-ticket", _Ticket, body)).ticket

    async def follow(self, job_id: str, on_event: Callable[[Event], None]) -> Event:
        """Call ``on_event`` for every progress event of ``job_id``; return the final one.

        A stream that breaks before the final event (dropped connection, node
        restart) is opened again with a new ticket, up to :data:`STREAM_RETRIES`
        times in a row with backoff; error answers (unknown job, 401) are raised.
        """

        async def attempt() -> Event:
            try:
                async with aclosing(self._events(job_id)) as events:
                    async for event in events:
                        on_event(event)
                        if event.final:
                            return event
            except (httpx.TransportError, SSEError) as exc:
                raise _StreamBroke(str(exc)) from exc
            raise _StreamBroke("the progress stream ended before the job did")

        backoff = Backoff(base=0.5, cap=5.0, max_retries=STREAM_RETRIES)
        return await backoff.run(attempt, _StreamBroke)

    async def _events(self, job_id: str) -> AsyncGenerator[Event]:
        ticket = await self.sse_ticket(job_id)
        url = f"/api/transfer/progress/{_segment(job_id)}"
        async with aconnect_sse(
            self.http, "GET", url, params={"ticket": ticket}, timeout=STREAM_TIMEOUT
        ) as source:
            await raise_for_error(source.response)
            async for message in source.aiter_sse():
                if message.data:
                    yield msgspec.json.decode(message.data, type=Event)

    # -- uploads -----------------------------------------------------------

    async def upload(
        self,
        location_id: str,
        path: str,
        file: Path,
        *,
        sha256: str | None = None,
        conflict: str = "overwrite",
        on_progress: Progress | None = None,
    ) -> Uploaded:
        """Stream ``file`` to ``path`` of the local location ``location_id``.

        The node checks ``sha256`` (hashed here first when not given) before the
        file is published, so a file that changes while it is read never lands.
        ``on_progress(n)`` is called as each chunk of ``n`` bytes is sent.
        Memory stays flat: the file is read in :data:`CHUNK`-sized pieces.
        """
        if sha256 is None:
            sha256 = await hash_file(file)
        size = (await trio.Path(file).stat()).st_size
        url = f"/api/upload/{_segment(location_id)}/{_segments(path)}"
        response = await self.http.put(
            url,
            content=_read_chunks(file, on_progress),
            params={"conflictResolution": conflict},
            headers={"X-Checksum-Sha256": sha256, "Content-Length": str(size)},
            timeout=UPLOAD_TIMEOUT,
        )
        await raise_for_error(response)
        return msgspec.json.decode(response.content, type=Uploaded)


async def hash_file(file: Path, on_progress: Progress | None = None) -> str:
    """The hex SHA-256 of ``file``, read and hashed in a worker thread chunk by chunk."""
    digest = hashlib.sha256()
    async for chunk in _chunks(file):
        await trio.to_thread.run_sync(digest.update, chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    return digest.hexdigest()


async def _read_chunks(file: Path, on_progress: Progress | None) -> AsyncIterator[bytes]:
    async for chunk in _chunks(file):
        yield chunk
        if on_progress is not None:
            on_progress(len(chunk))


async def _chunks(file: Path) -> AsyncIterator[bytes]:
    async with await trio.open_file(file, "rb") as handle:
        while chunk := await handle.read(CHUNK):
            yield chunk


def _segment(text: str) -> str:
    return quote(text, safe="")


def _segments(path: str) -> str:
    return "/".join(_segment(part) for part in path.split("/"))


__all__ = ["ApiError", "TransferApi", "hash_file"]
