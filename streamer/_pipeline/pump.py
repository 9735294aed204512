"""Move one byte stream from a source through stages into a sink.

Each stage runs in its own task, joined to the next by a channel of capacity
one, so at most ``2 * (stages + 1)`` chunks are alive at a time whatever the
stream's length: memory stays flat in file size while consecutive chunks are
read, transformed and written concurrently. The first failure anywhere cancels
the whole pump and propagates.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Protocol

import trio

from .._concurrency import CLEANUP_SECONDS, open_nursery


class Stage(Protocol):
    async def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk; return the bytes to pass on (may be empty)."""
        ...

    async def flush(self) -> bytes:
        """End of stream: return any bytes still held (and finalise results)."""
        ...

    def close(self) -> None:
        """Release resources (threads, native contexts); called after success or failure."""
        ...


class Sink(Protocol):
    async def write(self, chunk: bytes) -> None: ...


async def pump(source: AsyncIterable[bytes], stages: Sequence[Stage], sink: Sink) -> None:
    """Drain ``source`` through ``stages`` (in order) into ``sink``.

    Returns when the sink has been handed every byte, including what the stages
    flushed; the caller then commits or aborts the sink.
    """
    try:
        async with open_nursery() as nursery:
            send, receive = trio.open_memory_channel[bytes](1)
            nursery.start_soon(_produce, source, send)
            for stage in stages:
                next_send, next_receive = trio.open_memory_channel[bytes](1)
                nursery.start_soon(_transform, stage, receive, next_send)
                receive = next_receive
            nursery.start_soon(_consume, receive, sink)
    finally:
        for stage in stages:
            stage.close()


async def _produce(source: AsyncIterable[bytes], send: trio.MemorySendChannel[bytes]) -> None:
    async with send:
        if hasattr(source, "aclose"):
            async with aclosing(source):  # type: ignore[type-var]
                async for chunk in source:
                    await send.send(chunk)
        else:
            async for chunk in source:
                await send.send(chunk)


async def _transform(
    stage: Stage,
    receive: trio.MemoryReceiveChannel[bytes],
    send: trio.MemorySendChannel[bytes],
) -> None:
    async with receive, send:
        async for chunk in receive:
            out = await stage.feed(chunk)
            if out:
                await send.send(out)
        tail = await stage.flush()
        if tail:
            await send.send(tail)


async def _consume(receive: trio.MemoryReceiveChannel[bytes], sink: Sink) -> None:
    async with receive:
        async for chunk in receive:
            await sink.write(chunk)


async def coalesce(source: AsyncIterable[bytes], min_size: int) -> AsyncIterator[bytes]:
    """Re-chunk a stream of small pieces (an HTTP body arrives in ~64 KiB frames) into
    chunks of at least ``min_size`` bytes (the last may be shorter), so the stages
    after it pay their per-chunk cost (thread hops) per MiB, not per frame."""
    pending: list[bytes] = []
    size = 0
    async for piece in source:
        pending.append(piece)
        size += len(piece)
        if size >= min_size:
            yield b"".join(pending)
            pending, size = [], 0
    if size:
        yield b"".join(pending)


async def write_through(
    body: AsyncIterable[bytes], write: Callable[[bytes], Awaitable[None]], *, chunk: int = 1 << 20
) -> None:
    """Hand ``body`` to ``write`` ``chunk`` bytes at a time. If the body breaks off (a
    cut connection, a cancelled request), what did arrive is still written (shielded,
    bounded), so a resumed upload loses nothing that reached us. The body keeps
    arriving (up to the request's flow buffer) while a chunk is being written."""
    pending: list[bytes] = []
    size = 0
    try:
        async for piece in body:
            pending.append(piece)
            size += len(piece)
            if size >= chunk:
                data, pending, size = b"".join(pending), [], 0
                await write(data)
    except BaseException:
        if pending:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS):
                await write(b"".join(pending))
        raise
    if pending:
        await write(b"".join(pending))


async def capped(
    body: AsyncIterable[bytes],
    limit: int | None,
    *,
    seen: int,
    too_long: Callable[[int], BaseException],
) -> AsyncIterator[bytes]:
    """``body``, refusing bytes beyond ``limit`` counted from the file's start, of which
    ``seen`` bytes were already taken (a resumed upload): the first piece past it raises
    ``too_long(limit)``. ``limit`` None: no limit."""
    async for piece in body:
        seen += len(piece)
        if limit is not None and seen > limit:
            raise too_long(limit)
        yield piece
