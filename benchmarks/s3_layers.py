"""Where a small S3 GET's CPU goes: each layer of streamer's client against raw sockets.

    .venv/bin/python -m benchmarks.s3_layers [--files 3000] [--runs 3] [--in-flight 64]

A tree of small objects is CPU-bound on this 2-core VM (``benchmarks.s3``), and
most of streamer's CPU per file is its GET. This script fetches ``--files``
4 KiB objects from ``rclone serve s3`` on 127.0.0.1, ``--in-flight`` at a time on
kept-alive connections, once per layer, and prints the client's CPU per GET
(``time.process_time``: every thread, kernel time included) and rclone's:

- ``raw sockets``: the peer, the floor for any trio client: pre-signed request
  bytes sent on a ``trio.SocketStream``, the response found by ``Content-Length``;
- ``http11``: the same pre-signed requests through ``http11.Connection``;
- ``pool``: through ``PooledTransport.exchange`` (connection reuse, ``Response``);
- ``S3Client``: ``get_response``: signing, retries, error mapping added;
- ``S3Storage``: ``read_declaring``, what a copy calls (the object's info parsed).

Each layer's ratio is raw sockets' CPU over its own (1.0: as cheap as the floor).
The whole copy of a tree (listing, local write, job bookkeeping) adds to the last.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import trio

from benchmarks._common import cpu_seconds
from benchmarks.s3 import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, Server, boto, s3_server
from streamer._storage import http11
from streamer._storage.httpexchange import Exchange, Response
from streamer._storage.httppool import PooledTransport
from streamer._storage.s3 import S3Storage
from streamer._storage.s3client import S3Client
from streamer._storage.s3settings import Credentials, S3Settings
from streamer._storage.s3signer import Signer

SIZE = 4096
RANGE = {"Range": "bytes=0-16777215"}  # what a copy's first GET asks (one part)
TIMEOUTS = {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": None}


@dataclass(frozen=True)
class Get:
    key: str
    target: str  # /bucket/key
    headers: dict[str, str]  # signed, as S3Client sends them
    wire: bytes  # the request's bytes


Fetch = Callable[[Get, int], Awaitable[None]]  # one GET by worker number


def signed_gets(server: Server, keys: list[str]) -> list[Get]:
    """Every GET signed up front (a signature holds for 15 minutes)."""
    netloc = server.endpoint.split("//", 1)[1]
    signer = Signer(Credentials(ACCESS_KEY, SECRET_KEY, None), REGION)
    gets = []
    for key in keys:
        target = f"/{BUCKET}/{key}"
        headers = signer.sign("GET", target, {**RANGE, "Host": netloc}, "UNSIGNED-PAYLOAD")
        headers |= {"Accept-Encoding": "identity", "User-Agent": "streamer-bench"}
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        gets.append(Get(key, target, headers, f"GET {target} HTTP/1.1\r\n{lines}\r\n".encode()))
    return gets


async def raw_reader(port: int, in_flight: int) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(in_flight)]
    buffers = [bytearray() for _ in streams]
    length = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")

    async def fetch(get: Get, worker: int) -> None:
        stream, buffer = streams[worker], buffers[worker]
        await stream.send_all(get.wire)
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0 and (found := length.search(buffer, 0, end)):
                total = end + 4 + int(found.group(1))
                if len(buffer) >= total:
                    assert total - end - 4 == SIZE
                    del buffer[:total]
                    return
            buffer += await stream.receive_some(65536)

    async def close() -> None:
        for stream in streams:
            await stream.aclose()

    return fetch, close


async def http11_reader(port: int, in_flight: int) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    connections = [
        http11.Connection(await trio.open_tcp_stream("127.0.0.1", port), keepalive_expiry=60)
        for _ in range(in_flight)
    ]

    async def fetch(get: Get, worker: int) -> None:
        connection = connections[worker]
        headers = [(name.encode(), value.encode()) for name, value in get.headers.items()]
        await connection.request(
            b"GET", get.target.encode(), headers, None, 0, read_timeout=60, write_timeout=60
        )
        received = 0
        while piece := await connection.next_piece():
            received += len(piece)
        assert received == SIZE
        connection.release()

    async def close() -> None:
        for connection in connections:
            await connection.aclose()

    return fetch, close


async def read_whole(response: Response) -> None:
    """The body into one buffer, as a copy receives a small object; then close."""
    body = memoryview(bytearray(SIZE + 1))  # one spare byte: room to read the end
    received = 0
    while count := await response.read_into(body[received:]):
        received += count
    assert received == SIZE
    await response.aclose()


def layers(
    server: Server, pool: PooledTransport, client: S3Client
) -> dict[str, Callable[[Get, int], Awaitable[None]]]:
    port = int(server.endpoint.rsplit(":", 1)[1])
    storage = S3Storage(BUCKET, client)

    async def through_pool(get: Get, worker: int) -> None:
        url = f"{server.endpoint}{get.target}"
        exchange = Exchange(
            "GET", url, "http", "127.0.0.1", port, get.target, get.headers, None, TIMEOUTS
        )
        await read_whole(await pool.exchange(exchange))

    async def through_client(get: Get, worker: int) -> None:
        await read_whole(await client.get_response(BUCKET, get.key, dict(RANGE)))

    async def through_storage(get: Get, worker: int) -> None:
        chunks = storage.read_declaring(get.key, chunk_size=1 << 20, declare=lambda _: None)
        assert sum([len(chunk) async for chunk in chunks]) == SIZE

    return {"pool": through_pool, "S3Client": through_client, "S3Storage": through_storage}


async def timed(
    fetch: Fetch, gets: list[Get], in_flight: int, server_pid: int
) -> tuple[float, float, float]:
    """(GETs/s, client CPU µs per GET, server CPU µs per GET) of one pass."""
    todo: Iterator[Get] = iter(gets)

    async def worker(number: int) -> None:
        for get in todo:
            await fetch(get, number)

    cpu, server, started = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for number in range(in_flight):
            nursery.start_soon(worker, number)
    elapsed = time.perf_counter() - started
    per_get = 1e6 / len(gets)
    return (
        len(gets) / elapsed,
        (time.process_time() - cpu) * per_get,
        (cpu_seconds(server_pid) - server) * per_get,
    )


async def measure(server: Server, gets: list[Get], args: argparse.Namespace) -> None:
    port = int(server.endpoint.rsplit(":", 1)[1])
    settings = S3Settings(
        endpoint_url=server.endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    async with S3Client(settings) as client, PooledTransport(max_connections=64) as pool:
        raw, close_raw = await raw_reader(port, args.in_flight)
        wire, close_wire = await http11_reader(port, args.in_flight)
        fetches = {"raw sockets": raw, "http11": wire, **layers(server, pool, client)}
        gc.collect()
        gc.freeze()  # as serve does once started
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(args.runs):  # rounds, so a slow phase of the host slows all
            for name, fetch in fetches.items():
                result = await timed(fetch, gets, args.in_flight, server.proc.pid)
                if name not in best or result[1] < best[name][1]:
                    best[name] = result
        await close_raw()
        await close_wire()
    floor = best["raw sockets"][1]
    print(f"{len(gets)} GETs of {SIZE} B, {args.in_flight} at a time; least CPU of {args.runs}:")
    for name, (rate, ours, theirs) in best.items():
        print(
            f"  {name:<12} {rate:7.0f} GET/s   client CPU {ours:5.0f} µs/GET   "
            f"ratio vs raw sockets {floor / ours:4.2f}x   rclone {theirs:5.0f} µs/GET"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="streamer-bench-s3-layers-"))
    try:
        with s3_server("rclone", home) as server:
            if server is None:
                return
            client = boto(server.endpoint)
            keys = [f"layers/d{i % 40:02}/f{i:05}.bin" for i in range(args.files)]

            def put(key: str) -> None:
                client.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(SIZE))

            with ThreadPoolExecutor(16) as seeding:
                list(seeding.map(put, keys))
            trio.run(measure, server, signed_gets(server, keys), args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
