"""Shared helpers for the benchmark scripts: timing, peers, RSS, report lines."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

MB = 1_000_000


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
