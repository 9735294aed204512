"""httpcore network streams whose TLS is :class:`~.tlsstream.TlsStream`, for imports.

httpcore's trio backend negotiates TLS with :class:`trio.SSLStream`, which hands
back one TLS record (16 KiB at most) per read through its locks and retries: an
https import (the Hugging Face Hub, its CDN, most URLs) paid several seconds of
CPU per GiB for it. :func:`lean_tls` wraps a plain connection from any httpcore
backend so that its ``start_tls`` makes a :class:`~.tlsstream.TlsStream` on the
same socket instead: verified against httpcore's context (the host name
included), records decrypted several at a time, and httpcore's own exceptions
(``ConnectError``/``ConnectTimeout`` for the handshake, ``ReadError``/
``ReadTimeout``/``WriteError``/``WriteTimeout`` afterwards), as from its own
streams. A stream without a socket (a test's fake) keeps its own ``start_tls``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import trio

from .tlsstream import TlsStream


def lean_tls(stream: httpcore.AsyncNetworkStream) -> httpcore.AsyncNetworkStream:
    """``stream`` (a plain TCP connection), with TLS through :class:`TlsStream`."""
    return _Plain(stream)


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
