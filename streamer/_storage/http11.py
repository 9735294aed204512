"""One HTTP/1.1 client connection on a trio stream: the S3 transport's wire.

httpx's own stack (httpx → httpcore → h11) spends about half of the CPU a 4 KiB
S3 request costs on its layers: trace hooks, locks and state machines per
request, and h11's validation per event. S3 uses a small corner of HTTP/1.1:
requests that streamer builds itself (method, target, headers, a body of known
length) and responses framed by Content-Length or chunked encoding. This
module speaks exactly that, strictly, in a few calls per request:

- A request's head goes out in one ``send`` together with its body when that is
  small (a lone small ``send`` on loopback costs the sender the receiver's TCP
  processing too); larger bodies follow piece by piece.
- A response head is read whole (at most :data:`MAX_HEAD_BYTES`) and parsed
  strictly (RFC 9112; parsing and framing are :mod:`.http11wire`'s): a status
  line ``HTTP/1.x NNN``, ``name: value`` lines with token names and no control
  characters, no obsolete line folding; ``1xx`` interim responses are skipped. Anything else is a
  :class:`ProtocolError`, never a guess.
- Body framing follows RFC 9112 §6.3: none for HEAD, 1xx, 204 and 304;
  ``Transfer-Encoding: chunked`` (chunk extensions and trailers are read and
  dropped); ``Content-Length`` (repeated values must agree); else until the
  server closes. A body read to its end leaves the connection reusable when
  both sides allow keep-alive; anything else (a half-read body, extra bytes,
  read-until-close) closes it.
- If sending fails because the server answered early and closed (an error
  before a big body was taken), the response it sent is still returned.
- On a plain socket, a send is first tried as one non-blocking ``write``, and
  only what the kernel did not take goes through trio's ``send_all`` under the
  write timeout; the answer's first bytes are awaited (``wait_readable``) before
  they are read, instead of a ``recv`` that finds nothing yet. A small GET then
  costs one cancel scope instead of two and one system call less
  (``benchmarks.s3_layers``: 102-109 -> 84-90 µs of client CPU per pooled GET).

Errors are all :class:`WireError`: :class:`ProtocolError` (the server broke HTTP/1.1),
:class:`RequestError` (the request cannot be framed), :class:`Disconnected`
(the stream failed: reset, broken pipe, TLS) and :class:`Timeout`; callers map
them (:mod:`.httppool`). Timeouts are the caller's: :class:`Connection` takes a
read and a write timeout per request, applied to each receive and each send.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import TypeVar, cast

import trio

from .._tlsstream import TlsStream
from .http11wire import Head, body_framing, parse_head, request_head
from .http11wire import ProtocolError as ProtocolError  # re-exported: raised from here too
from .http11wire import RequestError as RequestError
from .http11wire import WireError as WireError

MAX_HEAD_BYTES = 64 * 1024  # a response head (status line and headers) longer is refused
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) longer is refused
READ_BYTES = 1 << 20  # most bytes asked of the socket per receive (see _netio)
JOIN_BODY = 256 * 1024  # a body up to this size goes out in the head's send

T = TypeVar("T")


class Timeout(WireError):
    """A receive or a send took longer than its timeout; ``phase`` is ``read`` or ``write``."""

    def __init__(self, phase: str) -> None:
        super().__init__(f"{phase} timed out")
        self.phase = phase


class Disconnected(WireError):
    """The stream failed (reset, broken pipe, TLS error) in ``phase`` (``read``/``write``)."""

    def __init__(self, phase: str, cause: BaseException) -> None:
        super().__init__(f"{phase} failed: {type(cause).__name__}: {cause}")
        self.phase = phase


class Connection:
    """One HTTP/1.1 connection: one request at a time, kept alive between them.

    Use :meth:`request` to send a request and read its response head, then call
    :meth:`next_piece` until it returns ``b""`` (or :meth:`receive_into` until it
    returns 0, falling back to :meth:`next_piece` whenever it returns ``None``):
    the connection is then :attr:`reusable` (the owner calls :meth:`release` when
    it parks it) unless either side ended keep-alive; a half-read connection must
    be closed.
    """

    def __init__(self, stream: trio.abc.Stream, *, keepalive_expiry: float) -> None:
        self._stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._tls = stream if isinstance(stream, TlsStream) else None
        self._keepalive_expiry = keepalive_expiry
        self._buffer = bytearray()
        self._framing = ("length", 0)
        self._remaining = 0  # body bytes (or bytes of the current chunk) still to come
        self._body_done = True
        self._keep_alive = True
        self._closed = False
        self._idle_since = time.monotonic()
        self._read_timeout: float | None = None
        self._write_timeout: float | None = None

    # -- state ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def reusable(self) -> bool:
        """Whether the last response was read to its end and both sides keep alive."""
        return not self._closed and self._body_done and self._keep_alive

    def idle_expired(self) -> bool:
        """Closed, or idle past the keep-alive expiry (a clock read, no system call)."""
        return self._closed or time.monotonic() - self._idle_since > self._keepalive_expiry

    def expired(self) -> bool:
        """:meth:`idle_expired`, or closed by the server meanwhile (it sent EOF or bytes
        nobody asked for: either way unusable), which costs a ``poll``."""
        return self.idle_expired() or _readable(self._stream)

    async def aclose(self) -> None:
        """Close the stream (shielded: a connection must not leak on cancel)."""
        if self._closed:
            return
        self._closed = True
        # shielded; a socket failing to close is gone anyway
        with trio.CancelScope(shield=True), suppress(trio.BrokenResourceError, OSError):
            await self._stream.aclose()

    def release(self) -> None:
        """The caller is done with the response: mark the connection idle from now."""
        self._idle_since = time.monotonic()

    # -- one exchange -----------------------------------------------------------

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes | memoryview] | None,
        content_length: int,
        *,
        read_timeout: float | None,
        write_timeout: float | None,
    ) -> Head:
        """Send a request (``content_length`` body bytes from ``body``) and return its
        response's head; the body is then read through :meth:`next_piece`."""
        if not self.reusable:
            raise RuntimeError("request on a connection that is busy or closed")
        head = request_head(method, target, headers)  # a bad one leaves the connection as is
        self._read_timeout, self._write_timeout = read_timeout, write_timeout
        self._body_done = False
        try:
            await self._send_request(head, body, content_length)
        except Disconnected as failed:
            # The server may have answered and closed before taking the whole body (an
            # error for a big part): that answer is the one to report, if it came.
            self._keep_alive = False
            try:
                return await self._read_head(method)
            except (ProtocolError, Timeout, Disconnected):
                raise failed from None
        return await self._read_head(method)

    async def _send_request(
        self, head: bytearray, body: AsyncIterable[bytes | memoryview] | None, length: int
    ) -> None:
        """Send ``head`` and the body; pieces that fit within :data:`JOIN_BODY` of the
        head go out in its ``send``."""
        pending: bytearray | None = head
        limit = len(head) + JOIN_BODY
        sent = 0
        if body is not None:
            async for piece in body:
                sent += len(piece)
                if sent > length:
                    break
                if pending is not None and len(pending) + len(piece) <= limit:
                    pending += piece
                    continue
                if pending is not None:
                    await self._send(pending)
                    pending = None
                await self._send(piece)
        if sent != length:
            self._keep_alive = False
            raise RequestError(f"body of {sent}+ bytes for a Content-Length of {length}")
        if pending is not None:
            await self._send(pending)

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` whole (see the module docstring: a plain socket is written
        first without waiting; a send is a checkpoint only when it has to wait, and
        the response read that follows it always is one)."""
        if self._socket is not None:
            try:
                sent = os.write(self._socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._keep_alive = False
                raise Disconnected("write", exc) from exc
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        with trio.move_on_after(forever(self._write_timeout)) as scope:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, OSError) as exc:
                self._keep_alive = False
                raise Disconnected("write", exc) from exc
        if scope.cancelled_caught:
            self._keep_alive = False
            raise Timeout("write")

    async def _receive(self) -> bytes:
        # trio's streams return bytes (the bytearray in their type is for others)
        return cast(bytes, await self._reading(partial(self._stream.receive_some, READ_BYTES)))

    async def _receive_answer(self) -> bytes:
        """The first bytes of a response, just after its request was sent: on a plain
        socket, waited for before they are read (they cannot have come yet)."""
        if self._socket is None:
            return await self._receive()
        return await self._reading(self._wait_then_read)

    async def _wait_then_read(self) -> bytes:
        assert self._socket is not None
        while True:
            await trio.lowlevel.wait_readable(self._socket)
            try:
                return os.read(self._socket.fileno(), READ_BYTES)
            except BlockingIOError:
                continue

    async def _reading(self, receive: Callable[[], Awaitable[T]]) -> T:
        """``receive()`` under the read timeout, its failures as :class:`WireError`."""
        with trio.move_on_after(forever(self._read_timeout)):
            try:
                return await receive()
            except (trio.BrokenResourceError, OSError) as exc:
                self._keep_alive = False
                raise Disconnected("read", exc) from exc
        self._keep_alive = False
        raise Timeout("read")

    async def _read_head(self, method: bytes) -> Head:
        while True:
            head = parse_head(await self._read_head_bytes())
            if head.status >= 200 or head.status == 101:
                break  # 1xx interim responses (100 Continue) come before the real one
        if head.status == 101:
            raise ProtocolError("unexpected 101 Switching Protocols")
        self._keep_alive = self._keep_alive and head.keep_alive
        self._framing = body_framing(head, method)
        kind, length = self._framing
        if kind == "close":
            self._keep_alive = False
        self._remaining = length
        self._body_done = kind == "length" and length == 0
        if self._body_done and self._buffer:
            self._keep_alive = False  # bytes nobody asked for
        return head

    async def _read_head_bytes(self) -> bytes:
        searched = 0
        while (end := self._buffer.find(b"\r\n\r\n", searched)) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
            first = not self._buffer
            searched = max(0, len(self._buffer) - 3)
            data = await (self._receive_answer() if first else self._receive())
            if not data:
                self._keep_alive = False
                if self._buffer:
                    raise ProtocolError("connection closed inside a response head")
                raise ProtocolError("server disconnected without sending a response")
            self._buffer += data
        if end > MAX_HEAD_BYTES:
            raise ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        return head

    # -- the body ---------------------------------------------------------------

    async def next_piece(self) -> bytes:
        """The next piece of the response body; ``b""`` once it has ended."""
        if self._body_done:
            return b""
        kind = self._framing[0]
        if kind == "length":
            return await self._length_piece()
        if kind == "chunked":
            return await self._chunked_piece()
        data = self._take_buffer() or await self._receive()
        if not data:
            self._body_done = True
        return data

    async def receive_into(self, buffer: memoryview) -> int | None:
        """Up to ``len(buffer)`` bytes of the body received straight into ``buffer``
        (0 once it has ended), or ``None`` when they cannot be: the body is chunked or
        read to the close, some of it is already buffered, or the stream is neither a
        plain socket nor a :class:`.TlsStream` (which decrypts into ``buffer``). Read
        those bytes with :meth:`next_piece`, then try again.

        Receiving in place makes no object per read. A fresh 1 MiB ``bytes`` per
        receive (what :meth:`next_piece` makes) is fresh memory to the allocator:
        a 1 GiB download through it spent ~40% more time in the kernel, on page
        faults, than one receiving into a reused buffer."""
        if self._body_done:
            return 0
        if self._framing[0] != "length" or self._buffer:
            return None
        receive: Callable[[], Awaitable[int]]
        if self._socket is not None:
            receive = partial(self._socket.recv_into, buffer[: self._remaining])
        elif self._tls is not None:
            receive = partial(self._tls.receive_into, buffer[: self._remaining])
        else:
            return None
        count = await self._reading(receive)
        if not count:
            raise self._closed_early(f"with {self._remaining} body bytes to come")
        self._remaining -= count
        self._body_done = self._remaining == 0
        return count

    def _take_buffer(self, limit: int | None = None) -> bytes:
        if not self._buffer:
            return b""
        if limit is None or limit >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return data

    async def _length_piece(self) -> bytes:
        data = self._take_buffer(self._remaining) or await self._receive_more(
            f"with {self._remaining} body bytes to come"
        )
        if len(data) > self._remaining:  # more than the body: bytes nobody asked for
            self._keep_alive = False
            data = data[: self._remaining]
        self._remaining -= len(data)
        if self._remaining == 0:
            self._body_done = True
            if self._buffer:
                self._keep_alive = False
        return data

    async def _chunked_piece(self) -> bytes:
        if self._remaining == 0:
            size = await self._chunk_size()
            if size == 0:
                while await self._read_line():  # trailers, dropped, up to the blank line
                    pass
                self._body_done = True
                if self._buffer:
                    self._keep_alive = False
                return b""
            self._remaining = size
        data = self._take_buffer(self._remaining) or await self._receive_more("inside a chunk")
        if len(data) > self._remaining:  # the rest is framing and later chunks
            self._buffer += data[self._remaining :]
            data = data[: self._remaining]
        self._remaining -= len(data)
        if self._remaining == 0 and await self._read_exact(2) != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        return data

    async def _chunk_size(self) -> int:
        line = await self._read_line()
        text = line.partition(b";")[0].strip(b" \t")  # chunk extensions are dropped
        if not text or len(text) > 16 or text.strip(b"0123456789abcdefABCDEF"):
            raise ProtocolError(f"bad chunk size line {line[:100]!r}")
        return int(text, 16)

    async def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_CHUNK_LINE:
                raise ProtocolError("chunk line too long")
            await self._fill("inside chunked framing")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            await self._fill("inside chunked framing")
        return self._take_buffer(count)

    async def _fill(self, where: str) -> None:
        self._buffer += await self._receive_more(where)

    async def _receive_more(self, where: str) -> bytes:
        """The next bytes from the socket; :class:`ProtocolError` if it closed ``where``
        more were owed."""
        data = await self._receive()
        if not data:
            raise self._closed_early(where)
        return data

    def _closed_early(self, where: str) -> ProtocolError:
        self._keep_alive = False
        return ProtocolError(f"connection closed {where}")


def forever(timeout: float | None) -> float:
    """``timeout`` for trio (``None``: no limit)."""
    return float("inf") if timeout is None else timeout


def _readable(stream: trio.abc.Stream) -> bool:
    """Whether ``stream`` has something to read (EOF counts) that nobody asked for."""
    if isinstance(stream, TlsStream):
        return stream.is_readable()
    sock = getattr(stream, "socket", None)
    return sock is not None and bool(sock.is_readable())
