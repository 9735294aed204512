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
import time

from benchmarks._common import (
    MB,
    best_of,
    curl,
    node_beside_plain_server,
    peak_rss_mb,
    report,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = parser.parse_args()

    size = args.size_mib << 20
    with node_beside_plain_server("exchange", size, directory=args.dir) as bench:
        node, source = bench.node, bench.source
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
        plain_url = f"{bench.plain_url}/source.bin"
        peer = best_of(args.runs, lambda: curl(plain_url))
        report("download: plain Hypercorn + curl", size, peer)
        ours = best_of(args.runs, lambda: curl(down_url))
        report("download: exchange (decrypt on the fly)", size, ours, "plain", peer)

        peer_up = best_of(
            args.runs, lambda: curl("-T", str(source), f"{bench.plain_url}/upload.bin")
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
            "upload: exchange (staged encrypted + written in place, verified, renamed)",
            size,
            ours_up,
            "plain",
            peer_up,
        )
        assert node.proc is not None
        print(f"streamer peak RSS: {peak_rss_mb(node.proc.pid):.0f} MB")


if __name__ == "__main__":
    main()
