"""Resumable, verified downloads and uploads against a ``streamer serve`` node.

One implementation for every route that speaks the protocol: the worker job
routes (``/api/worker/download-video`` / ``upload-video``) and the exchange's
``/api/v1/transfers/<id>/download`` / ``upload``. Pass an ``httpx.AsyncClient``
(:func:`streamer.client.connect`), the route, and its credentials as
``params`` (``{"token": ...}``) or ``headers`` (``Authorization``).

:func:`download`
    ``GET`` into ``<destination>.part`` (resumed with ``Range`` + ``If-Range`` if a
    previous run left one), ``Content-Length`` checked, sha256 computed as the file
    fills and compared with ``X-Checksum-Sha256``, then renamed onto
    ``destination``. Big files from servers that take ranges come in
    ``options.parallel`` ranges at once, written in place. ``options.compress``
    asks for ``Accept-Encoding: zstd``.
:func:`upload`
    Hash the file, ``POST`` it raw with ``X-Checksum-Sha256`` and ``Upload-Length``
    (zstd when ``options.compress``); after a cut, ``HEAD`` → ``Upload-Offset`` →
    ``PATCH`` the rest. ``checksum_last=True`` (the worker routes) hashes a big file
    while it is sent instead: ``POST`` all but its last MiB, ``PATCH`` that with the
    checksum.

Both retry failures worth retrying (cut connections, short bodies, 429/502/503/
504, a checksum mismatch on download) ``options.retries`` times with 2 s / 4 s /
8 s backoff plus jitter, share ``options.bandwidth`` (a
:class:`~streamer._pipeline.throttle.TokenBucket`), report
``progress(done, total)``, and raise :class:`TransferError` (an
:class:`~streamer.client.http.ApiError`) when they give up. A failed download
removes its part file; a cancelled one keeps it for the next run::

    import trio
    from streamer.client import connect
    from streamer.client.transfer import TransferOptions, download

    async def main() -> None:
        async with connect("http://master:8080") as client:
            result = await download(
                client, "/api/v1/transfers/ID/download", "video.mp4",
                params={"token": "..."}, options=TransferOptions(compress=True),
            )
            print(result.size, result.sha256)

    trio.run(main)
"""

from __future__ import annotations

from ._download import download, part_path
from ._upload import upload
from ._wire import (
    DownloadResult,
    ProgressCallback,
    TransferError,
    TransferOptions,
    UploadResult,
)

__all__ = [
    "DownloadResult",
    "ProgressCallback",
    "TransferError",
    "TransferOptions",
    "UploadResult",
    "download",
    "part_path",
    "upload",
]
