"""The ``/api/worker`` routes from the worker's side (see :mod:`streamer.client.worker`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from ._wire import (
    DEFAULT_TIMEOUT,
    DownloadResult,
    ProgressCallback,
    TransferOptions,
    UploadResult,
    sha256_file,
    wire_errors,
)
from .http import ApiError, connect, raise_for_error
from .transfer import download, upload

log = logging.getLogger("streamer.worker")

PREFIX = "/api/worker"
DEFAULT_LEASE = 60.0


@dataclass(frozen=True)
class Claim:
    """A claimed job (the server's job JSON), its job token, and the seconds the server
    allows for its download, command and upload (None: it did not say, as a seed 004
    server)."""

    job: dict[str, Any]
    token: str
    download_timeout: float | None = None
    upload_timeout: float | None = None
    command_timeout: float | None = None

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Claim:
        """The claim in a ``POST /jobs/claim`` answer (time limits that are not
        positive numbers are ignored)."""
        return cls(
            answer["job"],
            answer["token"],
            _seconds(answer.get("downloadTimeout")),
            _seconds(answer.get("uploadTimeout")),
            _seconds(answer.get("commandTimeout")),
        )

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def lease_seconds(self) -> float:
        """How long the lease lasts without a heartbeat (from the server's own clock:
        ``leaseExpiresAt - updatedAt``)."""
        try:
            expires = _parse_iso(self.job["leaseExpiresAt"])
            granted = _parse_iso(self.job["updatedAt"])
        except (KeyError, TypeError, ValueError):
            return DEFAULT_LEASE
        lease = expires - granted
        return lease if lease > 0 else DEFAULT_LEASE


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    return float(value)


def _parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class WorkerClient:
    """The ``/api/worker`` routes for ``worker_id`` over ``http`` (whose default
    ``Authorization`` is the worker token). Transfers use ``options`` with
    ``download_timeout`` / ``upload_timeout`` as their deadlines."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        worker_id: str,
        *,
        options: TransferOptions | None = None,
        download_timeout: float | None = DEFAULT_TIMEOUT,
        upload_timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.http = http
        self.worker_id = worker_id
        options = options or TransferOptions()
        self.options = options
        self._download_options = dataclasses.replace(options, timeout=download_timeout)
        self._upload_options = dataclasses.replace(options, timeout=upload_timeout)

    # -- control ---------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> httpx.Response:
        """One control request, retried like transfers; raises :class:`ApiError`."""

        async def attempt() -> httpx.Response:
            with wire_errors(f"{method} {path}"):
                response = await self.http.request(method, path, json=body, headers=_bearer(token))
            await raise_for_error(response)
            return response

        return await self.options.backoff().run(attempt, ApiError)

    async def claim(self) -> Claim | None:
        """The oldest pending job, now ours; None when nothing is pending."""
        response = await self._call(
            "POST", f"{PREFIX}/jobs/claim", body={"workerId": self.worker_id}
        )
        if response.status_code == 204:
            return None
        return Claim.from_answer(response.json())

    async def job(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = (await self._call("GET", f"{PREFIX}/jobs/{job_id}")).json()
        return answer

    async def heartbeat(self, claim: Claim) -> dict[str, Any]:
        """Renew the lease (409 ``lease_lost`` once the job was taken back)."""
        response = await self._call(
            "POST", f"{PREFIX}/jobs/{claim.id}/heartbeat", token=claim.token
        )
        answer: dict[str, Any] = response.json()
        return answer

    async def fail(self, claim: Claim, message: str, *, retry: bool = False) -> dict[str, Any]:
        """Report the job failed (``retry``: pending again while attempts remain)."""
        response = await self._call(
            "POST",
            f"{PREFIX}/jobs/{claim.id}/fail",
            token=claim.token,
            body={"message": message, "retry": retry},
        )
        answer: dict[str, Any] = response.json()
        return answer

    async def release(self, claim: Claim) -> dict[str, Any]:
        """Hand the job back unfinished (pending again; not a failed attempt)."""
        response = await self._call("POST", f"{PREFIX}/jobs/{claim.id}/release", token=claim.token)
        answer: dict[str, Any] = response.json()
        return answer

    # -- transfers -------------------------------------------------------------------

    async def download_source(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        token: str | None = None,
        progress: ProgressCallback | None = None,
        time_limit: float | None = None,
    ) -> DownloadResult:
        """The job's source into ``path`` (resumable, sha256-verified); ``token`` is the
        job token (None: the client's own credential, e.g. the API token); ``time_limit``
        seconds for all of it (None: the client's ``download_timeout``). A download
        that fails for good, its deadline included, removes its part file."""
        return await download(
            self.http,
            f"{PREFIX}/download-video",
            path,
            params={"job_id": job_id},
            headers=_bearer(token),
            options=_with_timeout(self._download_options, time_limit),
            progress=progress,
        )

    async def upload_result(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        token: str | None = None,
        progress: ProgressCallback | None = None,
        time_limit: float | None = None,
    ) -> UploadResult:
        """Send ``path`` as the job's result (resumable, sha256-verified by the server);
        on success the job is ``completed``; ``time_limit`` seconds for all of it (None:
        the client's ``upload_timeout``). A big file is hashed while it is sent, its
        checksum sent with the last bytes (``checksum_last`` of :func:`upload`).

        If the answer to a complete upload was lost, the retry finds the job already
        completed: that counts as success when the server's result has our sha256.
        """
        try:
            return await upload(
                self.http,
                f"{PREFIX}/upload-video",
                path,
                params={"job_id": job_id},
                headers=_bearer(token),
                options=_with_timeout(self._upload_options, time_limit),
                progress=progress,
                checksum_last=True,
            )
        except ApiError as exc:
            if exc.status not in (400, 409):
                raise
            landed = await self._landed(job_id, Path(path))
            if landed is None:
                raise
            return landed

    async def _landed(self, job_id: str, path: Path) -> UploadResult | None:
        try:
            job = await self.job(job_id)
        except ApiError:
            return None
        result = job.get("result") or {}
        if job.get("status") != "completed" or not result.get("sha256"):
            return None
        digest = await trio.to_thread.run_sync(sha256_file, path)
        if result["sha256"] != digest:
            return None
        log.info("job %s: the result had landed before the answer was lost", job_id)
        return UploadResult(int(result.get("size", 0)), digest, 0, (), result)


def _with_timeout(options: TransferOptions, seconds: float | None) -> TransferOptions:
    return options if seconds is None else dataclasses.replace(options, timeout=seconds)


def _bearer(token: str | None) -> Mapping[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def download_source(
    server: str,
    token: str,
    job_id: str,
    path: str | os.PathLike[str],
    *,
    options: TransferOptions | None = None,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Download job ``job_id``'s source from ``server`` into ``path`` with ``token``
    (a job token or the API token). See :mod:`streamer.client.transfer`."""
    options = options or TransferOptions()
    async with connect(server, token) as http:
        client = WorkerClient(http, "", options=options, download_timeout=options.timeout)
        return await client.download_source(job_id, path, progress=progress)


async def upload_result(
    server: str,
    token: str,
    job_id: str,
    path: str | os.PathLike[str],
    *,
    options: TransferOptions | None = None,
    progress: ProgressCallback | None = None,
) -> UploadResult:
    """Upload ``path`` as job ``job_id``'s result to ``server`` with ``token`` (a job
    token or the API token); the job is then ``completed``."""
    options = options or TransferOptions()
    async with connect(server, token) as http:
        client = WorkerClient(http, "", options=options, upload_timeout=options.timeout)
        return await client.upload_result(job_id, path, progress=progress)
