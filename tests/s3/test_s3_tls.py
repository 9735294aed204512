"""S3 over https: the endpoint's certificate is checked against ``s3.ca_bundle`` (or
``AWS_CA_BUNDLE``), else the public CAs. A stub S3 speaks TLS on 127.0.0.1 with a
self-signed certificate."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streamer._errors import ConfigError
from streamer._storage.s3client import S3Client
from streamer._storage.s3errors import S3Error
from streamer._storage.s3settings import S3Settings
from tests.support.certs import self_signed
from tests.support.threadserver import serving


class _Buckets(BaseHTTPRequestHandler):
    """Every bucket exists (HEAD 200); that is all the tests ask."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_s3(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(endpoint, cert.pem)`` of a TLS stub S3."""
    cert, key = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Buckets)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server) as srv:
        yield f"https://127.0.0.1:{srv.server_address[1]}", cert


def _settings(endpoint: str, **overrides: object) -> S3Settings:
    base: dict[str, object] = {
        "endpoint_url": endpoint,
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "secret",
        "max_retries": 0,
    }
    return S3Settings(**(base | overrides))  # type: ignore[arg-type]


async def test_the_ca_bundle_named_is_trusted(tls_s3: tuple[str, Path]) -> None:
    endpoint, cert = tls_s3
    async with S3Client(_settings(endpoint, ca_bundle=str(cert))) as client:
        await client.head_bucket("bucket")


async def test_aws_ca_bundle_is_taken_from_the_environment(
    tls_s3: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, cert = tls_s3
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    async with S3Client(_settings(endpoint)) as client:
        await client.head_bucket("bucket")


async def test_an_untrusted_certificate_is_refused(
    tls_s3: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, _ = tls_s3
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    async with S3Client(_settings(endpoint)) as client:
        with pytest.raises(S3Error, match="CERTIFICATE_VERIFY_FAILED") as caught:
            await client.head_bucket("bucket")
    assert caught.value.code == "ConnectionError"


def test_a_ca_bundle_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    for bundle in (tmp_path / "missing.pem", tmp_path / "not-a-cert.pem"):
        if bundle.name == "not-a-cert.pem":
            bundle.write_text("hello")
        with pytest.raises(ConfigError, match="ca_bundle"):
            S3Client(_settings("https://127.0.0.1:1", ca_bundle=str(bundle)))


def test_plain_http_needs_no_tls_context() -> None:
    assert _settings("http://127.0.0.1:1", ca_bundle="/nonexistent").tls_context() is None
