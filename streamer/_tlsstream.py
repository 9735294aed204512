"""A TLS stream on a trio socket that decrypts into the caller's buffer.

:class:`trio.SSLStream` is general (renegotiation, any number of tasks) and pays for
it on every read: it hands back one TLS record (at most
16 KiB) per ``receive_some``, each through its locks and retry machinery, as a
fresh ``bytes``. A 1 GiB S3 download over TLS spent ~5 s of CPU that way, most of
it Python around OpenSSL rather than OpenSSL itself. Through this stream a 512 MiB
GET from ``rclone serve s3`` takes 2.1-2.25 s of client CPU per GiB instead of
3.9-4.4, and ``benchmarks.s3 --server rclone-tls`` downloads 1 GiB at 377 MB/s
instead of 231.

:class:`TlsStream` serves every TLS connection streamer makes (S3's
:class:`.http11.Connection`, httpx through :mod:`streamer._httpcoretls`) or takes
(Hypercorn, through :mod:`streamer._hypercorntls`):

- ciphertext is read from the socket up to :data:`FEED_BYTES` at a time (into one
  scratch buffer per thread: nothing awaits between reading it and handing it to
  OpenSSL's memory BIO) and :meth:`receive_into` decrypts record after record
  straight into the caller's buffer until it is full or no whole record is left;
- a send encrypts into the outgoing memory BIO and writes it with a non-blocking
  ``write`` first, waiting only for what the kernel does not take (a small request
  costs no scheduling, as on a plain socket);
- a client's handshake verifies the server against the context (hostname
  included); a failure is :class:`trio.BrokenResourceError` whose ``__cause__`` is the ssl
  error that says why;
- the end of the stream is ``b""`` / ``0`` whether the peer sent close_notify or
  just closed (``https_compatible`` in trio's terms: HTTP's own framing tells a
  truncated body from a whole one);
- :meth:`aclose` sends close_notify without waiting for the peer's.

Contract: one task receives and one task sends at a time, and the two may overlap
(Hypercorn reads the next bytes while the app answers): each of reading the
socket and writing it is one task's turn at a time, and an alert or close_notify
never cuts into a send that is part-way. Like :class:`.http11.Connection`'s plain-socket path,
and unlike trio's own streams, an operation is a checkpoint only when it waits or
reads the socket: a send the kernel takes whole, or a receive of records already
in, returns at once (a receive checkpoints at least every :data:`FEED_BYTES` of
ciphertext; the socket is read first and waited on only when it has nothing, as
trio's sockets do, saving an epoll round trip per feed mid-body). Transport failures
and TLS errors are :class:`trio.BrokenResourceError` (a tampered record after good
ones too: only a ragged EOF is the end); after one, or after a send that was
cancelled part-way, the stream stays broken.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import TypeVar, cast

import trio

FEED_BYTES = 256 * 1024  # most ciphertext read from the socket at once
SEND_PIECE = 256 * 1024  # most plaintext encrypted before it is written out
RECEIVE_BYTES = 64 * 1024  # receive_some's size when the caller names none

T = TypeVar("T")

_scratch = threading.local()


def _feed_buffer() -> memoryview:
    """This thread's buffer for ciphertext on its way from a socket to a memory BIO."""
    buffer: memoryview | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = memoryview(bytearray(FEED_BYTES))
    return buffer


class _Turn:
    """One task at a time in a section (reading the socket, or writing it); another
    that needs it waits for the turn to end. No object is made unless one waits."""

    __slots__ = ("_ended", "busy")

    def __init__(self) -> None:
        self.busy = False
        self._ended: trio.Event | None = None

    async def wait(self) -> None:
        """Until no task holds the turn."""
        while self.busy:
            if self._ended is None:
                self._ended = trio.Event()
            await self._ended.wait()

    def take(self) -> None:
        self.busy = True

    def give_back(self) -> None:
        self.busy = False
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.set()


