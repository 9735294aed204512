"""Copying a big file by parallel ranges written in place (S3 → local disk).

The source's ranges (``range_size`` bytes, ``ranges_in_flight`` at a time, all
of one pinned version) are written where they belong in the preallocated
staged file as their bytes arrive: no part is held in memory, so memory stays
at a socket read per range in flight whatever the file's size. The file is
hashed in order by reading back each range once it and every range before it
are on disk (from the page cache, while later ranges still arrive), so the
digest covers every byte that lands; the caller commits only after that.
"""

from __future__ import annotations

import hashlib

import trio

from .._concurrency import open_nursery
from .._errors import StorageError
from .._pipeline import Progress
from .._storage.base import Declare, PositionalWriter, RangedSource


async def copy_in_place(
    source: RangedSource,
    path: str,
    size: int,
    writer: PositionalWriter,
    progress: Progress,
    declare: Declare | None = None,
) -> str:
    """Copy ``path`` (expected to be ``size`` bytes) into ``writer``; returns the SHA-256
    (hex) of the bytes written. ``declare`` is told the SHA-256 the pinned version
    declares, if any (the caller verifies it). ``SourceChanged`` if the source is not
    ``size`` bytes or changes meanwhile; the caller aborts the writer on any error."""
    pinned = await source.pin(path)
    if pinned.size != size:
        raise StorageError(
            f"{path} changed before being copied (size {size} → {pinned.size})",
            code="SourceChanged",
        )
    if pinned.sha256 is not None and declare is not None:
        declare(pinned.sha256)
    version = pinned.version
    await writer.preallocate(size)
    step = source.range_size
    ranges = [(start, min(start + step, size)) for start in range(0, size, step)]
    landed = [trio.Event() for _ in ranges]
    digest = hashlib.sha256()
    limiter = trio.CapacityLimiter(source.ranges_in_flight)

    async def deliver(offset: int, piece: memoryview, stop: int) -> None:
        del stop  # the ranges are cut to the size already
        await writer.write_at(offset, piece)
        progress.add(len(piece))

    async def fetch(index: int, start: int, end: int) -> None:
        async with limiter:
            await source.fetch_range(path, start=start, end=end, version=version, deliver=deliver)
        await writer.range_written(start, end)
        landed[index].set()

    async def hash_in_order() -> None:
        for index, (start, end) in enumerate(ranges):
            await landed[index].wait()
            await writer.read_back(digest.update, start, end)

    async with open_nursery() as nursery:
        nursery.start_soon(hash_in_order)
        for index, (start, end) in enumerate(ranges):
            nursery.start_soon(fetch, index, start, end)
    return digest.hexdigest()
