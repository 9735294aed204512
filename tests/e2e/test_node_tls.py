"""``api.ssl``: the node serves HTTPS with the configured certificate (Hypercorn)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .node import TOKEN, Node


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[Node, Path]]:
    cert, key = self_signed(tmp_path)
    node = Node(
        tmp_path / "home", {"api": {"ssl": {"enabled": True, "cert": str(cert), "key": str(key)}}}
    )
    yield node.start(), cert
    node.kill()


def test_serves_https_with_the_configured_certificate(tls_node: tuple[Node, Path]) -> None:
    node, cert = tls_node
    assert node.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=context, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get(f"{node.url}/healthz").json() == {"status": "ok"}
        assert client.get(f"{node.url}/api/settings/bandwidth").status_code == 200
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:  # not a public CA
        client.get(f"{node.url}/healthz")
