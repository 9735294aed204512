"""Response.read_into: bytes received in place when the transport can, else copied
from its pieces, however the pieces and the caller's buffer compare in size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from streamer._storage.httpexchange import Response


def _response(
    pieces: list[bytes], receive_into: Callable[[memoryview], Awaitable[int | None]] | None = None
) -> Response:
    queue = list(pieces)

    async def next_piece() -> bytes:
        return queue.pop(0) if queue else b""

    async def close() -> None:
        pass

    return Response(200, {}, next_piece, close, receive_into)


async def _read_all(response: Response, size: int) -> list[bytes]:
    buffer = memoryview(bytearray(size))
    reads = []
    while count := await response.read_into(buffer):
        reads.append(bytes(buffer[:count]))
    return reads


async def test_pieces_bigger_than_the_buffer_are_handed_out_in_turn() -> None:
    reads = await _read_all(_response([b"abcdefg", b"hi"]), 3)
    assert reads == [b"abc", b"def", b"g", b"hi"]


async def test_bytes_are_received_in_place_once_the_pieces_are_taken() -> None:
    """The transport declines (``None``) while it holds bytes of its own, then fills
    the caller's buffer itself."""
    arriving = [None, 2, 0]

    async def receive_into(buffer: memoryview) -> int | None:
        count = arriving.pop(0)
        if count:
            buffer[:count] = b"yz"
        return count

    reads = await _read_all(_response([b"wx"], receive_into), 8)
    assert reads == [b"wx", b"yz"]
    assert arriving == []
