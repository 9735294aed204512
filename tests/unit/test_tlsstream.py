"""TlsStream against trio's own TLS server over a socketpair: the handshake and its
failures, bodies larger than a record both ways, the ends of a stream, close_notify,
a send cut short, and unasked-for bytes."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from streamer._tlsstream import TlsStream
from tests.support.certs import self_signed

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture
def cert_pair(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


def _server_context(cert_pair: tuple[Path, Path], version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert_pair)
    context.minimum_version = context.maximum_version = version
    return context


@asynccontextmanager
async def _pair(
    cert_pair: tuple[Path, Path],
    version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    *,
    hostname: str = "127.0.0.1",
    trusted: bool = True,
) -> AsyncIterator[tuple[TlsStream, trio.SSLStream[trio.SocketStream]]]:
    """``(client, server)``, the handshake not yet made (the server's runs on first use)."""
    client_sock, server_sock = trio.socket.socketpair()
    client_context = ssl.create_default_context(cafile=str(cert_pair[0]) if trusted else None)
    client = TlsStream(client_sock, client_context, server_hostname=hostname)
    server = trio.SSLStream(
        trio.SocketStream(server_sock), _server_context(cert_pair, version), server_side=True
    )
    try:
        yield client, server
    finally:
        await client.aclose()
        await trio.aclose_forcefully(server)


async def _handshake(client: TlsStream, server: trio.SSLStream[trio.SocketStream]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()


async def _receive_all(client: TlsStream, size: int) -> tuple[bytes, int]:
    """``size`` bytes through ``receive_into`` and the most one call returned."""
    received, largest = bytearray(), 0
    buffer = memoryview(bytearray(1 << 20))
    while len(received) < size:
        count = await client.receive_into(buffer)
        assert count, "stream ended early"
        largest = max(largest, count)
        received += buffer[:count]
    return bytes(received), largest


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_bodies_larger_than_a_record_cross_both_ways(
    cert_pair: tuple[Path, Path], version: ssl.TLSVersion
) -> None:
    upload, download = os.urandom(3 << 20), os.urandom(5 << 20)
    async with _pair(cert_pair, version) as (client, server):
        await _handshake(client, server)

        async def serve() -> None:
            got = bytearray()
            while len(got) < len(upload):
                got += await server.receive_some(1 << 20)
            await server.send_all(hashlib.sha256(got).digest() + download)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(upload)
            digest = b""
            while len(digest) < 32:
                digest += await client.receive_some(32 - len(digest))
            received, largest = await _receive_all(client, len(download))
        assert digest == hashlib.sha256(upload).digest()
        assert received == download
        assert largest > 16 * 1024  # several records decrypted in one call, not one each


async def test_close_notify_ends_the_stream_and_so_does_a_bare_close(
    cert_pair: tuple[Path, Path],
) -> None:
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        await server.send_all(b"last words")
        await server.aclose()  # sends close_notify
        assert await client.receive_some() == b"last words"
        assert await client.receive_into(memoryview(bytearray(10))) == 0
        assert await client.receive_some() == b""  # and stays ended
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        await server.send_all(b"tail")
        await server.transport_stream.aclose()  # no close_notify: a ragged EOF
        buffer = memoryview(bytearray(10))
        assert await client.receive_into(buffer) == 4  # the data, then the end, one feed
        assert buffer[:4] == b"tail"
        assert await client.receive_into(buffer) == 0


async def test_aclose_sends_close_notify(cert_pair: tuple[Path, Path]) -> None:
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        await client.aclose()
        # trio's server (not https_compatible) would raise on an EOF without one
        assert await server.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()


async def test_an_untrusted_certificate_fails_with_the_reason(
    cert_pair: tuple[Path, Path],
) -> None:
    async with _pair(cert_pair, trusted=False) as (client, server):
        with trio.fail_after(5):  # the server fails too: it was sent the alert
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_server_side_fails, server)
                with pytest.raises(trio.BrokenResourceError) as caught:
                    await client.do_handshake()
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        with pytest.raises(trio.BrokenResourceError):  # and it stays broken
            await client.send_all(b"x")


async def test_a_name_the_certificate_lacks_fails(cert_pair: tuple[Path, Path]) -> None:
    async with _pair(cert_pair, hostname="example.com") as (client, server):
        with trio.fail_after(5):  # the server fails too: it was sent the alert
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_server_side_fails, server)
                with pytest.raises(trio.BrokenResourceError) as caught:
                    await client.do_handshake()
        assert "example.com" in str(caught.value.__cause__)


