"""Worker jobs (seed 004): one job through a real ``streamer worker run`` against the
same bytes moved by hand with ``curl``, same run, same file.

    .venv/bin/python -m benchmarks.worker_cycle [--size-mib 1024] [--runs 1]

A random file of ``--size-mib`` MiB is the source of a job on a real ``streamer
serve`` on 127.0.0.1 (its sha256 is computed when the job is created, before the
clock starts). Ours: ``streamer worker run --exec 'cp {input} {output}'
--max-jobs 1``, timed from process start to exit: claim, download (sha256
verified), ``cp``, hash + upload (the server verifies, fsyncs and renames the
result into place), clean up. The peer does the same by hand against Hypercorn
serving a bare ASGI app (GET streams the file, POST writes it and fsyncs):
``curl`` GET, ``cp``, ``curl -T`` POST. Hot page cache. Prints MB/s, the ratio
and the worker's and the server's peak RSS. Target (issue 7): >= 0.8x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import (
    MB,
    best_of,
    curl,
    node_beside_plain_server,
    peak_rss_mb,
    report,
)
from tests.e2e.node import Node

WORKER_TOKEN = "bench-worker-token-0123456789"


def create_job(node: Node) -> str:
    """A job on ``source.bin`` whose source hash is ready."""
    with node.client() as client:
        job = client.post(
            "/api/worker/jobs",
            json={
                "source": {"locationId": "local-0", "path": "source.bin"},
                "output": {"locationId": "local-0", "path": "out/result.bin"},
            },
        ).json()
        deadline = time.monotonic() + 600
        while client.get(f"/api/worker/jobs/{job['id']}").json()["source"]["sha256"] is None:
            assert time.monotonic() < deadline, "the source was never hashed"
            time.sleep(0.05)
    return str(job["id"])


def run_worker(node: Node, cache: Path) -> float:
    """One ``streamer worker run --max-jobs 1``; returns its peak RSS in MB."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamer", "worker", "run", "--server", node.url,
         "--token", WORKER_TOKEN, "--exec", "cp {input} {output}", "--cache", str(cache),
         "--max-jobs", "1", "--log-level", os.environ.get("BENCH_LOG", "WARNING")],
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the worker exited {process.returncode}")
    return usage.ru_maxrss * 1024 / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = parser.parse_args()

    size = args.size_mib << 20
    with node_beside_plain_server(
        "worker", size, directory=args.dir, config={"worker": {"tokens": [WORKER_TOKEN]}}
    ) as bench:
        node, home, plain_root = bench.node, bench.home, bench.plain_root
        print(f"file: {size / MB:.0f} MB random; worker cycle vs curl + cp + curl, hot cache")

        scratch = home / "peer"
        scratch.mkdir()
        plain_url = bench.plain_url

        def by_hand() -> None:
            subprocess.run(
                ["curl", "-sS", "-f", "-o", str(scratch / "source.bin"), f"{plain_url}/source.bin"],
                check=True,
            )
            shutil.copyfile(scratch / "source.bin", scratch / "output.bin")
            curl("-T", str(scratch / "output.bin"), "-X", "POST", f"{plain_url}/result.bin")

        def clean_peer() -> None:
            for name in ("source.bin", "output.bin"):
                (scratch / name).unlink(missing_ok=True)
            (plain_root / "result.bin").unlink(missing_ok=True)

        peer = best_of(args.runs, by_hand, before=clean_peer)
        report("curl GET + cp + curl POST (plain Hypercorn)", size, peer)

        rss: list[float] = []
        jobs: list[str] = []

        def prepare() -> None:
            shutil.rmtree(node.data / "out", ignore_errors=True)
            jobs.append(create_job(node))

        def cycle() -> None:
            rss.append(run_worker(node, home / "cache"))

        ours = best_of(args.runs, cycle, before=prepare)
        report("streamer worker run (claim, get, cp, post)", size, ours, "by hand", peer)
        with node.client() as client:
            done = client.get(f"/api/worker/jobs/{jobs[-1]}").json()
        assert done["status"] == "completed", done
        assert (node.data / "out/result.bin").stat().st_size == size
        assert node.proc is not None
        print(f"worker peak RSS: {max(rss):.0f} MB; server peak RSS: "
              f"{peak_rss_mb(node.proc.pid):.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