class TlsStream(trio.abc.Stream):
    """TLS over a connected trio socket (see the module docstring): a client verifying
    ``server_hostname``, or with ``server_side`` a server (for Hypercorn)."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        server_side: bool = False,
    ) -> None:
        self._socket = sock
        self._fd = sock.fileno()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._broken: BaseException | None = None
        self._ended = False  # the peer ended the stream: every later receive is the end
        self._closed = False
        self._reading = _Turn()  # the socket is read by one task at a time, as written
        self._writing = _Turn()

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._socket

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The session (peer certificate, ALPN protocol, cipher): for inspection only."""
        return self._tls

    @property
    def transport_stream(self) -> _Transport:
        """What carries the TLS (its ``socket``), as trio's ``SSLStream`` has it."""
        return _Transport(self._socket)

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    def is_readable(self) -> bool:
        """Whether anything (bytes or EOF) has come that nobody asked for yet."""
        return bool(self._tls.pending() or self._incoming.pending or self._socket.is_readable())

    async def do_handshake(self) -> None:
        """Negotiate TLS (a client verifies the server); :class:`trio.BrokenResourceError`
        if it fails."""
        await self._run(self._tls.do_handshake)

    # -- receiving ----------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` of plaintext: a record's (waiting for it if need be), then
        those of the whole records already received while they fit; ``b""`` at the end."""
        size = RECEIVE_BYTES if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        first = await self._receive(lambda: self._tls.read(size), b"")
        pieces, count = [first], len(first)
        while (
            count and count < size and (piece := self._more(partial(self._tls.read, size - count)))
        ):
            pieces.append(piece)
            count += len(piece)
        return first if len(pieces) == 1 else b"".join(pieces)

    async def receive_into(self, buffer: memoryview) -> int:
        """Decrypt into ``buffer``: at least one byte (waiting for it if need be), then
        every whole record already received that fits; ``0`` at the end of the stream."""
        if not buffer:
            raise ValueError("an empty buffer")
        count = await self._receive(partial(self._decrypt_into, buffer), 0)
        return count + self._decrypt_more(buffer, count) if count else 0

    def _decrypt_more(self, buffer: memoryview, start: int) -> int:
        """Decrypt the whole records already received into ``buffer[start:]``, without
        waiting, in one tight loop (a record is 16 KiB: 65,536 of them a GiB); how
        many bytes. A failure is kept for the next receive, as :meth:`_more` does."""
        # typeshed has read() return bytes; given a buffer, it returns the count
        read = cast(Callable[[int, memoryview], int], self._tls.read)
        size, count = len(buffer), start
        try:
            while count < size and (got := read(size - count, buffer[count:])):
                count += got
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self._fail(exc)
        return count - start

    def _more(self, read: Callable[[], T]) -> T | None:
        """``read()`` from the records already received, without waiting; ``None`` when
        no whole one is left, or when it failed (the next receive raises the error, or
        ends the stream for a ragged EOF)."""
        if not (self._incoming.pending or self._tls.pending()):
            return None
        try:
            return read()
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLError as exc:
            self._fail(exc)
            return None

    def _decrypt_into(self, buffer: memoryview) -> int:
        # typeshed has read() return bytes; given a buffer, it returns the count
        return cast(int, self._tls.read(len(buffer), cast(bytearray, buffer)))

    async def _receive(self, read: Callable[[], T], end: T) -> T:
        if self._ended and not self._closed:
            await trio.lowlevel.checkpoint()
            return end
        try:
            return await self._run(read)
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLZeroReturnError | ssl.SSLEOFError) and (
                self._broken is cause  # not a break from before (a send cut short) ...
            ):
                self._broken, self._ended = None, True  # ... but the end, clean or ragged
                return end
            raise

    # -- sending ------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data`` whole; waits only when the socket's buffer is full."""
        view = memoryview(data).cast("B")
        try:
            for start in range(0, len(view), SEND_PIECE):
                await self._run(partial(self._tls.write, view[start : start + SEND_PIECE]))
        except BaseException as exc:  # cut short (even waiting to read): nothing may follow
            self._break(exc)
            raise
        if not view:
            self._check_usable()
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        self._check_usable()
        await self._writing.wait()
        self._check_usable()
        await trio.lowlevel.wait_writable(self._socket)

    # -- closing ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify if the session is sound (never waiting), then close the socket."""
        if not self._closed:
            self._closed = True
            try:
                if self._broken is None and not self._writing.busy:
                    self._say_goodbye()
            finally:
                self._socket.close()
        await trio.lowlevel.checkpoint()

    def _say_goodbye(self) -> None:
        with suppress(ssl.SSLError):  # the server's close_notify is not awaited (WantRead)
            self._tls.unwrap()
        self._write_what_fits()

    def _write_what_fits(self) -> None:
        """Best effort, never waiting: what the kernel takes now of OpenSSL's output
        (a close_notify, an alert)."""
        if self._writing.busy:  # a send is part-way: nothing may cut into its bytes
            return
        data = self._outgoing.read()
        if data:
            with suppress(OSError):
                os.write(self._fd, data)

    # -- the engine ---------------------------------------------------------------

    async def _run(self, operation: Callable[[], T]) -> T:
        """Run an SSLObject operation to completion: whatever it needs to send goes out,
        whatever it needs to receive is read, until it returns or fails."""
        self._check_usable()
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._feed()
                continue
            except ssl.SSLError as exc:
                self._fail(exc)
                raise trio.BrokenResourceError(str(exc)) from exc
            if self._outgoing.pending:
                await self._flush()
            return result

    def _fail(self, exc: ssl.SSLError) -> None:
        """The session failed: remember why and send the alert that tells the server
        (unless the stream is closed: its descriptor may be another's now)."""
        self._break(exc)
        if not self._closed:
            self._write_what_fits()

    def _break(self, exc: BaseException) -> None:
        """The stream is broken from now on; the first reason is the one kept."""
        if self._broken is None:
            self._broken = exc

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("the TLS stream is broken") from self._broken

    async def _feed(self) -> None:
        """Wait for ciphertext (or EOF) and hand it to OpenSSL; if another task is already
        waiting for it, wait for that instead (its bytes serve both)."""
        if self._reading.busy:
            await self._reading.wait()
            self._check_usable()  # closed meanwhile: its socket must not be touched
            return
        buffer = _feed_buffer()
        self._reading.take()
        waited = False
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                # closed by another task since (at a checkpoint of this receive): the
                # descriptor may be another connection's now
                self._check_usable()
                try:
                    count = os.readv(self._fd, [buffer])
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._socket)
                    waited = True
                    continue
                except OSError as exc:
                    self._break(exc)
                    raise trio.BrokenResourceError(str(exc)) from exc
                if count:
                    self._incoming.write(buffer[:count])
                else:
                    self._incoming.write_eof()
                break
        finally:
            self._reading.give_back()
        if not waited:  # the bytes were there already: still let other tasks run
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _flush(self) -> None:
        """Write out what OpenSSL produced, after any other task's write in progress;
        the stream is broken if this is cut short."""
        if not self._outgoing.pending:
            return  # nothing to write: never wait on another task's send (a receive)
        await self._writing.wait()
        self._check_usable()  # closed meanwhile: its descriptor may be another's now
        data = self._outgoing.read()
        if not data:
            return
        view = memoryview(data)
        try:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                sent = 0
            if sent == len(view):
                return  # what nearly every write is: no waiting, no turn taken
            view = view[sent:]
            self._writing.take()
            try:
                while view:
                    await trio.lowlevel.wait_writable(self._socket)
                    try:
                        sent = os.write(self._fd, view)
                    except BlockingIOError:
                        sent = 0
                    view = view[sent:]
            finally:
                self._writing.give_back()
        except OSError as exc:
            self._break(exc)
            raise trio.BrokenResourceError(str(exc)) from exc
        except BaseException as exc:  # cancelled part-way: the record stream is cut
            self._break(exc)
            raise


class _Transport:
    """The socket under a :class:`TlsStream` (Hypercorn reads its addresses)."""

    __slots__ = ("socket",)

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.socket = sock
