"""httpx clients read big responses in big pieces once tune_client_reads() ran."""

from __future__ import annotations

from functools import partial

import httpx
import trio

from streamer._netio import CLIENT_READ_BYTES, tune_client_reads

BODY = b"x" * (8 << 20)


async def serve_one(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.receive_some(65536)  # the request (small, one read)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        await stream.send_all(head + BODY)


async def test_responses_arrive_in_pieces_over_64_kib() -> None:
    tune_client_reads()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with (
            httpx.AsyncClient() as client,
            client.stream("GET", f"http://127.0.0.1:{port}/") as response,
        ):
            sizes = [len(piece) async for piece in response.aiter_raw()]
        nursery.cancel_scope.cancel()
    assert sum(sizes) == len(BODY)
    assert 64 * 1024 < max(sizes) <= CLIENT_READ_BYTES
