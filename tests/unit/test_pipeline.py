"""pump(): order, hashing on the way, flat memory, failure propagation."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
import trio

from streamer._errors import StorageError
from streamer._pipeline import Progress, Sha256, capped, pump


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)


async def source(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await trio.lowlevel.checkpoint()
        yield chunk


class Upper:
    """A transforming stage with a tail, like a compressor."""

    async def feed(self, chunk: bytes) -> bytes:
        return chunk.upper()

    async def flush(self) -> bytes:
        return b"!"

    def close(self) -> None:
        pass


async def test_bytes_arrive_in_order_hashed_and_counted() -> None:
    chunks = [bytes([i]) * (100_000 + i) for i in range(20)]  # big enough for the thread path
    digest, reports, sink = Sha256(), [], ListSink()
    await pump(source(chunks), [digest, Progress(reports.append)], sink)
    data = b"".join(chunks)
    assert b"".join(sink.chunks) == data
    assert digest.hexdigest == hashlib.sha256(data).hexdigest()
    assert reports[-1] == len(data) and reports == sorted(reports)


async def test_transforming_stages_apply_in_order_and_flush() -> None:
    digest_in, digest_out, sink = Sha256(), Sha256(), ListSink()
    await pump(source([b"ab", b"cd"]), [digest_in, Upper(), digest_out], sink)
    assert b"".join(sink.chunks) == b"ABCD!"
    assert digest_in.hexdigest == hashlib.sha256(b"abcd").hexdigest()
    assert digest_out.hexdigest == hashlib.sha256(b"ABCD!").hexdigest()


async def test_memory_is_bounded_whatever_the_length() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"x"

    class Stuck:
        async def write(self, chunk: bytes) -> None:
            await trio.sleep_forever()

    with trio.move_on_after(0.2):
        await pump(endless(), [Sha256(), Progress(lambda n: None)], Stuck())
    assert produced <= 2 * 3 + 1  # a chunk in each task and channel, no more


async def test_a_failure_anywhere_cancels_the_pump_and_surfaces_unwrapped() -> None:
    class Failing:
        async def write(self, chunk: bytes) -> None:
            raise StorageError("disk full", code="ENOSPC")

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 10

    with pytest.raises(StorageError, match="disk full"):
        await pump(endless(), [Sha256()], Failing())


async def _listed(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_capped_passes_up_to_the_limit_counting_what_was_seen() -> None:
    got = [p async for p in capped(_listed([b"ab", b"cd"]), 6, seen=2, too_long=ValueError)]
    assert got == [b"ab", b"cd"]
    got = [p async for p in capped(_listed([b"x" * 9]), None, seen=5, too_long=ValueError)]
    assert got == [b"x" * 9]


async def test_capped_refuses_the_first_piece_past_the_limit() -> None:
    got: list[bytes] = []
    source = _listed([b"ab", b"cd", b"ef"])
    with pytest.raises(ValueError, match=r"^5$"):
        async with aclosing(source):
            async for piece in capped(source, 5, seen=1, too_long=lambda n: ValueError(str(n))):
                got.append(piece)
    assert got == [b"ab", b"cd"]  # 1 + 2 + 2 = 5 is the limit; b"ef" would pass it
