"""http11.Connection against a scripted server on the other end of an in-memory stream:
framing (Content-Length, chunked, until close), keep-alive rules, strict parsing of
hostile heads, early responses and timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from streamer._storage import http11, http11wire
from streamer._storage.s3body import SlicedBody

GET = (b"GET", b"/k", [(b"Host", b"s3")], None, 0)


def _pair() -> tuple[
    http11.Connection,
    trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream],
]:
    client, server = trio.testing.memory_stream_pair()
    return http11.Connection(client, keepalive_expiry=5.0), server


async def _exchange(
    reply: bytes, *, method: bytes = b"GET", close_after: bool = False
) -> tuple[http11.Connection, http11wire.Head, bytes]:
    """Send one request to a server that has ``reply`` waiting (then closes, with
    ``close_after``); returns the connection, the head and the whole body."""
    connection, server = _pair()
    await server.send_all(reply)
    if close_after:
        await server.send_stream.aclose()
    head = await connection.request(
        method, b"/k", [(b"Host", b"s3")], None, 0, read_timeout=5, write_timeout=5
    )
    body = b""
    while piece := await connection.next_piece():
        body += piece
    return connection, head, body


async def test_content_length_body_keeps_the_connection() -> None:
    connection, head, body = await _exchange(
        b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "x"\r\n\r\nhello'
    )
    assert (head.status, body, head.values(b"etag")) == (200, b"hello", [b'"x"'])
    assert connection.reusable


async def test_chunked_body_with_extensions_and_trailers() -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    connection, _, body = await _exchange(reply)
    assert body == b"hello world"
    assert connection.reusable


async def test_body_until_close_is_not_reused() -> None:
    connection, _, body = await _exchange(b"HTTP/1.1 200 OK\r\n\r\nall of it", close_after=True)
    assert body == b"all of it"
    assert not connection.reusable


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA",  # bytes nobody asked for
    ],
)
async def test_responses_that_end_keep_alive(reply: bytes) -> None:
    connection, _, _ = await _exchange(reply)
    assert not connection.reusable


async def test_head_and_no_content_responses_have_no_body() -> None:
    connection, head, body = await _exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", method=b"HEAD"
    )
    assert (head.values(b"content-length"), body, connection.reusable) == ([b"1234"], b"", True)
    connection, head, body = await _exchange(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (head.status, body, connection.reusable) == (204, b"", True)


async def test_interim_responses_are_skipped() -> None:
    _, head, body = await _exchange(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert (head.status, body) == (200, b"ok")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",  # obsolete line folding
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
async def test_malformed_responses_are_protocol_errors(reply: bytes) -> None:
    with pytest.raises(http11.ProtocolError):
        await _exchange(reply, close_after=True)


def test_head_fields_are_split_lowercased_and_trimmed() -> None:
    head = http11wire.parse_head(
        b'HTTP/1.1 206 Partial Content\r\nETag:\t"e" \r\nX-Amz-Meta-A:\r\n'
        b"Content-Range: bytes 0-1/2\r\nx-amz-meta-a: two  words \t"
    )
    assert (head.status, head.reason, head.keep_alive) == (206, b"Partial Content", True)
    assert head.headers == [
        (b"etag", b'"e"'),
        (b"x-amz-meta-a", b""),
        (b"content-range", b"bytes 0-1/2"),
        (b"x-amz-meta-a", b"two  words"),
    ]
    assert http11wire.parse_head(b"HTTP/1.0 204 No Content").headers == []
    assert not http11wire.parse_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close").keep_alive


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nA: b\r\nNo-Colon", "bad header line b'No-Colon'"),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n folded", "bad header line b' folded'"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x", "bad header line b'Bad Name: x'"),
        (b"HTTP/1.1 200 OK\r\nA: b\r\nZ: \x00", "control character in header b'Z'"),
        (b"HTTP/1.1 200 OK\r\nA: b\rc", "control character in header b'A'"),
        (b"HTTP/1.1 200 OK\r\n\r\nA: b", "bad header line b''"),
    ],
)
def test_a_bad_header_line_is_named(head: bytes, message: str) -> None:
    with pytest.raises(http11.ProtocolError) as caught:
        http11wire.parse_head(head)
    assert str(caught.value) == message


async def test_a_response_head_is_bounded() -> None:
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * (http11.MAX_HEAD_BYTES + 10)
    with pytest.raises(http11.ProtocolError, match="over"):
        await _exchange(endless)


async def test_a_body_cut_short_is_an_error() -> None:
    with pytest.raises(http11.ProtocolError, match="body bytes to come"):
        await _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", close_after=True)
    with pytest.raises(http11.ProtocolError, match="without sending a response"):
        await _exchange(b"", close_after=True)


async def test_request_bytes_and_refusal_of_injected_headers() -> None:
    connection, server = _pair()

    async def pieces() -> AsyncIterator[bytes | memoryview]:
        yield b"a" * 10
        yield memoryview(b"b" * 5)

    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            data = b""
            while not data.endswith(b"b" * 5):
                data += await server.receive_some()
            assert data == b"PUT /k HTTP/1.1\r\nHost: s3\r\nContent-Length: 15\r\n\r\n" + (
                b"a" * 10 + b"b" * 5
            )
            await server.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        nursery.start_soon(answer)
        head = await connection.request(
            b"PUT",
            b"/k",
            [(b"Host", b"s3"), (b"Content-Length", b"15")],
            pieces(),
            15,
            read_timeout=5,
            write_timeout=5,
        )
    assert head.status == 200 and connection.reusable
    for bad in ([(b"X-A", b"v\r\nInjected: 1")], [(b"Bad Name", b"v")]):
        with pytest.raises(http11.RequestError):
            await connection.request(b"GET", b"/k", bad, None, 0, read_timeout=1, write_timeout=1)
    with pytest.raises(http11.RequestError):
        await connection.request(
            b"GET", b"/k\r\nX: y", [], None, 0, read_timeout=1, write_timeout=1
        )


async def test_a_body_shorter_than_its_content_length_is_refused() -> None:
    connection, server = _pair()

    async def one() -> AsyncIterator[bytes]:
        yield b"abc"

    with pytest.raises(http11.RequestError, match="Content-Length of 10"):
        await connection.request(b"PUT", b"/k", [], one(), 10, read_timeout=1, write_timeout=1)
    with trio.move_on_after(0.05):
        assert not await server.receive_some(), "nothing of the request was to be sent"
    assert not connection.reusable


async def test_an_early_answer_to_a_big_body_is_returned() -> None:
    """The server refuses before reading the body and closes: its answer is what counts."""
    client_sock, server_sock = trio.socket.socketpair()
    connection = http11.Connection(trio.SocketStream(client_sock), keepalive_expiry=5)
    server = trio.SocketStream(server_sock)

    async with trio.open_nursery() as nursery:

        async def refuse() -> None:
            await server.receive_some(100)
            await server.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied")
            await trio.sleep(0.05)
            server_sock.close()

        nursery.start_soon(refuse)
        head = await connection.request(
            b"PUT",
            b"/k",
            [],
            SlicedBody(bytes(64 << 20)),
            64 << 20,
            read_timeout=5,
            write_timeout=5,
        )
    assert head.status == 403
    assert await connection.next_piece() == b"denied"
    assert not connection.reusable
    await connection.aclose()


@asynccontextmanager
async def _socket_pair() -> AsyncIterator[tuple[http11.Connection, trio.SocketStream]]:
    """A connection over a real socket pair: the paths that write and read the
    socket directly (not through trio's stream) run."""
    client_sock, server_sock = trio.socket.socketpair()
    connection = http11.Connection(trio.SocketStream(client_sock), keepalive_expiry=5)
    server = trio.SocketStream(server_sock)
    try:
        yield connection, server
    finally:
        await connection.aclose()
        await server.aclose()


async def test_a_body_bigger_than_the_socket_buffer_arrives_whole_over_a_socket() -> None:
    """A send the kernel takes only in part goes on where it stopped."""
    async with _socket_pair() as (connection, server):
        await _send_a_big_body(connection, server)


async def _send_a_big_body(connection: http11.Connection, server: trio.SocketStream) -> None:
    body = bytes(range(256)) * (32 << 12)  # 8 MiB, far beyond a socket buffer
    received = bytearray()

    async def answer() -> None:
        while not received.endswith(body[-1024:]) or len(received) < len(body):
            # small reads, a scheduling turn apart: the client's writes stay partial
            received.extend(await server.receive_some(1 << 16))
            await trio.lowlevel.checkpoint()
        await server.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        head = await connection.request(
            b"PUT", b"/k", [], SlicedBody(body), len(body), read_timeout=5, write_timeout=5
        )
    assert head.status == 200 and await connection.next_piece() == b"ok"
    assert bytes(received[received.index(b"\r\n\r\n") + 4 :]) == body
    assert connection.reusable


async def test_socket_answers_timeouts_and_disconnects() -> None:
    async with _socket_pair() as (connection, server):
        await server.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert (await connection.request(*GET, read_timeout=5, write_timeout=5)).status == 204
        with pytest.raises(http11.Timeout, match="read"):
            await connection.request(*GET, read_timeout=0.05, write_timeout=1)
    async with _socket_pair() as (connection, server):
        await server.aclose()
        with pytest.raises((http11.ProtocolError, http11.Disconnected)):
            await connection.request(*GET, read_timeout=5, write_timeout=5)
        assert not connection.reusable


async def test_read_timeout() -> None:
    connection, _ = _pair()
    with pytest.raises(http11.Timeout) as caught:
        await connection.request(*GET, read_timeout=0.05, write_timeout=1)
    assert caught.value.phase == "read"
    assert not connection.reusable


async def test_idle_connection_the_server_closed_has_expired() -> None:
    client_sock, server_sock = trio.socket.socketpair()
    connection = http11.Connection(trio.SocketStream(client_sock), keepalive_expiry=5)
    assert not connection.expired()
    server_sock.close()
    assert connection.expired()  # EOF waiting: unusable
    assert not connection.idle_expired()  # the clock alone cannot tell
    await connection.aclose()
    assert connection.idle_expired()


async def test_idle_connection_expires_after_its_keepalive() -> None:
    connection = http11.Connection(trio.testing.memory_stream_pair()[0], keepalive_expiry=0.01)
    assert not connection.expired()
    await trio.sleep(0.02)
    assert connection.expired()
    assert connection.idle_expired()


@asynccontextmanager
async def _over_a_socket() -> AsyncIterator[tuple[http11.Connection, trio.SocketStream]]:
    """A connection over a real socket (what receive_into takes in place) and its
    server's end, both closed after."""
    client, server = trio.socket.socketpair()
    connection = http11.Connection(trio.SocketStream(client), keepalive_expiry=5.0)
    async with trio.SocketStream(server) as server_end:
        try:
            yield connection, server_end
        finally:
            await connection.aclose()


async def _request(connection: http11.Connection, server: trio.SocketStream, reply: bytes) -> None:
    """Send GET (the server reads it) and read the response head to ``reply``."""
    await server.send_all(reply)
    await connection.request(*GET, read_timeout=5, write_timeout=5)
    await server.receive_some()


async def test_a_length_body_is_received_in_place_after_what_came_with_the_head() -> None:
    async with _over_a_socket() as (connection, server):
        await _request(connection, server, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        buffer = memoryview(bytearray(4))
        assert await connection.receive_into(buffer) is None  # "abc" came with the head
        assert await connection.next_piece() == b"abc"
        await server.send_all(b"defghij")
        received = b""
        while count := await connection.receive_into(buffer):
            received += bytes(buffer[:count])
        assert received == b"defghij"
        assert connection.reusable
        assert await connection.receive_into(buffer) == 0


async def test_a_body_cut_short_while_received_in_place_is_an_error() -> None:
    async with _over_a_socket() as (connection, server):
        await _request(connection, server, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await server.send_all(b"abc")
        await server.send_eof()
        buffer = memoryview(bytearray(16))
        assert await connection.receive_into(buffer) == 3
        with pytest.raises(http11.ProtocolError, match="7 body bytes to come"):
            await connection.receive_into(buffer)
        assert not connection.reusable


async def test_chunked_bodies_and_other_streams_are_not_received_in_place() -> None:
    async with _over_a_socket() as (connection, server):
        await _request(connection, server, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert await connection.receive_into(memoryview(bytearray(4))) is None
    memory, other = _pair()  # not a socket (as a TLS stream is not)
    await other.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    await memory.request(*GET, read_timeout=5, write_timeout=5)
    await other.send_all(b"abc")
    assert await memory.receive_into(memoryview(bytearray(4))) is None
    assert await memory.next_piece() == b"abc"
