"""Small helpers for the S3 storage tests."""

from __future__ import annotations

import hashlib
import random
import uuid
from contextlib import aclosing
from pathlib import Path
from typing import Any

from streamer._concurrency import cleanup
from streamer._pipeline.pump import pump
from streamer._pipeline.stages import Sha256
from streamer._storage.base import Conflict, Storage
from streamer._storage.local import LocalStorage
from streamer._storage.registry import Locations
from streamer._storage.s3 import S3Storage
from tests.support.engine import run_job
from tests.support.faultproxy import FaultProxy, RequestHead


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def randbytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


async def upload(
    storage: S3Storage,
    path: str,
    data: bytes,
    *,
    conflict: Conflict = Conflict.OVERWRITE,
    chunk: int = 1024 * 1024,
    mtime_ns: int | None = None,
    announce: bool = False,
) -> str | None:
    """Write ``data`` through a writer in ``chunk``-sized pieces; commit; always abort after.

    ``announce``: tell the writer the digest up front (a direct multipart upload).
    """
    writer = await storage.open_writer(
        path,
        conflict=conflict,
        tag=uuid.uuid4().hex,
        sha256=sha(data) if announce else None,
        mtime_ns=mtime_ns,
    )
    try:
        for offset in range(0, len(data), chunk):
            await writer.write(data[offset : offset + chunk])
        return await writer.commit(sha256=sha(data), mtime_ns=mtime_ns)
    finally:
        await cleanup(writer.abort)


async def download(storage: S3Storage, path: str, *, chunk: int = 256 * 1024) -> bytes:
    out = bytearray()
    async with aclosing(storage.read(path, chunk_size=chunk)) as chunks:
        async for piece in chunks:
            assert 0 < len(piece) <= chunk
            out += piece
    return bytes(out)


async def transfer(
    source: Storage, source_path: str, target: Storage, target_path: str
) -> tuple[str | None, str]:
    """Copy one file between storages the way the engine does: pump + Sha256 stage."""
    entry = await source.stat(source_path)
    assert entry is not None
    hasher = Sha256()
    writer = await target.open_writer(
        target_path, conflict=Conflict.OVERWRITE, tag=uuid.uuid4().hex
    )
    try:
        await pump(source.read(source_path, chunk_size=1024 * 1024), [hasher], writer)
        assert hasher.hexdigest is not None
        final = await writer.commit(sha256=hasher.hexdigest, mtime_ns=entry.mtime_ns)
    finally:
        await cleanup(writer.abort)
    return final, hasher.hexdigest


def keys(admin: Any, bucket: str) -> list[str]:
    """Every key in the bucket (boto3)."""
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def uploads(admin: Any, bucket: str) -> list[str]:
    """Keys of the in-progress multipart uploads (boto3)."""
    return [u["Key"] for u in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


async def upload_job(
    tmp_path: Path,
    local: LocalStorage,
    bucket: str,
    storage: S3Storage,
    names: tuple[str, ...] = ("big.bin",),
    **extra: Any,
) -> Any:
    """Run a copy job of the files ``names`` (``big.bin``) from ``local``'s root to
    ``bucket``/``up`` (through ``storage``'s client) to its end; ``extra`` goes into
    the request (``conflictResolution``...). Returns the finished job."""
    where = Locations([local], buckets=lambda name: S3Storage(name, storage.client))
    body = {
        "source": {"type": "local", "locationId": "local-0", "path": "/"},
        "destination": {"type": "s3", "locationId": bucket, "path": "up"},
        "items": [{"path": name, "type": "file"} for name in names],
        **extra,
    }
    job, store = await run_job(tmp_path, where, body)
    store.close()
    return job


def part_uploads(proxy: FaultProxy) -> list[RequestHead]:
    """The UploadPart requests a fault proxy saw, in order."""
    return [head for head in proxy.log if head.method == "PUT" and "partNumber=" in head.target]
