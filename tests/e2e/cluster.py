"""Two ``streamer serve`` nodes (source, destination) and a Panel stub, for node transfers."""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.certs import self_signed

from .node import Node
from .panel_stub import PanelStub

TOKEN_ID = "node-token-id-e2e"
SOURCE_KEY = "source-node-token-" + "s" * 40
DESTINATION_KEY = "destination-node-token-" + "d" * 40
MTIME = 1_600_000_000

Snapshot = dict[str, tuple[Any, ...]]


def node_config(
    panel: PanelStub, key: str, home: Path, *, hooks: dict[str, Any] | None = None, **transfers: Any
) -> dict[str, Any]:
    return {
        "panel": {"url": panel.url, "token_id": TOKEN_ID, "token": key},
        "servers": {"root": str(home / "servers"), "hooks": hooks or {}},
        "transfers": transfers,
    }


@dataclass
class Cluster:
    panel: PanelStub
    source: Node
    destination: Node

    @property
    def source_servers(self) -> Path:
        return self.source.home / "servers"

    @property
    def destination_servers(self) -> Path:
        return self.destination.home / "servers"

    def transfer_url(self) -> str:
        return f"{self.destination.url}/api/transfers"

    def jwt(self, sub: str | None, **kwargs: Any) -> str:
        """A fresh transfer token for the destination (unique ``jti``)."""
        kwargs.setdefault("jti", uuid.uuid4().hex)
        return self.panel.token(sub, DESTINATION_KEY, **kwargs)

    def push(
        self,
        server: str,
        *,
        url: str | None = None,
        token: str | None = None,
        archive_format: str | None = None,
    ) -> httpx.Response:
        """The Panel's call to the source (authenticated with the source's node token)."""
        body: dict[str, Any] = {
            "url": url or self.transfer_url(),
            "token": token or f"Bearer {self.jwt(server)}",
            "server": {"uuid": server, "start_on_completion": False},
        }
        if archive_format:
            body["archive_format"] = archive_format
        with self.source.client(token=SOURCE_KEY) as client:
            return client.post(f"/api/servers/{server}/transfer", json=body)

    def stop(self) -> None:
        for node in (self.source, self.destination):
            if node.alive:
                node.kill()
        self.panel.stop()


def start_cluster(
    root: Path,
    *,
    source: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
    tls: bool = False,
) -> Cluster:
    """A Panel stub and two started nodes under ``root``; ``source``/``destination``
    are their ``transfers`` settings. With ``tls`` the destination serves https with
    a self-signed certificate (in ``root``) that the source trusts by ``SSL_CERT_FILE``."""
    panel = PanelStub().start()
    src_home, dst_home = root / "source", root / "destination"
    src_config = node_config(panel, SOURCE_KEY, src_home, **(source or {}))
    dst_config = node_config(panel, DESTINATION_KEY, dst_home, **(destination or {}))
    src_env: dict[str, str] = {}
    if tls:
        cert, key = self_signed(root)
        dst_config["api"] = {"ssl": {"enabled": True, "cert": str(cert), "key": str(key)}}
        src_env["SSL_CERT_FILE"] = str(cert)
    src = Node(src_home, src_config, env=src_env)
    dst = Node(dst_home, dst_config)
    try:
        return Cluster(panel, src.start(), dst.start())
    except BaseException:
        for node in (src, dst):
            if node.alive:
                node.kill()
        panel.stop()
        raise


def new_server() -> str:
    return str(uuid.uuid4())


# -- trees ---------------------------------------------------------------------


def server_tree(root: Path, *, random_bytes: int = 256 * 1024) -> Path:
    """A small game-server-like tree: compressible and random content, modes, mtimes,
    empty directories and symlinks nested inside the tree."""
    files = {
        "server.properties": b"motd=hello\nmax-players=20\n",
        "start.sh": b"#!/bin/sh\nexec java -jar server.jar\n",
        "world/level.dat": bytes(100_000),
        "world/region/r.0.0.mca": os.urandom(random_bytes),
        "plugins/essentials/config.yml": b"spawn: true\n" * 2000,
        "logs/latest.log": b"".join(b"[%05d] line\n" % i for i in range(5000)),
        "unicode/\u00e9t\u00e9 \u2603.txt": b"snow",
        "deep/" + "/".join(f"d{i}" for i in range(12)) + "/leaf.txt": b"deep",
        "empty.bin": b"",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "cache/empty").mkdir(parents=True)
    (root / "world/datapacks").mkdir()
    os.symlink("level.dat", root / "world/level-link")
    os.symlink("../../server.properties", root / "plugins/essentials/props")
    os.symlink("world/region", root / "region-dir")
    os.symlink("missing-target", root / "dangling")
    os.chmod(root / "start.sh", 0o755)
    os.chmod(root / "server.properties", 0o600)
    os.chmod(root / "plugins", 0o750)
    set_mtimes(root)
    return root


def set_mtimes(root: Path) -> None:
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for i, path in enumerate(paths):
        os.utime(path, (MTIME + i, MTIME + i), follow_symlinks=False)


def snapshot(root: Path) -> Snapshot:
    """Every entry below ``root``: type, mode, whole-second mtime, content hash or target."""
    result: Snapshot = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        mtime = int(st.st_mtime)
        if stat.S_ISLNK(st.st_mode):
            result[rel] = ("link", os.readlink(path), mtime)
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", stat.S_IMODE(st.st_mode), mtime)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[rel] = ("file", stat.S_IMODE(st.st_mode), mtime, digest)
    return result


def leftovers(root: Path) -> list[str]:
    """Staging or parked trees in a servers root."""
    if not root.exists():
        return []
    return [p.name for p in root.iterdir() if p.name.startswith(".")]
