"""The HTTP downloader against a real server: resume, retries, quirks, clean abandonment."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
import pytest
import trio
import trio.lowlevel
import trio.testing

from streamer._errors import SourceNotFound
from streamer._storage.http import UNKNOWN, HttpClient, HttpSettings
from streamer._storage.httperrors import HttpDenied, HttpError, HttpNotFound, describe, http_error
from tests.support.faultproxy import FaultProxy, RequestHead, fault_proxy
from tests.support.hubstub import FileServer

from .conftest import FAST, sha256

BIG = os.urandom(3 << 20)


def is_get(request: RequestHead) -> bool:
    return request.method == "GET"


async def download(client: HttpClient, url: str, chunk_size: int = 1 << 20) -> bytes:
    async with aclosing(client.stream(url, chunk_size=chunk_size)) as chunks:
        return b"".join([chunk async for chunk in chunks])


@pytest.fixture
async def proxy(files: FileServer) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(files.port) as running:
        yield running


async def test_streams_in_chunks_of_the_asked_size(files: FileServer, client: HttpClient) -> None:
    files.files["/big.bin"] = BIG
    sizes: list[int] = []
    async with aclosing(client.stream(f"{files.url}/big.bin", chunk_size=1 << 20)) as chunks:
        async for chunk in chunks:
            sizes.append(len(chunk))
    assert sizes == [1 << 20] * 3
    get = files.requests("GET")[0]
    assert get.headers["accept-encoding"] == "identity" and "range" not in get.headers


async def test_resumes_after_a_drop_with_a_pinned_range(
    files: FileServer, client: HttpClient, proxy: FaultProxy
) -> None:
    files.files["/big.bin"] = BIG
    proxy.drop_after(1_000_000, when=is_get)
    data = await download(client, f"http://127.0.0.1:{proxy.port}/big.bin")
    assert sha256(data) == sha256(BIG)
    assert proxy.dropped == 1 and client.retries == 1
    first, resumed = files.requests("GET")
    assert "range" not in first.headers
    start = int(resumed.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(BIG)
    assert resumed.headers["if-range"].startswith('"')  # the strong ETag


async def test_503_twice_then_success(
    files: FileServer, client: HttpClient, proxy: FaultProxy
) -> None:
    files.files["/a.bin"] = b"payload"
    proxy.fail_next(2, status=503, body=b"busy", content_type="text/plain", when=is_get)
    assert await download(client, f"http://127.0.0.1:{proxy.port}/a.bin") == b"payload"
    assert client.retries == 2 and proxy.failed == 2 and proxy.forwarded == 1


async def test_gives_up_after_max_retries(files: FileServer, proxy: FaultProxy) -> None:
    files.files["/a.bin"] = b"payload"
    proxy.fail_next(100, status=503, body=b"down for maintenance", content_type="text/plain")
    async with HttpClient(FAST) as client:
        with pytest.raises(HttpError) as caught:
            await download(client, f"http://127.0.0.1:{proxy.port}/a.bin")
    assert caught.value.code == "HTTP503" and caught.value.status == 503
    assert "down for maintenance" in caught.value.message
    assert client.retries == FAST.max_retries
    assert proxy.failed == FAST.max_retries + 1


async def test_429_honours_retry_after_within_the_cap(files: FileServer, proxy: FaultProxy) -> None:
    files.files["/a.bin"] = b"x"
    proxy.fail_next(1, status=429, body=b"slow down", content_type="text/plain")
    settings = HttpSettings(backoff_base=0.001, backoff_max=0.01, allow_private_networks=True)
    async with HttpClient(settings) as client:
        assert await download(client, f"http://127.0.0.1:{proxy.port}/a.bin") == b"x"
    assert client.retries == 1


async def test_server_ignoring_range_still_gives_the_exact_bytes(
    files: FileServer, client: HttpClient, proxy: FaultProxy
) -> None:
    files.files["/big.bin"] = BIG
    files.ignore_range = True
    proxy.drop_after(1_500_000, when=is_get)
    data = await download(client, f"http://127.0.0.1:{proxy.port}/big.bin")
    assert len(data) == len(BIG) and sha256(data) == sha256(BIG)
    assert "range" in files.requests("GET")[1].headers  # asked; got a 200 and skipped


async def test_a_resource_changing_mid_download_fails_clearly(
    files: FileServer, client: HttpClient, proxy: FaultProxy
) -> None:
    files.files["/big.bin"] = BIG
    proxy.drop_after(2_000_000, when=is_get)
    url = f"http://127.0.0.1:{proxy.port}/big.bin"
    with pytest.raises(HttpError) as caught:
        async with aclosing(client.stream(url, chunk_size=256 * 1024)) as chunks:
            async for _ in chunks:
                files.files["/big.bin"] = os.urandom(len(BIG))  # a new version, same size
    assert caught.value.code == "SourceChanged"
    assert "ETag" in caught.value.message


async def test_not_found_and_denied_are_typed(files: FileServer, client: HttpClient) -> None:
    with pytest.raises(HttpNotFound) as caught:
        await download(client, f"{files.url}/missing.bin")
    assert isinstance(caught.value, SourceNotFound)
    assert (caught.value.code, caught.value.status_code) == ("HTTP404", 404)
    assert caught.value.message.endswith("HTTP 404: Not Found")
    assert client.retries == 0


def test_errors_are_classified_by_hub_code_then_status() -> None:
    assert type(http_error("m", code="RepoNotFound", status=401)) is HttpNotFound
    assert type(http_error("m", code="GatedRepo", status=403)) is HttpDenied
    assert type(http_error("m", code="HTTP410", status=410)) is HttpNotFound
    assert http_error("m", code="HTTP503", status=503).retryable
    assert not http_error("m", code="HTTP501", status=501).retryable
    assert not http_error("m", code="HTTP400", status=400).retryable
    assert HttpDenied.status_code == 403 and HttpNotFound.status_code == 404


async def test_probe_sizes_by_head_then_by_a_ranged_get(
    files: FileServer, client: HttpClient
) -> None:
    files.files.update({"/a.bin": b"12345", "/empty": b"", "/stream": BIG})
    files.chunked.add("/stream")
    assert (await client.probe(f"{files.url}/a.bin")).size == 5
    files.no_head = True  # 405: ask with GET Range: bytes=0-0 instead
    assert (await client.probe(f"{files.url}/a.bin")).size == 5
    assert (await client.probe(f"{files.url}/empty")).size == 0  # 416 bytes */0
    assert files.requests("GET")[0].headers["range"] == "bytes=0-0"
    unknown = await client.probe(f"{files.url}/stream")  # chunked, no length anywhere
    assert unknown.size == UNKNOWN and unknown.last_modified
    assert await download(client, f"{files.url}/stream") == BIG


async def test_abandoning_or_cancelling_a_download_leaks_nothing(
    files: FileServer, client: HttpClient
) -> None:
    files.files["/big.bin"] = BIG
    url = f"{files.url}/big.bin"
    async with aclosing(client.stream(url, chunk_size=64 * 1024)) as chunks:
        async for _ in chunks:
            break
    with trio.move_on_after(0.05) as scope:
        async with aclosing(client.stream(url, chunk_size=64 * 1024)) as chunks:
            async for _ in chunks:
                await trio.sleep(1)
    assert scope.cancelled_caught
    gc.collect()  # an unexhausted httpx generator would warn here (and fail the test)
    await trio.lowlevel.checkpoint()
    assert await download(client, url) == BIG  # the pool still works


async def test_redirects_drop_authorization_across_origins(
    files: FileServer, client: HttpClient
) -> None:
    other = FileServer({"/target.bin": b"moved"}).start()
    try:
        files.redirects["/here.bin"] = f"{other.url}/target.bin"
        files.redirects["/same.bin"] = "/local.bin"
        files.files["/local.bin"] = b"local"
        headers = {"Authorization": "Bearer secret"}
        async with aclosing(
            client.stream(f"{files.url}/here.bin", chunk_size=1024, headers=headers)
        ) as chunks:
            assert b"".join([c async for c in chunks]) == b"moved"
        async with aclosing(
            client.stream(f"{files.url}/same.bin", chunk_size=1024, headers=headers)
        ) as chunks:
            assert b"".join([c async for c in chunks]) == b"local"
        assert "authorization" not in other.requests("GET")[0].headers
        assert files.requests("GET")[-1].headers["authorization"] == "Bearer secret"
    finally:
        other.stop()


def test_messages_hide_credentials_and_queries() -> None:
    assert describe("https://user:pw@host:8443/a/b?X-Amz-Signature=s#f") == "https://host:8443/a/b"


class Streamed(httpx.AsyncByteStream):
    """A body httpx streams (``Response(content=...)`` would be read up front)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


async def test_backoff_runs_on_trio_time_and_honours_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def reply(status: int, body: bytes, **headers: str) -> httpx.Response:
        headers["Content-Length"] = str(len(body))
        return httpx.Response(status, headers=headers, stream=Streamed(body))

    answers = [
        reply(503, b"busy", **{"Retry-After": "5"}),
        reply(429, b"slow down", **{"Retry-After": "7"}),
        reply(200, b"finally"),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    start = trio.current_time()
    async with HttpClient(HttpSettings(), transport=httpx.MockTransport(handler)) as client:
        assert await download(client, "http://stub.invalid/x") == b"finally"
    assert client.retries == 2
    assert 12 <= trio.current_time() - start < 12 + 1 + 2  # Retry-After, plus jitter ≤ base·2ⁿ
