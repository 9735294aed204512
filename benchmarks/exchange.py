"""Worker exchange (seed 003): download and upload through ``/api/v1/transfers`` against
a plain file server, same run, same file.

    .venv/bin/python -m benchmarks.exchange [--size-mib 1024] [--runs 3]
    .venv/bin/python -m benchmarks.exchange --size-mib 5000 --runs 1   # the 5 GB run

A random file of ``--size-mib`` MiB is staged (encrypted at rest) by a real
``streamer serve`` on 127.0.0.1, then fetched with ``curl`` (decrypted on the fly)
and uploaded back with ``curl -T`` (encrypted as it arrives, then decrypted,
verified and renamed into place). The peer is Hypercorn serving the same file from
a bare ASGI app (GET streams it, PUT writes it and fsyncs), fetched and uploaded
with the same ``curl`` commands. Hot page cache. Prints MB/s, ratios and the
streamer process's peak RSS. Target (issue 6): >= 0.7x the plain server, RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import MB, best_of, peak_rss_mb, random_file, report, sh
from tests.e2e.node import Node

PLAIN_CHUNK = 1 << 20


def plain_app(root: str) -> Any:
    """A bare ASGI file server: GET /<name> streams the file, PUT /<name> stores the body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = os.path.join(root, scope["path"].lstrip("/"))
        if scope["method"] == "GET":
            size = os.path.getsize(path)  # noqa: ASYNC240 - a peer at its fastest: plain blocking I/O
            headers = [(b"content-length", str(size).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            with open(path, "rb") as f:  # noqa: ASYNC230
                while chunk := f.read(PLAIN_CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        with open(path + ".part", "wb") as f:  # noqa: ASYNC230
            more = True
            while more:
                message = await receive()
                f.write(message.get("body", b""))
                more = message.get("more_body", False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".part", path)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def serve_plain(root: str, port: int) -> None:
    import asyncio

    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    asyncio.run(hypercorn.asyncio.serve(plain_app(root), config))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="streamer-exchange-bench-", dir=args.dir))
    node = Node(home / "node").start()
    plain_root = home / "plain"
    plain_root.mkdir()
    port = free_port()
    plain = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.exchange", "--serve-plain", str(plain_root), str(port)]
    )
    try:
        size = args.size_mib << 20
        source = node.data / "source.bin"
        random_file(source, size)
        os.link(source, plain_root / "source.bin")
        sh(f"cat '{source}' > /dev/null")  # warm the page cache
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/source.bin", headers={"Range": "bytes=0-0"})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        print(f"file: {size / MB:.0f} MB random; streamer exchange vs plain Hypercorn, hot cache")

        with node.client() as client:
            started = time.perf_counter()
            made = client.post(
                "/api/v1/transfers",
                json={
                    "worker_id": "bench",
                    "direction": "upload",
                    "location_id": "local-0",
                    "path": "source.bin",
                },
                timeout=3600,
            ).json()
            report("stage (read + sha256 + encrypt + fsync)", size, time.perf_counter() - started)
        down_url = f"{node.url}{made['download_url']}?token={made['auth_token']}"
        plain_url = f"http://127.0.0.1:{port}/source.bin"
        peer = best_of(args.runs, lambda: curl(plain_url))
        report("download: plain Hypercorn + curl", size, peer)
        ours = best_of(args.runs, lambda: curl(down_url))
        report("download: exchange (decrypt on the fly)", size, ours, "plain", peer)

        peer_up = best_of(
            args.runs, lambda: curl("-T", str(source), f"http://127.0.0.1:{port}/upload.bin")
        )
        report("upload: plain Hypercorn PUT (+fsync)", size, peer_up)

        def upload() -> None:
            with node.client() as client:
                made = client.post(
                    "/api/v1/transfers",
                    json={
                        "worker_id": "bench",
                        "direction": "download",
                        "location_id": "local-0",
                        "path": "result.bin",
                        "file_size": size,
                    },
                ).json()
            curl(
                "-T",
                str(source),
                "-X",
                "POST",
                f"{node.url}{made['upload_url']}?token={made['auth_token']}",
            )

        ours_up = best_of(args.runs, upload)
        report(
            "upload: exchange (encrypt, decrypt+verify, rename)", size, ours_up, "plain", peer_up
        )
        assert node.proc is not None
        print(f"streamer peak RSS: {peak_rss_mb(node.proc.pid):.0f} MB")
    finally:
        plain.terminate()
        plain.wait(10)
        node.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-plain":
        serve_plain(sys.argv[2], int(sys.argv[3]))
    else:
        main()
