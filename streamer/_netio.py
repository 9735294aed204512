"""Socket read sizes for bulk transfers, for both of our HTTP stacks.

hypercorn (server) and httpcore (under httpx, client) read 64 KiB per ``recv``;
every read then costs several Python frames (an h11 event, a timeout scope, a
body piece, a wake-up of the reader), which at loopback and LAN speeds costs
more CPU than the bytes themselves. Measured on this project's 2-core machine:
receiving an S3 object took 3.2 s of CPU per 512 MiB at 64 KiB and 1.2 s at
1 MiB; the worker client's download 2.1 → 1.4 s per 512 MiB at 256 KiB; the
node's exchange upload a sixth less at 256 KiB (server reads beyond that gained
nothing). A read returns what the socket holds, up to the limit, so a larger
limit costs nothing when less is there. Neither library offers a per-connection
setting: these set the module/class attributes they read at call time, once per
process, for every connection (all gain from it).
"""

from __future__ import annotations

CLIENT_READ_BYTES = 1 << 20
SERVER_READ_BYTES = 1 << 18


def tune_client_reads(read_bytes: int = CLIENT_READ_BYTES) -> None:
    """Let httpcore's HTTP/1.1 connections read up to ``read_bytes`` per call (idempotent,
    never lowers a larger setting)."""
    from httpcore._async.http11 import AsyncHTTP11Connection

    AsyncHTTP11Connection.READ_NUM_BYTES = max(AsyncHTTP11Connection.READ_NUM_BYTES, read_bytes)


def tune_server_reads(read_bytes: int = SERVER_READ_BYTES) -> None:
    """Make hypercorn read up to ``read_bytes`` per ``recv``; idempotent."""
    import hypercorn.trio.tcp_server

    hypercorn.trio.tcp_server.MAX_RECV = read_bytes
