"""One HTTP request and its response, as the S3 client and its transports exchange them.

The S3 client sends many small requests, and for each of them httpx's request
and response models (URL parsing, header normalisation, stream wrappers) cost
more CPU than framing and parsing the bytes (~35 µs of a 4 KiB GET's ~550 µs).
The client therefore hands its transport an :class:`Exchange` (a request
already split into origin, target and header bytes) and reads back a
:class:`Response` (status, a plain header dict, body pieces). Two transports
serve this interface (:class:`Transport`): the connection pool
(:class:`~streamer._storage.httppool.PooledTransport`), and
:class:`HttpxTransport`, which runs an exchange through any httpx transport
(``httpx.MockTransport`` in tests). Transport failures are httpx's exception
classes (``httpx.ReadError``, ``httpx.PoolTimeout``…) from both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
import trio

from .s3body import Body, SlicedBody


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request ready for the wire. ``headers`` carry ``Host`` and, with a body,
    ``Content-Length``; ``timeouts`` are httpx's (``connect``, ``read``, ``write``,
    ``pool``: seconds or ``None``)."""

    method: str
    url: str  # the whole URL: what was signed, and what an httpx transport is given
    scheme: str  # "http" | "https"
    host: str  # to connect to (no brackets around an IPv6 address)
    port: int
    target: str  # path and query, percent-encoded
    headers: Mapping[str, str]
    body: Body | None
    timeouts: Mapping[str, float | None]


Close = Callable[[], Awaitable[None] | None]
"""Ends a response: hands its connection back at once, returning what is left to
await (closing connections), if anything."""

ReceiveInto = Callable[[memoryview], Awaitable[int | None]]
"""Body bytes straight into a buffer: how many (0 at the end), or ``None`` when
the transport cannot right now (then the next piece is read the usual way)."""


class Response:
    """A response whose body is read piece by piece (``async for``) or into the
    caller's buffer (:meth:`read_into`; not both), then closed.

    ``headers`` maps lower-case names to values (repeated headers joined by
    ``", "``). Closing hands the connection back (kept alive only if the body
    was read to its end); what closing has to await is shielded, so a cancelled
    caller never leaks a connection, and parking a connection awaits nothing (a
    shielded scope per small GET cost ~5% of its client CPU).
    """

    __slots__ = ("_close", "_closed", "_left", "_next", "_receive_into", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        next_piece: Callable[[], Awaitable[bytes]],
        close: Close,
        receive_into: ReceiveInto | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self._next = next_piece
        self._close = close
        self._closed = False
        self._receive_into = receive_into
        self._left = memoryview(b"")  # of a piece read_into could not take whole

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        """The next non-empty piece of the body."""
        if self._closed:
            raise StopAsyncIteration
        piece = await self._next()
        if not piece:
            raise StopAsyncIteration
        return piece

    async def read_into(self, buffer: memoryview) -> int:
        """The next body bytes, up to ``len(buffer)`` (> 0), into ``buffer``: how many,
        0 once the body has ended. The bytes are received there when the transport
        can (a plain socket), else copied from the next piece."""
        if not self._left:
            if self._closed:
                return 0
            if self._receive_into is not None:
                count = await self._receive_into(buffer)
                if count is not None:
                    return count
            self._left = memoryview(await self._next())
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pending = self._close()
        if pending is not None:
            with trio.CancelScope(shield=True):
                await pending


class Transport(Protocol):
    """What the S3 client sends its requests through."""

    async def exchange(self, request: Exchange) -> Response:
        """Send ``request``; its response with the body unread."""
        ...

    async def aclose(self) -> None:
        """Close idle connections."""
        ...


class HttpxTransport:
    """An :class:`Exchange` through any httpx transport (tests, or a custom network)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def exchange(self, request: Exchange) -> Response:
        stream = SlicedBody(request.body) if request.body is not None else None
        sent = httpx.Request(
            request.method,
            request.url,
            headers=dict(request.headers),
            stream=stream,
            extensions={"timeout": dict(request.timeouts)},
        )
        response = await self._transport.handle_async_request(sent)
        response.request = sent
        assert isinstance(response.stream, httpx.AsyncByteStream)
        pieces = response.stream.__aiter__()

        async def next_piece() -> bytes:
            async for piece in pieces:
                if piece:
                    return piece
            return b""

        return Response(
            response.status_code, dict(response.headers.items()), next_piece, response.aclose
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
