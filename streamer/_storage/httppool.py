"""An HTTP/1.1 keep-alive transport for many small requests to one endpoint (S3).

It serves httpx's transport interface (an ``httpx.Request`` in, an
``httpx.Response`` out) over :mod:`.http11` connections instead of httpcore's:
for a 4 KiB S3 request, httpcore's pool, connection and h11 layers cost about
half of streamer's CPU, which this transport's few calls per request save.

Idle connections wait on a stack per origin: a request pops the most recently
used one (checking only that one for expiry or a server-side close), and a
closed response pushes its connection back if it was read to its end and both
sides keep alive, then closes the oldest idle ones that have expired (so a
burst's connections do not linger).

``max_connections`` bounds the connections open at a time (in use or idle); a
request waits for a free one at most the ``pool`` timeout of its request
(``httpx.PoolTimeout`` then); ``connect``, ``read`` and ``write`` timeouts apply
to the connect (and TLS handshake), each receive and each send. Failures
surface as httpx's exceptions, as from httpx's own transport, both while
sending and while the body is read.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import httpx
import trio

from . import http11

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)

_Key = tuple[bytes, str, int]


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise :mod:`.http11`'s failures as the matching httpx exceptions."""
    try:
        yield
    except http11.Timeout as exc:
        timeout = httpx.ReadTimeout if exc.phase == "read" else httpx.WriteTimeout
        raise timeout(str(exc)) from exc
    except http11.Disconnected as exc:
        error = httpx.ReadError if exc.phase == "read" else httpx.WriteError
        raise error(str(exc)) from exc
    except http11.ProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except http11.RequestError as exc:
        raise httpx.LocalProtocolError(str(exc)) from exc


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
        self._idle: dict[_Key, list[http11.Connection]] = {}
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # loading the CA bundle costs: only for https
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def _connection(self, key: _Key, within: float | None) -> http11.Connection:
        """The most recently used idle connection to ``key``'s origin still fit for a
        request, else a new one connected ``within`` seconds."""
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            if not connection.expired():
                return connection
            await connection.aclose()
        with trio.move_on_after(http11.forever(within)):
            return await self._connect(*key)
        raise httpx.ConnectTimeout(f"connect to {key[1]}:{key[2]} timed out")

    async def _connect(self, scheme: bytes, host: str, port: int) -> http11.Connection:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise httpx.ConnectError(f"connect to {host}:{port}: {exc}") from exc
        if scheme == b"https":
            tls = trio.SSLStream(stream, self._ssl(), server_hostname=host, https_compatible=True)
            try:
                await tls.do_handshake()
            except BaseException as exc:
                await trio.aclose_forcefully(stream)
                if isinstance(exc, trio.BrokenResourceError | OSError):
                    raise httpx.ConnectError(f"TLS with {host}:{port}: {exc}") from exc
                raise
            stream = tls
        return http11.Connection(stream, keepalive_expiry=self._keepalive_expiry)

    async def _release(self, connection: http11.Connection, key: _Key) -> None:
        """A request on ``connection`` ended: keep it for the next if it is reusable."""
        try:
            if connection.reusable:
                connection.release()
                stack = self._idle.setdefault(key, [])
                stack.append(connection)
                await _close_oldest_expired(stack)
            else:
                await connection.aclose()
        finally:
            self._slots.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        key = (url.raw_scheme, url.host, url.port or (443 if url.raw_scheme == b"https" else 80))
        content_length = _content_length(request.headers)
        with trio.move_on_after(http11.forever(timeouts.get("pool"))) as wait:
            await self._slots.acquire()
        if wait.cancelled_caught:
            raise httpx.PoolTimeout("no free connection within the pool timeout")
        try:
            connection = await self._connection(key, timeouts.get("connect"))
        except BaseException:
            self._slots.release()
            raise
        try:
            with _httpx_errors():
                head = await connection.request(
                    request.method.encode("ascii"),
                    url.raw_path,
                    request.headers.raw,
                    request.stream,
                    content_length,
                    read_timeout=timeouts.get("read"),
                    write_timeout=timeouts.get("write"),
                )
        except BaseException:
            await self._release(connection, key)  # closes it: its exchange did not finish
            raise
        return httpx.Response(
            status_code=head.status,
            headers=head.headers,
            stream=_Body(connection, lambda: self._release(connection, key)),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        """Close every idle connection (those in use close as their responses do)."""
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for connection in stack:
                await connection.aclose()


def _content_length(headers: httpx.Headers) -> int:
    """The request body's length; a body of unknown length is refused (S3 needs one)."""
    if "transfer-encoding" in headers:
        raise httpx.LocalProtocolError("chunked request bodies are not supported")
    value = headers.get("content-length", "0")
    if not value.isdigit():
        raise httpx.LocalProtocolError(f"bad Content-Length {value!r}")
    return int(value)


class _Body(httpx.AsyncByteStream):
    """A response body from one pooled connection; closing it hands the connection back
    (kept if the body was read to its end, else closed)."""

    def __init__(self, connection: http11.Connection, release: Callable[[], Awaitable[None]]):
        self._connection = connection
        self._release = release
        self._closed = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        with _httpx_errors():
            piece = await self._connection.next_piece()
        if not piece:
            raise StopAsyncIteration
        return piece

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._release()


async def _close_oldest_expired(stack: list[http11.Connection]) -> None:
    """Close the least recently used idle connections of ``stack`` (its bottom) while
    they have expired or the server closed them, keeping the newest: after a burst,
    the connections it opened close as they expire even when later requests only ever
    reuse the top one. One check per release in the steady state."""
    while len(stack) > 1 and stack[0].expired():
        await stack.pop(0).aclose()
