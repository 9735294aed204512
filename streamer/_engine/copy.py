"""The runner for storage-to-storage copies (cross-storage, s3-upload, s3-download).

Files of a job are copied with bounded parallelism; each goes source → sha256 →
progress → destination writer through :func:`~streamer._pipeline.pump`, and is
published only after every byte was hashed and the size matched the plan.
"""

from __future__ import annotations

import msgspec
import trio

from .._concurrency import cleanup, open_nursery
from .._errors import StorageError, StreamerError
from .._pipeline import Progress, Sha256, pump
from .._storage import Conflict, Storage
from .._storage.registry import Locations
from .engine import JobControl
from .jobs import FileTask, Job
from .transfer import TransferSpec

FILES_IN_FLIGHT = 4
SMALL_CHUNK = 1 << 20
LARGE_CHUNK = 4 << 20
LARGE_FILE = 64 << 20


def chunk_size_for(size: int) -> int:
    """Bigger chunks for big files: fewer thread hops, same flat memory bound."""
    return LARGE_CHUNK if size >= LARGE_FILE else SMALL_CHUNK


def staging_tag(job: Job, file: FileTask) -> str:
    return f"{job.id}-{file.index}"


class CopyRunner:
    """Copies the files of a job between two storages; see the module docstring."""

    resumable = True

    def __init__(self, locations: Locations, *, files_in_flight: int = FILES_IN_FLIGHT) -> None:
        self._locations = locations
        self._files_in_flight = files_in_flight

    def _storages(self, job: Job) -> tuple[Storage, Storage, Conflict]:
        spec = msgspec.convert(job.spec, TransferSpec)
        source = self._locations.get(spec.source.type, spec.source.location_id)
        destination = self._locations.get(spec.destination.type, spec.destination.location_id)
        return source, destination, spec.conflict

    async def recover(self, job: Job) -> None:
        _, destination, _ = self._storages(job)
        for file in job.files:
            if not file.status.finished:
                await destination.sweep(file.destination, tag=staging_tag(job, file))

    async def run(self, job: Job, control: JobControl) -> None:
        source, destination, conflict = self._storages(job)
        todo = [f for f in job.files if not f.status.finished]
        send, receive = trio.open_memory_channel[FileTask](len(todo))
        async with send:
            for file in todo:
                send.send_nowait(file)

        async def worker() -> None:
            async for file in receive:
                await self._copy(job, file, source, destination, conflict, control)

        async with receive, open_nursery() as nursery:
            for _ in range(min(self._files_in_flight, len(todo))):
                nursery.start_soon(worker)

    async def _copy(
        self,
        job: Job,
        file: FileTask,
        source: Storage,
        destination: Storage,
        conflict: Conflict,
        control: JobControl,
    ) -> None:
        control.file_started(file)
        try:
            if conflict is Conflict.SKIP and await destination.stat(file.destination):
                control.file_skipped(file)
                return
            digest = Sha256()
            progress = Progress(lambda loaded: control.file_progress(file, loaded))
            writer = await destination.open_writer(
                file.destination, conflict=conflict, tag=staging_tag(job, file)
            )
            try:
                chunks = source.read(file.source, chunk_size=chunk_size_for(file.size))
                await pump(chunks, [digest, progress], writer)
                if progress.total != file.size:
                    raise StorageError(
                        f"{file.source} changed while being copied "
                        f"(size {file.size} → {progress.total})",
                        code="SourceChanged",
                    )
                assert digest.hexdigest is not None
                final = await writer.commit(sha256=digest.hexdigest, mtime_ns=file.mtime_ns)
            finally:
                await cleanup(writer.abort)
        except StreamerError as exc:
            control.file_failed(file, exc)
            return
        if final is None:
            control.file_skipped(file)
        else:
            control.file_completed(file, sha256=digest.hexdigest, final_path=final)