async def _server_side_fails(server: trio.SSLStream[trio.SocketStream]) -> None:
    with pytest.raises(trio.BrokenResourceError):
        await server.do_handshake()


async def test_a_send_cut_short_leaves_the_stream_broken(cert_pair: tuple[Path, Path]) -> None:
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        with trio.move_on_after(0.2) as scope:
            await client.send_all(os.urandom(16 << 20))  # the server never reads
        assert scope.cancelled_caught
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"more")


async def test_unasked_for_bytes_make_it_readable(cert_pair: tuple[Path, Path]) -> None:
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"pong")
            await client.send_all(b"ping")
            assert await client.receive_some() == b"pong"
        assert await server.receive_some() == b"ping"
        assert not client.is_readable()
        await server.send_all(b"nobody asked")  # a socketpair: in the client's buffer now
        assert client.is_readable()


class _Corrupting(trio.abc.Stream):
    """A transport that flips the last byte (in the record's tag) of sends once armed."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner, self.armed = inner, False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytearray(data)
        if self.armed:
            data[-1] ^= 0x01
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def _through(
    cert_pair: tuple[Path, Path], fault: type[_Corrupting]
) -> AsyncIterator[tuple[TlsStream, trio.SSLStream[_Corrupting], _Corrupting]]:
    """``(client, server, transport)`` after the handshake, the server sending through
    ``fault`` (armed by the test)."""
    client_sock, server_sock = trio.socket.socketpair()
    transport = fault(trio.SocketStream(server_sock))
    server = trio.SSLStream(
        transport, _server_context(cert_pair, ssl.TLSVersion.TLSv1_3), server_side=True
    )
    context = ssl.create_default_context(cafile=str(cert_pair[0]))
    client = TlsStream(client_sock, context, server_hostname="127.0.0.1")
    try:
        await _handshake(client, server)  # type: ignore[arg-type]
        yield client, server, transport
    finally:
        await client.aclose()
        await trio.aclose_forcefully(server)


async def test_a_tampered_record_after_good_ones_is_an_error_not_the_end(
    cert_pair: tuple[Path, Path],
) -> None:
    async with _through(cert_pair, _Corrupting) as (client, server, transport):
        await server.send_all(b"a" * 100)
        transport.armed = True
        await server.send_all(b"b" * 100)  # both records wait in the socket: one feed
        buffer = memoryview(bytearray(1000))
        assert await client.receive_into(buffer) == 100
        with pytest.raises(trio.BrokenResourceError) as caught:
            await client.receive_into(buffer)
        assert isinstance(caught.value.__cause__, ssl.SSLError)
        assert not isinstance(caught.value.__cause__, ssl.SSLEOFError)


async def test_a_buffer_smaller_than_a_record_gets_every_byte(
    cert_pair: tuple[Path, Path],
) -> None:
    data = os.urandom(100_000)
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, data)
            received = bytearray()
            buffer = memoryview(bytearray(1000))
            while len(received) < len(data):
                count = await client.receive_into(buffer)
                assert 0 < count <= 1000
                received += buffer[:count]
        assert received == data


async def test_a_cancelled_receive_leaves_the_stream_usable(cert_pair: tuple[Path, Path]) -> None:
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        with trio.move_on_after(0.05) as scope:
            await client.receive_some()  # nothing comes
        assert scope.cancelled_caught
        await server.send_all(b"late")
        assert await client.receive_some() == b"late"
        with pytest.raises(ValueError):
            await client.receive_some(0)


async def test_a_server_stream_sends_and_receives_at_once(cert_pair: tuple[Path, Path]) -> None:
    """Server side (as Hypercorn uses it): one task receives while another sends, both
    ways bigger than the socket buffers, so writes wait part-way while reads go on."""
    server_sock, client_sock = trio.socket.socketpair()
    server = TlsStream(
        server_sock, _server_context(cert_pair, ssl.TLSVersion.TLSv1_3), server_side=True
    )
    client_context = ssl.create_default_context(cafile=str(cert_pair[0]))
    client = trio.SSLStream(
        trio.SocketStream(client_sock), client_context, server_hostname="127.0.0.1"
    )
    up, down = os.urandom(8 << 20), os.urandom(8 << 20)
    got_up, got_down = bytearray(), bytearray()

    async def receive(stream: trio.abc.ReceiveStream, into: bytearray, size: int) -> None:
        while len(into) < size:
            into += await stream.receive_some(1 << 20)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await client.do_handshake()
        assert server.selected_alpn_protocol() is None
        assert server.transport_stream.socket is server_sock
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, down)
                nursery.start_soon(receive, server, got_up, len(up))
                nursery.start_soon(client.send_all, up)
                nursery.start_soon(receive, client, got_down, len(down))
        assert got_up == up and got_down == down
    finally:
        await server.aclose()
        await trio.aclose_forcefully(client)


@asynccontextmanager
async def _server_stream(
    cert_pair: tuple[Path, Path],
) -> AsyncIterator[tuple[TlsStream, trio.SSLStream[trio.SocketStream]]]:
    """``(server, client)``, negotiated: a server-side TlsStream and trio's client."""
    server_sock, client_sock = trio.socket.socketpair()
    context = _server_context(cert_pair, ssl.TLSVersion.TLSv1_3)
    server = TlsStream(server_sock, context, server_side=True)
    client = trio.SSLStream(
        trio.SocketStream(client_sock),
        ssl.create_default_context(cafile=str(cert_pair[0])),
        server_hostname="127.0.0.1",
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await client.do_handshake()
        yield server, client
    finally:
        await server.aclose()
        await trio.aclose_forcefully(client)


async def test_a_receive_does_not_wait_for_a_stuck_send(cert_pair: tuple[Path, Path]) -> None:
    async with _server_stream(cert_pair) as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, os.urandom(8 << 20))  # the client is not reading
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(b"hello")
        with trio.fail_after(5):
            assert await server.receive_some(100) == b"hello"
        nursery.cancel_scope.cancel()


