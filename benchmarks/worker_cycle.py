"""Worker jobs (seed 004): one job through a real ``streamer worker run`` against the
same bytes moved by hand with ``curl``, same run, same file.

    .venv/bin/python -m benchmarks.worker_cycle [--size-mib 1024] [--runs 3] [--phases]

A random file of ``--size-mib`` MiB is the source of a job on a real ``streamer
serve`` on 127.0.0.1 (its sha256 is computed when the job is created, before the
clock starts). Ours: ``streamer worker run --exec 'cp {input} {output}'
--max-jobs 1``, timed from process start to exit: claim, download (sha256
verified), ``cp``, upload (the server hashes, verifies, fsyncs and renames the
result into place), clean up. The peer does the same by hand against Hypercorn
serving a bare ASGI app (GET streams the file, POST writes it and fsyncs, as
ours does): ``curl`` GET, ``cp``, ``curl -T`` POST, ``rm`` of its two local files (the
worker removes its cache directory). Neither side fsyncs its download or its
``cp``. Hot page cache.

The two sides alternate, run after run, and every run starts after a ``sync``
and a pause, so the writeback of earlier runs' gigabytes lands on neither.
Prints the best and the median wall time of each side, their ratios, the CPU
seconds (user + system) of each side's processes per run, and the worker's and
the server's peak RSS. ``--phases`` prints the worker's log lines with their
time into the run. Target (issue 7): >= 0.8x.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import (
    MB,
    cpu_seconds,
    curl,
    node_beside_plain_server,
    peak_rss_mb,
    settle,
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


@dataclass
class Side:
    """Wall and CPU seconds of one side's runs."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def line(self, name: str, size: int) -> str:
        best, middle = min(self.walls), statistics.median(self.walls)
        return (
            f"{name:<44} {size / best / MB:6.0f} MB/s  best {best:6.2f} s  "
            f"median {middle:6.2f} s  CPU {statistics.median(self.cpus):5.2f} s"
        )


def run_worker(node: Node, cache: Path, phases: bool) -> tuple[float, float]:
    """One ``streamer worker run --max-jobs 1``; its CPU seconds and peak RSS in MB."""
    level = "INFO" if phases else os.environ.get("BENCH_LOG", "WARNING")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamer", "worker", "run", "--server", node.url,
         "--token", WORKER_TOKEN, "--exec", "cp {input} {output}", "--cache", str(cache),
         "--max-jobs", "1", "--log-level", level],
        stderr=subprocess.PIPE if phases else None,
    )  # fmt: skip
    if process.stderr is not None:
        for line in process.stderr:
            print(f"  {time.perf_counter() - started:6.2f} s  {line.decode().rstrip()[24:]}")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the worker exited {process.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / MB


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phases", action="store_true", help="print the worker's log lines")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = parser.parse_args()

    size = args.size_mib << 20
    with node_beside_plain_server(
        "worker", size, directory=args.dir, config={"worker": {"tokens": [WORKER_TOKEN]}}
    ) as bench:
        node, home, plain_root = bench.node, bench.home, bench.plain_root
        assert node.proc is not None
        print(f"file: {size / MB:.0f} MB random; worker cycle vs curl + cp + curl, hot cache, "
              f"{args.runs} runs each, alternating, sync before each")  # fmt: skip
        scratch = home / "peer"
        scratch.mkdir()
        plain_url = bench.plain_url
        peer, ours = Side(), Side()
        rss: list[float] = []
        job = ""

        def by_hand() -> None:
            subprocess.run(
                ["curl", "-sS", "-f", "-o", str(scratch / "source.bin"), f"{plain_url}/source.bin"],
                check=True,
            )
            subprocess.run(
                ["cp", str(scratch / "source.bin"), str(scratch / "output.bin")], check=True
            )
            curl("-T", str(scratch / "output.bin"), "-X", "POST", f"{plain_url}/result.bin")
            subprocess.run(
                ["rm", str(scratch / "source.bin"), str(scratch / "output.bin")], check=True
            )

        for _ in range(args.runs):
            for name in ("source.bin", "output.bin"):
                (scratch / name).unlink(missing_ok=True)
            (plain_root / "result.bin").unlink(missing_ok=True)
            settle()
            cpu = children_cpu() + cpu_seconds(bench.plain_pid)
            started = time.perf_counter()
            by_hand()
            peer.walls.append(time.perf_counter() - started)
            peer.cpus.append(children_cpu() + cpu_seconds(bench.plain_pid) - cpu)

            shutil.rmtree(node.data / "out", ignore_errors=True)
            job = create_job(node)
            settle()
            server_cpu = cpu_seconds(node.proc.pid)
            started = time.perf_counter()
            worker_cpu, peak = run_worker(node, home / "cache", args.phases)
            ours.walls.append(time.perf_counter() - started)
            ours.cpus.append(worker_cpu + cpu_seconds(node.proc.pid) - server_cpu)
            rss.append(peak)
            print(f"  run: peer {peer.walls[-1]:5.2f} s, ours {ours.walls[-1]:5.2f} s "
                  f"(worker CPU {worker_cpu:4.2f} s, server CPU "
                  f"{ours.cpus[-1] - worker_cpu:4.2f} s)", flush=True)  # fmt: skip

        print(peer.line("curl GET + cp + curl POST (plain Hypercorn)", size))
        print(ours.line("streamer worker run (claim, get, cp, post)", size))
        best = min(peer.walls) / min(ours.walls)
        middle = statistics.median(peer.walls) / statistics.median(ours.walls)
        print(f"ratio vs by hand: best {best:4.2f}x, median {middle:4.2f}x (target >= 0.8x)")
        with node.client() as client:
            done = client.get(f"/api/worker/jobs/{job}").json()
        assert done["status"] == "completed", done
        assert (node.data / "out/result.bin").stat().st_size == size
        print(f"worker peak RSS: {max(rss):.0f} MB; server peak RSS: "
              f"{peak_rss_mb(node.proc.pid):.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
