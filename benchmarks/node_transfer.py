"""Node-to-node server transfer (seed 002) against tar pipelines, same run, same tree.

    .venv/bin/python -m benchmarks.node_transfer [--size-mib 1024] [--files 2000] [--runs 3]
        [--formats tar.gz,tar.zst] [--no-fsync] [--tls]

A tree of ``--files`` files (half random, half compressible text) totalling about
``--size-mib`` MiB is pushed from a source ``streamer serve`` to a destination
``streamer serve`` on 127.0.0.1, timed from the Panel's ``POST
/api/servers/:uuid/transfer`` to the destination's success callback at a Panel
stub, as tar.gz and tar.zst. Peers: ``tar c | gzip -1 | gzip -d | tar x`` and
``tar c | zstd -1 | zstd -d | tar x`` on the same tree, plain (page cache only) and
followed by ``sync`` (streamer fsyncs every file before it commits). Hot page
cache on the source side. With ``--tls`` the destination serves https (a
self-signed certificate the source trusts): what a real deployment's push costs.
Prints MB/s (of tree bytes), ratios and both servers' peak RSS and CPU per push.
Target (issue 5): tar.zst >= 0.8x the zstd pipeline; RSS flat.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    MB,
    best_of,
    cpu_seconds,
    peak_rss_mb,
    random_file,
    report,
    sh,
    tree_bytes,
)
from tests.e2e.cluster import start_cluster

WORDS = b"the quick brown fox jumps over lazy dog server level chunk entity player world".split()


def text_block(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        line = b"[%08d] " % rng.randrange(10**8) + b" ".join(rng.choices(WORDS, k=12)) + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


def build_tree(root: Path, total: int, files: int) -> None:
    per_file = total // files
    text = text_block(8 << 20, 1)
    for i in range(files):
        path = root / f"d{i % 50:02}" / f"s{i % 7}" / f"f{i:05}.dat"
        if i % 2:
            random_file(path, per_file)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            offset = (i * 7919) % (len(text) - per_file) if per_file < len(text) else 0
            data = (text * (per_file // len(text) + 1))[offset : offset + per_file]
            path.write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--formats", default="tar.gz,tar.zst", help="which to run, comma-separated")
    parser.add_argument(
        "--no-fsync", action="store_true", help="destination with fsync_before_commit: false"
    )
    parser.add_argument("--tls", action="store_true", help="push to an https destination")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="streamer-node-bench-", dir=args.dir))
    cluster = start_cluster(
        home, destination={"fsync_before_commit": not args.no_fsync}, tls=args.tls
    )
    try:
        server = "0b5d6c2e-7a44-4f0e-9d1c-3e2a1b0c9d8e"
        src = cluster.source_servers / server
        build_tree(src, args.size_mib << 20, args.files)
        size = tree_bytes(src)
        dst = cluster.destination_servers / server
        peer_dst = home / "peer-dst"
        sh("sync")
        sh(f"tar -C '{src}' -cf - . > /dev/null")  # warm the page cache
        print(f"tree: {args.files} files, {size / MB:.0f} MB; streamer vs tar pipelines, hot cache")

        def clear() -> None:
            for path in (dst, peer_dst):
                shutil.rmtree(path, ignore_errors=True)
            sh("sync")

        assert cluster.source.proc is not None and cluster.destination.proc is not None
        pids = {"source": cluster.source.proc.pid, "destination": cluster.destination.proc.pid}
        cpu: dict[str, dict[str, float]] = {}  # format -> each node's CPU seconds, all pushes
        pushes: dict[str, int] = {}

        def push(fmt: str) -> None:
            before = len(cluster.panel.for_server(server))
            used = {side: cpu_seconds(pid) for side, pid in pids.items()}
            response = cluster.push(server, archive_format=fmt)
            assert response.status_code == 202, response.text
            calls = cluster.panel.wait(server, count=before + 1, timeout=3600)
            assert calls[-1].outcome == "success", calls[-1]
            totals = cpu.setdefault(fmt, dict.fromkeys(pids, 0.0))
            for side, pid in pids.items():
                totals[side] += cpu_seconds(pid) - used[side]
            pushes[fmt] = pushes.get(fmt, 0) + 1

        def pipeline(compress: str, durable: bool) -> None:
            peer_dst.mkdir(parents=True, exist_ok=True)
            tail = " && sync" if durable else ""
            sh(
                f"tar -C '{src}' -cf - . | {compress} -1 -c | {compress} -d -c "
                f"| tar -C '{peer_dst}' -xf -{tail}"
            )

        cases = []
        if "tar.gz" in args.formats:
            cases += [
                ("tar | gzip -1 | gzip -d | tar x", lambda: pipeline("gzip", False)),
                ("  ... && sync", lambda: pipeline("gzip", True)),
                ("streamer node push tar.gz", lambda: push("tar.gz")),
            ]
        if "tar.zst" in args.formats:
            cases += [
                ("tar | zstd -1 | zstd -d | tar x", lambda: pipeline("zstd", False)),
                ("  ... && sync", lambda: pipeline("zstd", True)),
                ("streamer node push tar.zst", lambda: push("tar.zst")),
            ]
        results: dict[str, float] = {}
        for name, action in cases:
            key = name if not name.startswith("  ") else f"{list(results)[-1]} + sync"
            results[key] = best_of(args.runs, action, clear)
            peer = None
            if name.startswith("streamer"):
                peer = "zstd pipeline" if "zst" in name else "gzip pipeline"
                peer_key = (
                    "tar | zstd -1 | zstd -d | tar x"
                    if "zst" in name
                    else "tar | gzip -1 | gzip -d | tar x"
                )
                report(name, size, results[key], peer, results[peer_key])
                report("", size, results[key], peer + " + sync", results[peer_key + " + sync"])
                fmt = name.rsplit(" ", 1)[1]
                per_push = {side: seconds / pushes[fmt] for side, seconds in cpu[fmt].items()}
                print(
                    f"{'':<44} CPU per push: source {per_push['source']:.2f} s, "
                    f"destination {per_push['destination']:.2f} s",
                    flush=True,
                )
            else:
                report(key, size, results[key])
        print(
            f"peak RSS: source {peak_rss_mb(cluster.source.proc.pid):.0f} MB, "
            f"destination {peak_rss_mb(cluster.destination.proc.pid):.0f} MB "
            f"(tree {size / MB:.0f} MB)"
        )
    finally:
        cluster.stop()
        time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)
        if os.path.exists(home):
            print(f"left {home}")


if __name__ == "__main__":
    main()
