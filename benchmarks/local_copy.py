"""local → local through the API (POST to the SSE ``complete`` event) against cp.

    .venv/bin/python -m benchmarks.local_copy [--size-mib 1024] [--files 2000] [--runs 3]

Peers, same run, same files, hot page cache: ``cp`` + ``sync FILE`` (durable, as
streamer is: it fsyncs before the atomic rename), plain ``cp`` (page cache only)
and ``cp`` + ``sha256sum`` (copy and hash, as streamer does). Prints MB/s, ratios
and the server's peak RSS. Target (issue 3): at least 0.9x durable cp for the big file,
RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from functools import partial
from pathlib import Path

from benchmarks._common import (
    best_of,
    drop_written,
    peak_rss_mb,
    random_file,
    report,
    sh,
    tree_bytes,
)
from tests.e2e.node import Node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    node = Node(home)
    src = node.data / "src"
    try:
        big = args.size_mib << 20
        random_file(src / "big/big.bin", big)
        per_file = big // args.files
        for i in range(args.files):
            random_file(src / f"tree/d{i % 40:02}/f{i:05}.bin", per_file)
        tree_size = tree_bytes(src / "tree")
        sh("sync")
        node.start()
        assert node.proc is not None
        dst = node.data / "dst"
        print(f"big file {big / 1e6:.0f} MB; tree {args.files} files, {tree_size / 1e6:.0f} MB")

        # Every run lands in a fresh directory under dst: a tree written where one was
        # just deleted pays ext4's scan past recently freed inodes (``benchmarks.s3``'s
        # ``Landing``), and most for whoever runs last (streamer). Trees stay until the
        # end; a big file (one inode) is deleted before the next run, bounding the disk.
        landings: list[Path] = []

        def next_landing(keep_last: bool) -> None:
            if landings and not keep_last:
                drop_written(landings[-1])
            landings.append(dst / f"run-{len(landings)}")
            landings[-1].mkdir(parents=True)
            sh("sync")

        def through_streamer(item: str, kind: str) -> None:
            where = f"/{landings[-1].relative_to(node.data).as_posix()}"
            job_id = node.transfer([{"path": item, "type": kind}], destination=where)["jobId"]
            final = list(node.events(job_id))[-1]
            assert final["type"] == "complete", final

        def shell(template: str) -> None:
            sh(template.format(dst=landings[-1]))

        cases = [
            ("big file", src / "big/big.bin", big, "big/big.bin", "file", "cp"),
            ("tree", src / "tree", tree_size, "tree", "directory", "cp -r"),
        ]

        for name, path, size, item, kind, cp in cases:
            clean = partial(next_landing, kind == "directory")
            copy = f"{cp} '{path}' '{{dst}}/{path.name}'"
            hash_all = "find '{dst}' -type f -print0 | xargs -0 sha256sum > /dev/null"
            plain = best_of(args.runs, partial(shell, copy), clean)
            durable = best_of(args.runs, partial(shell, f"{copy} && sync"), clean)
            hashed = best_of(args.runs, partial(shell, f"{copy} && {hash_all} && sync"), clean)
            ours = best_of(args.runs, partial(through_streamer, item, kind), clean)
            report(f"{name}: {cp} (page cache only)", size, plain)
            report(f"{name}: {cp} + sync (durable)", size, durable)
            report(f"{name}: {cp} + sha256sum + sync", size, hashed)
            report(f"{name}: streamer (hash + fsync + rename)", size, ours, f"{cp}+sync", durable)
            print(
                f"{'':<44} ratio vs {cp} page cache only: {plain / ours:5.2f}x"
                f"   streamer RSS so far {peak_rss_mb(node.proc.pid):.0f} MB",
                flush=True,
            )
            if kind == "file":
                drop_written(landings[-1])
        print(f"streamer peak RSS: {peak_rss_mb(node.proc.pid):.0f} MB")
    finally:
        if node.proc is not None:
            node.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
