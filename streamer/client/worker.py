"""The worker side of seed 004: claim jobs, fetch their source, send their result.

:class:`WorkerClient` speaks the ``/api/worker`` routes over one
``httpx.AsyncClient`` (:func:`streamer.client.connect` with a worker token):
:meth:`~WorkerClient.claim`, :meth:`~WorkerClient.heartbeat`,
:meth:`~WorkerClient.fail`, :meth:`~WorkerClient.release`, and the resumable,
verified :meth:`~WorkerClient.download_source` / :meth:`~WorkerClient.upload_result`
(built on :mod:`streamer.client.transfer`). :func:`run_worker` is the whole
loop ``streamer worker run`` runs. For scripts::

    import trio
    from streamer.client.worker import download_source, upload_result

    async def main() -> None:
        await download_source("http://master:8080", TOKEN, JOB_ID, "source.mp4")
        ...  # convert
        await upload_result("http://master:8080", TOKEN, JOB_ID, "output.mkv")

    trio.run(main)

``TOKEN`` is the job token a claim returned, or the node's API token (operators).
Control calls (claim, heartbeat, fail, release) retry transient failures like
transfers do; every failure that is not retried raises
:class:`~streamer.client.http.ApiError` (``status`` 401: a wrong token; 409
``lease_lost``: the job was taken back).
"""

from __future__ import annotations

from ._jobs import Claim, WorkerClient, download_source, upload_result
from ._runner import Reporter, WorkerSettings, run_worker

__all__ = [
    "Claim",
    "Reporter",
    "WorkerClient",
    "WorkerSettings",
    "download_source",
    "run_worker",
    "upload_result",
]
