"""Imports over https: httpcore's connections negotiate TLS through streamer's
TlsStream (``_storage/httpcoretls``), verified against the trusted CAs
(``SSL_CERT_FILE`` here), with failures that say why."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from streamer import _httpcoretls as httpcoretls
from streamer._storage.http import HttpClient
from streamer._storage.httperrors import HttpError
from streamer._tlsstream import TlsStream
from tests.support.certs import self_signed
from tests.support.hubstub import FileServer

from .conftest import FAST

BIG = os.urandom((3 << 20) + 4321)


@pytest.fixture
def cert_pair(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
def tls_files(cert_pair: tuple[Path, Path]) -> Iterator[FileServer]:
    server = FileServer().serve_tls(*cert_pair)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[TlsStream]:
    """Every TlsStream the import client makes."""
    streams: list[TlsStream] = []

    class Counted(TlsStream):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            streams.append(self)

    monkeypatch.setattr(httpcoretls, "TlsStream", Counted)
    return streams


async def _download(client: HttpClient, url: str) -> bytes:
    async with aclosing(client.stream(url, chunk_size=1 << 20)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_files_come_whole_over_tls_through_the_lean_stream(
    tls_files: FileServer,
    cert_pair: tuple[Path, Path],
    made: list[TlsStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_pair[0]))
    tls_files.files["/big.bin"] = BIG
    tls_files.files["/chunked.bin"] = BIG[:100_000]
    tls_files.chunked.add("/chunked.bin")
    tls_files.redirects["/moved"] = f"{tls_files.url}/big.bin"
    async with HttpClient(FAST) as client:
        assert await _download(client, f"{tls_files.url}/big.bin") == BIG
        assert await _download(client, f"{tls_files.url}/chunked.bin") == BIG[:100_000]
        assert await _download(client, f"{tls_files.url}/moved") == BIG
    assert made, "no TlsStream was made"
    assert made[0].ssl_object.version() in {"TLSv1.2", "TLSv1.3"}


async def test_an_untrusted_server_fails_with_the_reason(
    tls_files: FileServer, made: list[TlsStream]
) -> None:
    tls_files.files["/a.bin"] = b"payload"
    async with HttpClient(FAST) as client:
        with pytest.raises(HttpError) as caught:
            await _download(client, f"{tls_files.url}/a.bin")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert made  # refused by our stream's check, not a fallback's
    assert not tls_files.requests()  # nothing was sent
