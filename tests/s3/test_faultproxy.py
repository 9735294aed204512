"""The fault proxy itself, in front of a tiny stdlib HTTP server."""

from __future__ import annotations

import hashlib
import http.client
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support.faultproxy import RequestHead, fault_proxy, s3_error_body, start_in_thread
from tests.support.threadserver import serving


class _Echo(BaseHTTPRequestHandler):
    """GET: 1000 bytes. POST: the SHA-256 of the (plain or chunked) body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._reply(b"x" * 1000)

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(hashlib.sha256(body).hexdigest().encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Echo)) as server:
        yield server.server_address[1]


def test_thread_mode_fails_forwards_and_drops(echo_port: int) -> None:
    running = start_in_thread(echo_port)
    url = f"http://127.0.0.1:{running.port}/thing"
    try:
        running.proxy.fail_next(1, status=503)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url, timeout=10)
        assert caught.value.code == 503
        assert b"<Code>SlowDown</Code>" in caught.value.read()
        caught.value.close()

        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"x" * 1000

        running.proxy.drop_after(300)
        with (
            pytest.raises(http.client.IncompleteRead),
            urllib.request.urlopen(url, timeout=10) as response,
        ):
            response.read()
        proxy = running.proxy
        assert (proxy.requests, proxy.failed, proxy.forwarded, proxy.dropped) == (3, 1, 2, 1)
        assert [r.target for r in proxy.log] == ["/thing"] * 3

        release = threading.Event()
        proxy.stall_after(300, release=release)
        with (
            urllib.request.urlopen(url, timeout=0.5) as response,
            pytest.raises(TimeoutError),  # held after 300 bytes (headers included)
        ):
            response.read()
        assert proxy.stalled == 1
        release.set()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"x" * 1000  # released: the next one flows
    finally:
        running.stop()


async def test_streams_chunked_and_sized_bodies(echo_port: int) -> None:
    payload = bytes(range(256)) * 300

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(payload), 7000):
            yield payload[offset : offset + 7000]

    async with fault_proxy(echo_port) as proxy, httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{proxy.port}/"
        chunked = await client.post(url, content=chunks())
        sized = await client.post(url, content=payload)
        assert chunked.text == sized.text == hashlib.sha256(payload).hexdigest()
        assert (proxy.connections, proxy.requests) == (1, 2)  # one kept-alive connection

        proxy.fail_next(1, status=500, body=s3_error_body("InternalError"), when=is_post)
        assert (await client.get(url)).status_code == 200  # only POSTs fail
        assert (await client.post(url, content=chunks())).status_code == 500
        proxy.drop_after(500)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)  # cut mid-body
        assert (proxy.failed, proxy.dropped) == (1, 1)


def is_post(request: RequestHead) -> bool:
    return request.method == "POST"
