"""httpx over TLS through :class:`~streamer._tlsstream.TlsStream`, for every client we run.

httpcore's trio backend negotiates TLS with :class:`trio.SSLStream`, which hands
back one TLS record (16 KiB at most) per read through its locks and retries: an
https download through httpx paid 6.2-7.3 s of CPU per GiB for it here, 3.05-3.27
through this module (``HttpClient.stream``, 512 MiB from ``rclone serve http``).

- :func:`lean_tls` wraps a plain connection from any httpcore backend so that its
  ``start_tls`` makes a TlsStream on the same socket instead: verified against
  httpcore's context (the host name included), records decrypted several at a
  time, and httpcore's own exceptions (``ConnectError``/``ConnectTimeout`` for the
  handshake, ``ReadError``/``ReadTimeout``/``WriteError``/``WriteTimeout``
  afterwards), as from its own streams. A stream without a socket (a test's fake)
  keeps its own ``start_tls``.
- :class:`LeanTlsBackend` is an httpcore backend whose connections are wrapped so.
- :func:`lean_transport` is httpx's transport over a pool on such a backend: what the
  imports (on the guarded backend), the node's archive push and the API client use.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
import trio

from ._tlsstream import TlsStream

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's


def lean_tls(stream: httpcore.AsyncNetworkStream) -> httpcore.AsyncNetworkStream:
    """``stream`` (a plain TCP connection), with TLS through :class:`TlsStream`."""
    return _Plain(stream)


class LeanTlsBackend(httpcore.AsyncNetworkBackend):
    """``inner``'s connections (default: httpcore's trio backend), TLS through TlsStream."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return lean_tls(
            await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return lean_tls(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def lean_transport(
    *,
    limits: httpx.Limits = DEFAULT_LIMITS,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncHTTPTransport:
    """httpx's HTTP/1.1 transport (CAs as httpx finds them: ``SSL_CERT_FILE``,
    ``SSL_CERT_DIR``, else certifi) over a pool on ``network_backend`` (default
    :class:`LeanTlsBackend`).

    httpx 0.28 has no parameter for the network backend (encode/httpx#3749 adds
    one), so the transport's pool is replaced by an equivalent one that has it.
    """
    made = httpx.AsyncHTTPTransport(limits=limits)
    made._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=network_backend or LeanTlsBackend(),
    )
    return made


@contextmanager
def _mapped(
    timeout: float | None, too_slow: type[Exception], broken: type[Exception]
) -> Iterator[None]:
    """Within ``timeout``; trio's failures as httpcore's (``too_slow``, ``broken``)."""
    try:
        with trio.fail_after(float("inf") if timeout is None else timeout):
            yield
    except trio.TooSlowError as exc:
        raise too_slow(str(exc) or "timed out") from exc
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise broken(str(exc.__cause__ or exc)) from exc


class _Plain(httpcore.AsyncNetworkStream):
    """A plain connection: everything is the wrapped stream's but ``start_tls``."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        sock = self._stream.get_extra_info("socket")
        if not isinstance(sock, trio.socket.SocketType):
            return await self._stream.start_tls(ssl_context, server_hostname, timeout)
        tls = TlsStream(sock, ssl_context, server_hostname=server_hostname or "")
        try:
            with _mapped(timeout, httpcore.ConnectTimeout, httpcore.ConnectError):
                await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)  # the socket is the TLS stream's now
            raise
        return _Tls(tls)


class _Tls(httpcore.AsyncNetworkStream):
    """A :class:`TlsStream` as httpcore's network stream."""

    def __init__(self, tls: TlsStream) -> None:
        self._tls = tls

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        with _mapped(timeout, httpcore.ReadTimeout, httpcore.ReadError):
            return await self._tls.receive_some(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if buffer:
            with _mapped(timeout, httpcore.WriteTimeout, httpcore.WriteError):
                await self._tls.send_all(buffer)

    async def aclose(self) -> None:
        await self._tls.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS inside TLS (an https proxy) is not supported here")

    def get_extra_info(self, info: str) -> Any:
        sock = self._tls.socket
        if info == "ssl_object":
            return self._tls.ssl_object
        if info == "socket":
            return sock
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "is_readable":
            return self._tls.is_readable()
        return None
