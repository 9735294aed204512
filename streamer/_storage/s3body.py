"""S3 request bodies: payloads held in memory (a part at most), their SHA-256, and
their sending in slices through httpx."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import trio

from .s3settings import MiB

_THREAD_HASH_BYTES = 256 * 1024
SEND_SLICE = MiB // 4  # httpcore copies each piece of a body once (h11 joins): keep them small

Body = bytes | bytearray | memoryview


async def sha256_hex(data: Body) -> str:
    """SHA-256 of ``data``, hashed in a worker thread when it is large."""
    if len(data) < _THREAD_HASH_BYTES:
        return hashlib.sha256(data).hexdigest()
    return await trio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())


class SlicedBody(httpx.AsyncByteStream):
    """A request body in memory, sent in slices of at most ``SEND_SLICE`` bytes.

    httpx wraps ``content=bytes`` in an async generator, which trio reports as
    unclosed when a send is cancelled; this iterator is a plain object.
    """

    def __init__(self, data: Body) -> None:
        self._data = memoryview(data)

    def __aiter__(self) -> AsyncIterator[bytes]:
        data, self._data = self._data, memoryview(b"")  # single use: a retry builds a new one
        return _Slices(data)


class _Slices:
    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._offset = 0

    def __aiter__(self) -> _Slices:
        return self

    async def __anext__(self) -> bytes:
        if self._offset >= len(self._data):
            raise StopAsyncIteration
        start, self._offset = self._offset, self._offset + SEND_SLICE
        return self._data[start : self._offset]  # type: ignore[return-value]  # bytes-like
