"""Copying a big file by parallel ranges written in place (S3 or local → local disk).

The source's ranges (``range_size`` bytes, ``ranges_in_flight`` at a time, all
of one pinned version) are each received into a buffer of their own and
written, a chunk at a time as the bytes arrive, where they belong in the
preallocated staged file. Once every range before it is hashed, a range's
buffer is hashed and handed to the next range: the digest covers every byte
that lands, nothing is read back, and memory stays at ``ranges_in_flight *
range_size`` whatever the file's size. The buffers and chunks are aligned so
that the writer can send them to the disk past the page cache
(:mod:`streamer._storage.directio`). The caller commits only after the digest
is known.
"""

from __future__ import annotations

import hashlib

import trio

from .._concurrency import open_nursery
from .._errors import SOURCE_CHANGED, StorageError
from .._pipeline import Progress
from .._storage.base import Declare, PositionalWriter, RangedSource
from .._storage.directio import direct_buffer

WRITE_CHUNK = 4 << 20  # bytes of a range written at a time (the last chunk may be less)


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
            code=SOURCE_CHANGED,
        )
    if pinned.sha256 is not None and declare is not None:
        declare(pinned.sha256)
    version = pinned.version
    await writer.preallocate(size)
    step = source.range_size
    ranges = [(start, min(start + step, size)) for start in range(0, size, step)]
    hashed = [trio.Event() for _ in ranges]
    digest = hashlib.sha256()
    buffers = _Buffers(source.ranges_in_flight, min(step, size))

    async def fetch(index: int, start: int, end: int, buffer: memoryview) -> None:
        into = buffer[: end - start]
        landing = _Landing(writer, progress, start, into)
        await source.fetch_range(
            path, start=start, version=version, into=into, landed=landing.landed
        )
        if index:
            await hashed[index - 1].wait()
        await trio.to_thread.run_sync(digest.update, into)
        hashed[index].set()
        buffers.give(buffer)

    async with open_nursery() as nursery:
        for index, (start, end) in enumerate(ranges):
            # in range order: a range holds its buffer until the ones before it are
            # hashed, so buffers taken out of order could all wait on a range without one
            buffer = await buffers.take()
            nursery.start_soon(fetch, index, start, end, buffer)
    return digest.hexdigest()


class _Buffers:
    """``count`` buffers of ``size`` bytes fit for direct writes, made as first needed
    and dropped (their memory returned) with the copy; :meth:`take` waits while all
    are out."""

    def __init__(self, count: int, size: int) -> None:
        self._size = size
        self._give, self._free = trio.open_memory_channel[memoryview | None](count)
        for _ in range(count):
            self._give.send_nowait(None)  # a buffer not made yet

    async def take(self) -> memoryview:
        buffer = await self._free.receive()
        return direct_buffer(self._size) if buffer is None else buffer

    def give(self, buffer: memoryview) -> None:
        self._give.send_nowait(buffer)


class _Landing:
    """Writes a range's bytes out as they land in its buffer: every whole
    :data:`WRITE_CHUNK`, then the rest once the range is complete."""

    def __init__(
        self, writer: PositionalWriter, progress: Progress, start: int, buffer: memoryview
    ) -> None:
        self._writer = writer
        self._progress = progress
        self._start = start
        self._buffer = buffer
        self._written = 0

    async def landed(self, filled: int) -> None:
        if filled < len(self._buffer):
            filled -= (filled - self._written) % WRITE_CHUNK
        if filled > self._written:
            await self._writer.write_at(
                self._start + self._written, self._buffer[self._written : filled]
            )
            self._progress.add(filled - self._written)
            self._written = filled
