"""Shared helpers for the benchmark scripts: timing, peers, RSS, report lines."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.node import Node

MB = 1_000_000
PLAIN_CHUNK = 1 << 20


def best_of(
    runs: int, action: Callable[[], object], before: Callable[[], object] = lambda: None
) -> float:
    """Best wall time of ``runs`` calls of ``action`` (``before`` runs untimed first)."""
    times = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(seconds: float = 1.0) -> None:
    """Write back every dirty page (``sync``), then wait: a run starts on a quiet disk
    instead of paying for the writeback of the one before."""
    os.sync()
    time.sleep(seconds)


def sh(command: str, cwd: Path | None = None) -> None:
    subprocess.run(["bash", "-c", command], check=True, cwd=cwd)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError("VmHWM not found")


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def report(
    name: str, size: int, seconds: float, peer: str | None = None, peer_s: float = 0
) -> None:
    rate = size / seconds / MB
    line = f"{name:<44} {rate:9.0f} MB/s  {seconds:7.2f} s"
    if peer:
        line += f"   ratio vs {peer}: {peer_s / seconds:5.2f}x"
    print(line, flush=True)


def drop_written(path: Path) -> None:
    sh(f"rm -rf '{path}' && sync")


def random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, 8 << 20)
            f.write(os.urandom(n))
            remaining -= n


# -- the plain file server peer ------------------------------------------------------


def plain_app(root: str) -> Any:
    """A bare ASGI file server: GET /<name> streams the file, any other method stores
    the body as /<name> (written, fsynced, renamed)."""

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_plain_server(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Hypercorn serving :func:`plain_app` over ``root`` in a process; ready on return.
    Terminate the process when done."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._common", "--serve-plain", str(root), str(port)]
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("the plain server did not start")


@dataclass
class SameFile:
    """A real ``streamer serve`` and the plain server, both holding ``source.bin``."""

    home: Path
    node: Node
    plain_root: Path
    plain_url: str  # base URL of the plain server
    plain_pid: int
    source: Path  # the node's copy (the plain server's is a hard link to it)
    size: int


@contextmanager
def node_beside_plain_server(
    label: str, size: int, *, directory: str | None, config: dict[str, Any] | None = None
) -> Iterator[SameFile]:
    """A scratch directory with a node (``config`` merged over the defaults) and the
    plain server (:func:`plain_app`) serving one random ``source.bin`` of ``size`` bytes,
    its pages hot; everything is stopped and removed on exit."""
    home = Path(tempfile.mkdtemp(prefix=f"streamer-{label}-bench-", dir=directory))
    node = Node(home / "node", config=config).start()
    plain_root = home / "plain"
    plain_root.mkdir()
    plain, port = start_plain_server(plain_root)
    try:
        source = node.data / "source.bin"
        random_file(source, size)
        os.link(source, plain_root / "source.bin")
        sh(f"cat '{source}' > /dev/null")  # warm the page cache
        yield SameFile(home, node, plain_root, f"http://127.0.0.1:{port}", plain.pid, source, size)
    finally:
        plain.terminate()
        plain.wait(10)
        node.stop()
        shutil.rmtree(home, ignore_errors=True)


def curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", *args], check=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-plain":
        serve_plain(sys.argv[2], int(sys.argv[3]))
