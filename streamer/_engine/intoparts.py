"""Copying a big file read straight into the parts of a multipart upload (local → S3).

The writer lends the buffer of each part in turn (:class:`PartLender`); a
worker thread reads the file's next bytes into it at their offset and hashes
them there, in file order, with the running SHA-256 (which releases the GIL),
before the part ships. No chunk is allocated and nothing is copied: memory is
the writer's own bound (``parts_in_flight`` parts, the one being filled
included), and the digest is of the very bytes sent, so it covers every byte
that lands; the caller commits only after it has checked it.

The file is read to its planned size and probed one byte past it: a file
that grew fails with ``SourceChanged``; one that shrank returns short (the
caller sees the size read differ from the plan and fails it the same way).
"""

from __future__ import annotations

import hashlib

import trio

from .._errors import SOURCE_CHANGED, StorageError
from .._pipeline import Progress
from .._storage.base import PartLender, PositionalFile, PositionalSource

#: Bytes read (and then hashed, while still in the CPU's cache) at a time.
READ_SLICE = 1 << 20


async def copy_into_parts(
    source: PositionalSource, path: str, size: int, writer: PartLender, progress: Progress
) -> str:
    """Copy ``path`` (expected to be ``size`` bytes) into ``writer``'s parts; returns
    the SHA-256 (hex) of the bytes handed to it, counted by ``progress``.
    ``SourceChanged`` if the file grew; the caller aborts the writer on any error."""
    digest = hashlib.sha256()
    file = await source.open_positional(path)
    try:
        offset = 0
        while offset < size:
            part = await writer.lend_part()
            want = min(len(part), size - offset)
            count = await trio.to_thread.run_sync(_fill, file, offset, part[:want], digest)
            writer.part_filled(count)
            progress.add(count)
            offset += count
            if count < want:  # the file shrank: the caller reports it
                return digest.hexdigest()
        if await trio.to_thread.run_sync(file.readinto, size, memoryview(bytearray(1))):
            raise StorageError(
                f"{path} changed while being copied (size {size} → more)", code=SOURCE_CHANGED
            )
    finally:
        file.close()
    return digest.hexdigest()


def _fill(file: PositionalFile, offset: int, part: memoryview, digest: hashlib._Hash) -> int:
    """In a worker thread: read the file at ``offset`` into ``part`` (up to its end or the
    file's) by slices, each hashed once read; returns the bytes read. Stops within a
    slice when the caller is cancelled."""
    filled = 0
    while filled < len(part):
        count = file.readinto(offset + filled, part[filled : filled + READ_SLICE])
        if not count:
            break
        digest.update(part[filled : filled + count])
        filled += count
        trio.from_thread.check_cancelled()
    return filled
