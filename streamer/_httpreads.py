"""Larger socket reads for httpx's HTTP/1.1 connections (httpcore).

httpcore reads a response at most ``READ_NUM_BYTES`` (64 KiB) per call, and
each read costs several Python frames (a timeout scope, h11 buffer
bookkeeping, a trio checkpoint): receiving an S3 object at hundreds of MB/s
spent most of its CPU there (measured: 3.2 s of CPU per 512 MiB downloaded
from a local S3 server at 64 KiB, 1.2 s at 1 MiB). A read returns what the
socket holds, up to the limit, so a larger limit costs nothing when less is
there. httpcore offers no per-client setting for it: this sets the class
attribute, for every httpx client of the process (all gain from it).
"""

from __future__ import annotations

from httpcore._async.http11 import AsyncHTTP11Connection

READ_BYTES = 1 << 20


def use_large_reads(size: int = READ_BYTES) -> None:
    """Let httpcore's HTTP/1.1 connections read up to ``size`` bytes per call (idempotent)."""
    AsyncHTTP11Connection.READ_NUM_BYTES = max(AsyncHTTP11Connection.READ_NUM_BYTES, size)
