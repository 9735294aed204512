"""Socket read sizes for bulk transfers, for both of our HTTP stacks.

hypercorn (server) and httpcore (client) read 64 KiB per ``recv``; every read then
becomes an h11 event, a body piece and a wake-up of the reader, which at loopback
and LAN speeds costs more CPU than the bytes themselves. Reading 256 KiB at a time
cut the worker client's CPU per downloaded GiB from 4.0 to 2.6 s and the node's
per uploaded GiB by a sixth (measured on this project's 2-core machine); larger
reads gained nothing more. Both libraries read these as module/class attributes at
call time, so setting them once per process is enough.
"""

from __future__ import annotations

READ_BYTES = 1 << 18


def tune_client_reads(read_bytes: int = READ_BYTES) -> None:
    """Make httpcore (under httpx) read ``read_bytes`` per ``recv``; idempotent."""
    from httpcore._async import http11

    http11.AsyncHTTP11Connection.READ_NUM_BYTES = read_bytes


def tune_server_reads(read_bytes: int = READ_BYTES) -> None:
    """Make hypercorn read ``read_bytes`` per ``recv``; idempotent."""
    import hypercorn.trio.tcp_server

    hypercorn.trio.tcp_server.MAX_RECV = read_bytes