async def test_a_task_waiting_its_turn_stops_at_a_close(
    cert_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A send waiting for another's write to end must not write once the stream is
    closed: its descriptor number may belong to something else by then."""
    async with _server_stream(cert_pair) as (server, _client):
        failures: list[BaseException] = []

        async def send() -> None:
            try:
                await server.send_all(b"x" * 100)
            except trio.ClosedResourceError as exc:
                failures.append(exc)

        server._writing.take()  # as if a send were part-way
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            fd = server.socket.fileno()
            await server.aclose()
            reused = os.open(tmp_path / "victim", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                assert reused == fd  # the lowest free number: the socket's
                server._writing.give_back()  # the other write ends
            finally:
                await trio.testing.wait_all_tasks_blocked()
                os.close(reused)
        assert len(failures) == 1
        assert (tmp_path / "victim").read_bytes() == b""


async def test_a_send_cut_short_is_not_forgotten_at_the_end(cert_pair: tuple[Path, Path]) -> None:
    async with _server_stream(cert_pair) as (server, client):
        received: list[bytes | BaseException] = []

        async def receive() -> None:
            try:
                received.append(await server.receive_some())
            except trio.BrokenResourceError as exc:
                received.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)  # waiting for bytes meanwhile
            with trio.move_on_after(0.1):
                await server.send_all(os.urandom(16 << 20))  # cut part-way: a record is cut
            await client.transport_stream.send_eof()  # and the peer ends (FIN, no close_notify)
        [outcome] = received
        assert isinstance(outcome, trio.BrokenResourceError)  # the break, not a clean end
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"after a truncated record")


async def test_a_receive_checkpoints_when_it_reads_the_socket_and_only_then(
    cert_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes already in the socket are read without waiting on epoll, but the receive
    that reads them is still a checkpoint (a long body cannot starve other tasks, and
    a cancelled one stops there); records already fed to OpenSSL need none."""
    async with _pair(cert_pair) as (client, server):
        await _handshake(client, server)
        await server.send_all(b"x" * 40_000)  # three records, in the socket before we ask
        waits = []
        wait_readable = trio.lowlevel.wait_readable

        async def counted(sock: trio.socket.SocketType) -> None:
            waits.append(sock)
            await wait_readable(sock)

        monkeypatch.setattr(trio.lowlevel, "wait_readable", counted)
        buffer = memoryview(bytearray(1000))
        with trio.testing.assert_checkpoints():
            assert await client.receive_into(buffer) == 1000  # read from the socket
        assert waits == []  # the bytes were there: no epoll round trip
        with trio.testing.assert_no_checkpoints():
            assert await client.receive_into(buffer) == 1000  # from what was fed
        with trio.CancelScope() as scope:
            scope.cancel()
            rest = memoryview(bytearray(40_000))
            assert await client.receive_into(rest) == 38_000  # fed already: no checkpoint
            await client.receive_into(buffer)  # must read the socket: cancelled there
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_into, buffer)
            await trio.testing.wait_all_tasks_blocked()
            assert len(waits) == 1  # nothing there: it waits on epoll
            await server.send_all(b"after")
        assert bytes(buffer[:5]) == b"after"  # nothing was lost or broken


