"""Pipeline stages: small objects that see every chunk on its way to the sink.

A stage is fed chunks in order and returns the bytes to pass on (the same chunk
for observers such as hashing and progress; new bytes for transformers such as
compression or encryption). CPU-heavy stages run their work in a worker thread
so that, inside :func:`~streamer._pipeline.pump.pump`, reading, hashing and
writing of consecutive chunks overlap on different cores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import trio

# Below this size a thread hop costs more than hashing on the event loop.
_THREAD_MIN_BYTES = 64 * 1024


class Sha256:
    """Hashes the bytes that pass; :attr:`hexdigest` is final after ``flush``."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.hexdigest: str | None = None

    async def feed(self, chunk: bytes) -> bytes:
        if len(chunk) >= _THREAD_MIN_BYTES:
            await trio.to_thread.run_sync(self._hash.update, chunk)
        else:
            self._hash.update(chunk)
        return chunk

    async def flush(self) -> bytes:
        self.hexdigest = self._hash.hexdigest()
        return b""


class Progress:
    """Counts the bytes that pass and reports the running total to ``report``.

    ``report`` runs on the event loop for every chunk and must be cheap (the
    engine coalesces what it publishes).
    """

    def __init__(self, report: Callable[[int], None], *, start: int = 0) -> None:
        self.total = start
        self._report = report

    async def feed(self, chunk: bytes) -> bytes:
        self.total += len(chunk)
        self._report(self.total)
        return chunk

    async def flush(self) -> bytes:
        return b""
