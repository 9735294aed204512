"""An HTTP/1.1 keep-alive transport for many small requests to one endpoint (S3).

httpx's default transport hands requests to httpcore's connection pool, which on
every request added and every response closed walks all its connections: a
readability poll (a syscall) per connection, and a count of the idle ones per
idle connection, so O(connections²) Python calls per request. With 16 requests
in flight that was a quarter of the CPU a 4 KiB S3 GET cost. This transport
keeps idle connections on a stack per origin instead: a request pops the most
recently used one (checking only that one for expiry or a server-side close),
a closed response pushes its connection back if it is idle again and closes
the oldest idle ones that have expired (so a burst's connections do not linger). Each
connection is httpcore's own (connect, TLS, HTTP/1.1 framing, keep-alive
expiry), so only the bookkeeping differs.

Its socket writes are coalesced (:class:`_CoalescingStream`): httpcore writes a
request's head and then its body, two ``send`` calls, and on loopback a send
costs the sender the receiving side's TCP processing too (~0.15 ms). A small
write is held until the next write or read, so a small request goes out in one
``send``; nothing is held past the point where httpcore waits for the server.

``max_connections`` bounds the connections open at a time (in use or idle); a
request waits for a free one at most the ``pool`` timeout of its request
(``httpx.PoolTimeout`` then). httpcore's errors surface as httpx's, as from
httpx's own transport, both while sending and while the body is read.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
import trio

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
HOLD_WRITE = 16 * 1024  # a write up to this size waits to go out with the next
JOIN_WRITE = 256 * 1024  # a held write is joined (copied) to a next one up to this size

_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProxyError: httpx.ProxyError,
}


_Key = tuple[bytes, bytes, int]


def _key(origin: httpcore.Origin) -> _Key:
    return origin.scheme, origin.host, origin.port


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore's exceptions as the matching httpx ones (most specific first)."""
    try:
        yield
    except tuple(_ERRORS) as exc:
        mapped = next(m for core, m in _ERRORS.items() if isinstance(exc, core))
        raise mapped(str(exc)) from exc


class PooledTransport(httpx.AsyncBaseTransport):
    """See the module docstring. Use inside ``async with`` (or call :meth:`aclose`)."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._slots = trio.Semaphore(max_connections)
        self._idle: dict[_Key, list[httpcore.AsyncHTTPConnection]] = {}
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # loading the CA bundle costs: only for https
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def _connection(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        """The most recently used idle connection to ``origin`` still fit for a request,
        else a new one (it connects on its first request)."""
        stack = self._idle.get(_key(origin))
        while stack:
            connection = stack.pop()
            if connection.is_available() and not connection.has_expired():
                return connection
            await _close(connection)
        return httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self._ssl() if origin.scheme == b"https" else None,
            keepalive_expiry=self._keepalive_expiry,
            network_backend=_BACKEND,
        )

    async def _release(
        self, connection: httpcore.AsyncHTTPConnection, origin: httpcore.Origin
    ) -> None:
        """A request on ``connection`` ended: keep it for the next if it is idle again."""
        try:
            if connection.is_idle() and not connection.is_closed():
                stack = self._idle.setdefault(_key(origin), [])
                stack.append(connection)
                await _close_oldest_expired(stack)
            else:
                await _close(connection)
        finally:
            self._slots.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        pool_timeout = request.extensions.get("timeout", {}).get("pool")
        with trio.move_on_after(float("inf") if pool_timeout is None else pool_timeout) as wait:
            await self._slots.acquire()
        if wait.cancelled_caught:
            raise httpx.PoolTimeout("no free connection within the pool timeout")
        origin = core.url.origin
        try:
            connection = await self._connection(origin)
        except BaseException:
            self._slots.release()
            raise
        try:
            with _httpx_errors():
                response = await connection.handle_async_request(core)
        except BaseException:
            await self._release(connection, origin)
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, lambda: self._release(connection, origin)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every idle connection (those in use close as their responses do)."""
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for connection in stack:
                await _close(connection)


class _CoalescingStream(httpcore.AsyncNetworkStream):
    """A network stream whose small writes wait for the next write or read (see the
    module docstring); everything else is the wrapped stream's."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._held = b""

    async def _flush(self, timeout: float | None) -> None:  # noqa: ASYNC109 - httpcore's
        if self._held:
            held, self._held = self._held, b""
            await self._stream.write(held, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        if self._held and len(buffer) <= JOIN_WRITE:
            buffer, self._held = self._held + buffer, b""
        await self._flush(timeout)
        if len(buffer) <= HOLD_WRITE:
            self._held = bytes(buffer)
            return
        await self._stream.write(buffer, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush(timeout)
        return await self._stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._held = b""
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)
        return _CoalescingStream(
            await self._stream.start_tls(ssl_context, server_hostname, timeout)
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _CoalescingBackend(httpcore.AsyncNetworkBackend):
    """trio's network backend, its TCP streams wrapped in :class:`_CoalescingStream`."""

    def __init__(self) -> None:
        self._trio = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._trio.connect_tcp(host, port, timeout, local_address, socket_options)
        return _CoalescingStream(stream)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


_BACKEND = _CoalescingBackend()


class _Body(httpx.AsyncByteStream):
    """A response body from one pooled connection; closing it hands the connection back."""

    def __init__(self, stream: Any, release: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._release = release
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with trio.CancelScope(shield=True), _httpx_errors():
                await self._stream.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await self._release()


async def _close_oldest_expired(stack: list[httpcore.AsyncHTTPConnection]) -> None:
    """Close the least recently used idle connections of ``stack`` (its bottom) while
    they have expired or the server closed them, keeping the newest: after a burst,
    the connections it opened close as they expire even when later requests only ever
    reuse the top one. One check per release in the steady state."""
    while len(stack) > 1 and stack[0].has_expired():
        await _close(stack.pop(0))


async def _close(connection: httpcore.AsyncHTTPConnection) -> None:
    """Close a connection no request is using (shielded: it must not leak on cancel)."""
    # a socket failing to close is gone anyway
    with trio.CancelScope(shield=True), contextlib.suppress(OSError):
        await connection.aclose()