class _Truncating(_Corrupting):
    """A transport that, once armed, sends only the start of each send (part of a record)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(bytes(data)[:10] if self.armed else data)


class _ClosingAfterFirstFeed:
    """The stream's incoming BIO, closing the stream (as another task's ``aclose`` at
    the receive's checkpoint would) right after the first ciphertext is fed, and
    handing the freed descriptor number to a new socketpair with bytes waiting."""

    def __init__(self, stream: TlsStream) -> None:
        self._stream, self._bio = stream, stream._incoming
        self.victims: list[socket.socket] = []

    @property
    def pending(self) -> int:
        return self._bio.pending

    def write(self, data: bytes | bytearray | memoryview) -> int:
        count = self._bio.write(data)
        if not self.victims:
            self._stream._closed = True  # what aclose does first, then:
            self._stream.socket.close()
            self.victims.extend(socket.socketpair())  # may take the freed descriptor
            self.victims[0].setblocking(False)  # a stray read takes the bytes, never blocks
            self.victims[1].send(b"STOLEN")
        return count

    def write_eof(self) -> None:
        self._bio.write_eof()


async def test_a_receive_stops_at_a_close_between_two_reads_of_the_socket(
    cert_pair: tuple[Path, Path],
) -> None:
    """A receive that has fed part of a record lets other tasks run before reading
    the socket again; if one closes the stream then, the receive stops with
    ClosedResourceError and never reads the descriptor, which may be another
    connection's by then (here a new socketpair's, with bytes waiting)."""
    async with _through(cert_pair, _Truncating) as (client, server, transport):
        closing = _ClosingAfterFirstFeed(client)
        try:
            transport.armed = True
            await server.send_all(b"a" * 1000)  # 10 bytes of its record reach the socket
            client._incoming = closing  # type: ignore[assignment]
            with trio.fail_after(5), pytest.raises(trio.ClosedResourceError):
                await client.receive_into(memoryview(bytearray(2000)))
            assert closing.victims[0].recv(100) == b"STOLEN"  # still there: left alone
        finally:
            for sock in closing.victims:
                sock.close()
