"""``api.ssl``: the node serves HTTPS with the configured certificate (Hypercorn)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.certs import self_signed

from .node import TOKEN, Node


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
