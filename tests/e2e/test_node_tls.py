"""``api.ssl``: the node serves HTTPS with the configured certificate (Hypercorn)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.certs import self_signed

from .cluster import new_server, server_tree, snapshot, start_cluster
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


def test_a_push_to_an_https_destination_verifies_it_and_lands(tmp_path: Path) -> None:
    """The source's archive push speaks TLS to the destination (through streamer's
    lean TLS stream), trusting the destination's certificate by ``SSL_CERT_FILE``."""
    cluster = start_cluster(tmp_path, tls=True)
    try:
        assert cluster.transfer_url().startswith("https://")
        server = new_server()
        tree = server_tree(cluster.source_servers / server, random_bytes=2 << 20)
        response = cluster.push(server)
        assert response.status_code == 202, response.text
        [call] = cluster.panel.wait(server, settle=0.3)
        assert call.outcome == "success"
        assert snapshot(cluster.destination_servers / server) == snapshot(tree)
        assert cluster.source.wait(response.json()["jobId"])["status"] == "completed"
    finally:
        cluster.stop()


def test_an_upload_over_https_lands_whole(tls_node: tuple[Node, Path]) -> None:
    """A body of many TLS records through the server's TLS stream, twice on one connection."""
    node, cert = tls_node
    context = ssl.create_default_context(cafile=str(cert))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(verify=context, headers=headers, timeout=60) as client:
        for name in ("a.bin", "b.bin"):
            body = os.urandom((5 << 20) + 3)
            digest = hashlib.sha256(body).hexdigest()
            response = client.put(
                f"{node.url}/api/upload/local-0/{name}",
                content=body,
                headers={"X-Checksum-Sha256": digest},
            )
            assert response.status_code == 201, response.text
            assert response.json()["sha256"] == digest
            assert (node.data / name).read_bytes() == body


def _alpn(url: str, cert: Path) -> str | None:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.selected_alpn_protocol()


def test_http2_is_offered_only_when_configured(tmp_path: Path, tls_node: tuple[Node, Path]) -> None:
    node, cert = tls_node
    assert _alpn(node.url, cert) == "http/1.1"  # a client preferring h2 gets HTTP/1.1
    (tmp_path / "h2").mkdir()
    cert2, key2 = self_signed(tmp_path / "h2")
    ssl_config = {"enabled": True, "cert": str(cert2), "key": str(key2), "http2": True}
    h2_node = Node(tmp_path / "h2home", {"api": {"ssl": ssl_config}}).start()
    try:
        assert _alpn(h2_node.url, cert2) == "h2"
    finally:
        h2_node.kill()
