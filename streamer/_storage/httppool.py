"""An HTTP/1.1 keep-alive transport for many small requests to one endpoint (S3).

It takes an :class:`~.httpexchange.Exchange` and returns a
:class:`~.httpexchange.Response` over :mod:`.http11` connections, without
httpx's or httpcore's models in between: for a 4 KiB S3 request those layers
cost about half of streamer's CPU.

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

import ipaddress
import socket
import ssl
from collections.abc import Awaitable
from functools import partial
from types import TracebackType
from typing import Self

import httpx
import trio

from .._errors import Translated
from .._tlsstream import TlsStream
from . import http11
from .httpexchange import Exchange, Response
from .s3body import SlicedBody

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)

_Key = tuple[str, str, int]  # scheme, host, port


def _httpx_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception for one of :mod:`.http11`'s failures."""
    if isinstance(exc, http11.Timeout):
        return (httpx.ReadTimeout if exc.phase == "read" else httpx.WriteTimeout)(str(exc))
    if isinstance(exc, http11.Disconnected):
        return (httpx.ReadError if exc.phase == "read" else httpx.WriteError)(str(exc))
    if isinstance(exc, http11.RequestError):
        return httpx.LocalProtocolError(str(exc))
    return httpx.RemoteProtocolError(str(exc))


#: ``with _AS_HTTPX_ERRORS:`` raises :mod:`.http11`'s failures as httpx's.
_AS_HTTPX_ERRORS = Translated(http11.WireError, _httpx_error)


def _header_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names (lower-case) to values, repeated ones joined by ``", "`` (as httpx)."""
    found: dict[str, str] = {}
    for name, raw in headers:
        key = name.decode("ascii")
        try:
            value = raw.decode("ascii")
        except UnicodeDecodeError:
            value = raw.decode("utf-8", errors="replace")
        found[key] = f"{found[key]}, {value}" if key in found else value
    return found


class PooledTransport:
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

    async def _connect(self, scheme: str, host: str, port: int) -> http11.Connection:
        try:
            tcp = await _open_tcp(host, port)
        except OSError as exc:
            raise httpx.ConnectError(f"connect to {host}:{port}: {exc}") from exc
        stream: trio.abc.Stream = tcp
        if scheme == "https":
            tls = TlsStream(tcp.socket, self._ssl(), server_hostname=host)
            try:
                await tls.do_handshake()
            except BaseException as exc:
                await trio.aclose_forcefully(tls)
                if isinstance(exc, trio.BrokenResourceError | OSError):
                    # trio's error says nothing; the ssl error it wraps says why
                    reason = exc.__cause__ or exc
                    raise httpx.ConnectError(f"TLS with {host}:{port}: {reason}") from exc
                raise
            stream = tls
        return http11.Connection(stream, keepalive_expiry=self._keepalive_expiry)

    def _release(self, connection: http11.Connection, key: _Key) -> Awaitable[None] | None:
        """A request on ``connection`` ended: park it for the next if it is reusable,
        else close it; what is left to await (closing connections), if anything."""
        if not connection.reusable:
            return self._close_then_free(connection)
        connection.release()
        stack = self._idle.setdefault(key, [])
        stack.append(connection)
        self._slots.release()
        expired = _oldest_expired(stack)
        return _close_all(expired) if expired else None

    async def _close_then_free(self, connection: http11.Connection) -> None:
        try:
            await connection.aclose()
        finally:
            self._slots.release()

    async def exchange(self, request: Exchange) -> Response:
        """Send ``request`` on a pooled connection; the response's body is unread."""
        key = (request.scheme, request.host, request.port)
        timeouts = request.timeouts
        body = request.body
        try:
            self._slots.acquire_nowait()  # the common case: no timeout scope to set up
        except trio.WouldBlock:
            with trio.move_on_after(http11.forever(timeouts.get("pool"))) as wait:
                await self._slots.acquire()
            if wait.cancelled_caught:
                raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        try:
            connection = await self._connection(key, timeouts.get("connect"))
        except BaseException:
            self._slots.release()
            raise
        try:
            head = await connection.request(
                request.method.encode("ascii"),
                request.target.encode("ascii"),
                [(name.encode("ascii"), value.encode()) for name, value in request.headers.items()],
                None if body is None else SlicedBody(body),
                0 if body is None else len(body),
                read_timeout=timeouts.get("read"),
                write_timeout=timeouts.get("write"),
            )
        except BaseException as exc:
            await self._close_then_free(connection)  # its exchange did not finish
            if isinstance(exc, http11.WireError):
                raise _httpx_error(exc) from exc
            raise

        async def next_piece() -> bytes:
            with _AS_HTTPX_ERRORS:
                return await connection.next_piece()

        async def receive_into(buffer: memoryview) -> int | None:
            with _AS_HTTPX_ERRORS:
                return await connection.receive_into(buffer)

        return Response(
            head.status,
            _header_dict(head.headers),
            next_piece,
            partial(self._release, connection, key),
            receive_into,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection (those in use close as their responses do)."""
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for connection in stack:
                await connection.aclose()


async def _open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP stream to ``host``:``port``. An IP address is connected to directly: trio's
    ``open_tcp_stream`` resolves and races addresses in a nursery, ~200 µs more CPU a
    connection, paid per request with a server that closes each one (moto answers
    ``Connection: close``) and 64 times over as a pool fills. A name goes through it."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)  # sets TCP_NODELAY, as open_tcp_stream's do


def _oldest_expired(stack: list[http11.Connection]) -> list[http11.Connection]:
    """The least recently used idle connections of ``stack`` (its bottom) idle past
    their expiry, taken off it, the newest always kept: after a burst, the connections
    it opened close as they expire even when later requests only ever reuse the top one.
    One clock read per release in the steady state; whether the server closed one is
    asked (a ``poll``) only when it is taken for a request."""
    expired = []
    while len(stack) > 1 and stack[0].idle_expired():
        expired.append(stack.pop(0))
    return expired


async def _close_all(connections: list[http11.Connection]) -> None:
    for connection in connections:
        await connection.aclose()
