"""PooledTransport: connection reuse, bounds, closes and error mapping, against a real
keep-alive HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import trio

from streamer._storage.http11 import JOIN_BODY
from streamer._storage.httpexchange import Exchange
from streamer._storage.httppool import PooledTransport
from tests.support.threadserver import serving


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    close_after_reply = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Counting

    def setup(self) -> None:
        super().setup()
        type(self.server).connections += 1

    def do_GET(self) -> None:
        body = self.path.encode() * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.server.close_after_reply:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = hashlib.sha256(data).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Counting]:
    with serving(type("Srv", (_Counting,), {})(("127.0.0.1", 0), _Handler)) as srv:
        yield srv


def _get_of(srv: _Counting, path: str) -> Exchange:
    """A GET of ``path`` on ``srv``."""
    return _request(srv.server_address[1], path)


def _request(port: int, path: str, *, body: bytes | None = None, wait: float = 5.0) -> Exchange:
    headers = {"Host": f"127.0.0.1:{port}"}
    if body is not None:
        headers["Content-Length"] = str(len(body))
    return Exchange(
        "GET" if body is None else "POST",
        f"http://127.0.0.1:{port}{path}",
        "http",
        "127.0.0.1",
        port,
        path,
        headers,
        body,
        httpx.Timeout(wait).as_dict(),
    )


async def _get(transport: PooledTransport, request: Exchange, wait: float | None = None) -> bytes:
    if wait is not None:
        request = replace(request, timeouts=httpx.Timeout(wait).as_dict())
    response = await transport.exchange(request)
    try:
        return b"".join([piece async for piece in response])
    finally:
        await response.aclose()


async def test_sequential_requests_reuse_one_connection(server: _Counting) -> None:
    async with PooledTransport(max_connections=4) as transport:
        for n in range(20):
            assert await _get(transport, _get_of(server, f"/{n}")) == f"/{n}".encode() * 100
    assert type(server).connections == 1


async def test_parallel_requests_open_at_most_max_connections(server: _Counting) -> None:
    async with PooledTransport(max_connections=3) as transport, trio.open_nursery() as nursery:
        for n in range(30):
            nursery.start_soon(_get, transport, _get_of(server, f"/{n}"))
    assert 1 <= type(server).connections <= 3


async def test_a_connection_the_server_closed_is_replaced(server: _Counting) -> None:
    server.close_after_reply = True
    async with PooledTransport(max_connections=2) as transport:
        for n in range(5):
            assert await _get(transport, _get_of(server, f"/{n}")) == f"/{n}".encode() * 100
    assert type(server).connections == 5


async def test_a_bursts_idle_connections_close_once_expired(server: _Counting) -> None:
    async with PooledTransport(max_connections=4, keepalive_expiry=0.3) as transport:
        async with trio.open_nursery() as nursery:  # a burst: four connections at once
            for n in range(4):
                nursery.start_soon(_get, transport, _get_of(server, f"/{n}"))
        (stack,) = transport._idle.values()
        assert len(stack) == 4
        for n in range(8):  # then one request at a time: only the newest is reused
            await trio.sleep(0.1)
            assert await _get(transport, _get_of(server, f"/{n}")) == f"/{n}".encode() * 100
        assert len(stack) == 1  # the burst's three others expired and were closed
        assert not stack[0].closed
    assert type(server).connections == 4  # and the one reused was never replaced


async def test_pool_timeout_when_every_connection_is_busy(server: _Counting) -> None:
    async with PooledTransport(max_connections=1) as transport:
        held = await transport.exchange(_get_of(server, "/a"))
        try:
            with pytest.raises(httpx.PoolTimeout):
                await _get(transport, _get_of(server, "/b"), wait=0.2)
        finally:
            await held.aclose()
        assert await _get(transport, _get_of(server, "/c")) == b"/c" * 100  # slot freed


async def test_connect_errors_are_httpx_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    async with PooledTransport(max_connections=1) as transport:
        with pytest.raises(httpx.ConnectError):
            await _get(transport, _request(port, "/"))
        with pytest.raises(httpx.ConnectError):  # the failed attempt freed its slot
            await _get(transport, _request(port, "/"), wait=0.5)


@pytest.mark.parametrize(("host", "resolved"), [("127.0.0.1", 0), ("localhost", 1)])
async def test_an_address_is_connected_to_directly_and_a_name_is_resolved(
    server: _Counting, monkeypatch: pytest.MonkeyPatch, host: str, resolved: int
) -> None:
    opened = []
    resolving = trio.open_tcp_stream

    async def counted(host: str, port: int) -> trio.SocketStream:
        opened.append(host)
        return await resolving(host, port)

    monkeypatch.setattr(trio, "open_tcp_stream", counted)
    request = replace(_get_of(server, "/n"), host=host)
    async with PooledTransport(max_connections=1) as transport:
        assert await _get(transport, request) == b"/n" * 100
    assert len(opened) == resolved


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_address_is_connected_to_directly() -> None:
    v6 = type("Srv6", (_Counting,), {"address_family": socket.AF_INET6})
    with serving(v6(("::1", 0), _Handler)) as srv:
        port = srv.server_address[1]
        request = replace(_request(port, "/six"), host="::1", url=f"http://[::1]:{port}/six")
        async with PooledTransport(max_connections=1) as transport:
            assert await _get(transport, request) == b"/six" * 100


async def test_cancelled_request_frees_its_slot(server: _Counting) -> None:
    async with PooledTransport(max_connections=1) as transport:
        with trio.CancelScope() as scope:
            response = await transport.exchange(_get_of(server, "/x"))
            scope.cancel()
            try:
                await trio.sleep(1)
            finally:
                await response.aclose()
        assert await _get(transport, _get_of(server, "/y"), wait=1) == b"/y" * 100


async def test_requests_with_small_bodies_arrive_whole(server: _Counting) -> None:
    async with PooledTransport(max_connections=1) as transport:
        for size in (0, 1, 100, JOIN_BODY, JOIN_BODY + 1, 3 * JOIN_BODY + 7):
            body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            echoed = await _get(transport, _request(server.server_address[1], "/e", body=body))
            assert echoed == hashlib.sha256(body).hexdigest().encode()
    assert type(server).connections == 1
