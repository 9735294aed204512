"""Pipeline stages: small objects that see every chunk on its way to the sink.

A stage is fed chunks in order and returns the bytes to pass on (the same chunk
for observers such as hashing and progress; new bytes for transformers such as
compression or encryption). CPU-heavy stages run their work in a worker thread
so that, inside :func:`~streamer._pipeline.pump.pump`, reading, hashing and
writing of consecutive chunks overlap on different cores.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable

import trio

# Below this size a thread hop costs more than hashing on the event loop.
_THREAD_MIN_BYTES = 64 * 1024


class Sha256:
    """Hashes the bytes that pass; :attr:`hexdigest` is final after ``flush``.

    Big chunks are hashed by a helper thread *while* the next stage already
    handles the same chunk (bytes are immutable, so sharing is safe): hashing
    overlaps reading and writing instead of sitting between them. At most
    ``max_pending`` chunks wait for the hasher, which bounds memory; ``flush``
    waits for the digest, so nothing is committed before every byte was hashed.
    """

    def __init__(self, *, max_pending: int = 2, start: hashlib._Hash | None = None) -> None:
        """``start``: a SHA-256 already fed the bytes before these (a resumed upload)."""
        self._hash = start if start is not None else hashlib.sha256()
        self._max_pending = max_pending
        self._hasher: _BackgroundHasher | None = None
        self._seen_big_chunk = False
        self.hexdigest: str | None = None

    async def feed(self, chunk: bytes) -> bytes:
        if self._hasher is not None:
            await self._hasher.submit(chunk)
        elif len(chunk) < _THREAD_MIN_BYTES:
            self._hash.update(chunk)
        elif not self._seen_big_chunk:
            # A one-chunk file is common: one thread hop, no thread of its own.
            self._seen_big_chunk = True
            await trio.to_thread.run_sync(self._hash.update, chunk)
        else:
            self._hasher = _BackgroundHasher(self._hash, self._max_pending)
            await self._hasher.submit(chunk)
        return chunk

    async def flush(self) -> bytes:
        if self._hasher is not None:
            await self._hasher.finish()
        self.hexdigest = self._hash.hexdigest()
        return b""

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.stop()


class _BackgroundHasher:
    """One thread feeding chunks to a hash, with trio-side back-pressure."""

    def __init__(self, digest: hashlib._Hash, max_pending: int) -> None:
        self._digest = digest
        self._slots = trio.Semaphore(max_pending)
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    async def submit(self, chunk: bytes) -> None:
        await self._slots.acquire()
        self._queue.put(chunk)

    async def finish(self) -> None:
        self._queue.put(None)
        await trio.to_thread.run_sync(self._thread.join)

    def stop(self) -> None:
        """Unblock and end the thread (after a cancel); idempotent."""
        self._queue.put(None)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)
            try:
                self._token.run_sync_soon(self._slots.release)
            except trio.RunFinishedError:
                return


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

    def close(self) -> None:
        pass
