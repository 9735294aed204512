"""S3's 10,000-part limit: an upload of a known size raises its part size to fit (within
the same memory), and one that would still pass the limit fails clearly, before S3 does."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from streamer._concurrency import cleanup
from streamer._engine import JobStatus
from streamer._errors import StorageError
from streamer._storage import LocalStorage
from streamer._storage.base import Conflict
from streamer._storage.s3 import S3Storage
from streamer._storage.s3settings import GiB, MiB, S3Settings

from .conftest import PART, Proxied
from .helpers import download, part_uploads, randbytes, sha, upload_job, uploads


@pytest.mark.parametrize(
    ("size", "part_size", "in_flight"),
    [
        (None, 16 * MiB, 4),  # not known: as configured
        (16 * MiB * 10_000, 16 * MiB, 4),  # exactly 10,000 parts still fit
        (16 * MiB * 10_000 + 1, 17 * MiB, 3),  # one byte more: whole MiB, fewer in flight
        (300 * GiB, 31 * MiB, 2),
        (500 * GiB, 52 * MiB, 2),  # never fewer than two: one is read while one goes up
        (5 * 1024 * GiB, 525 * MiB, 2),  # S3's largest object
    ],
)
def test_the_part_size_fits_the_part_limit_within_the_memory_bound(
    size: int | None, part_size: int, in_flight: int
) -> None:
    settings = S3Settings(part_size=16 * MiB, parts_in_flight=4)
    assert settings.upload_part_size(size) == part_size
    assert settings.upload_parts_in_flight(part_size) == in_flight
    assert size is None or -(-size // part_size) <= 10_000


@pytest.fixture
def three_parts(proxied: Proxied) -> S3Storage:
    """The proxied storage, with a part limit of 2 (S3's minimum part is 5 MiB, so
    10,000 of them would not fit a test)."""
    proxied.client.settings = dataclasses.replace(proxied.client.settings, max_parts=2)
    return S3Storage(proxied.storage.bucket, proxied.client)


async def test_a_local_file_too_big_for_the_part_limit_goes_in_bigger_parts(
    tmp_path: Path, proxied: Proxied, three_parts: S3Storage, bucket: str
) -> None:
    """Three parts' worth in a limit of two: parts of 8 MiB (whole MiB), each signed by
    the digest the pre-pass hashed at that size, and the object lands whole."""
    data = os.urandom(3 * PART)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(data)
    job = await upload_job(
        tmp_path, LocalStorage("local-0", tmp_path / "data"), bucket, three_parts
    )
    assert job.status is JobStatus.COMPLETED, job.errors
    parts = part_uploads(proxied.proxy)
    assert [int(head.headers["content-length"]) for head in parts] == [8 * MiB, 3 * PART - 8 * MiB]
    signed = [head.headers["x-amz-content-sha256"] for head in parts]
    assert signed == [sha(data[: 8 * MiB]), sha(data[8 * MiB :])]
    assert await download(three_parts, "up/big.bin") == data


async def test_bytes_past_the_part_limit_fail_clearly_and_leave_no_upload(
    three_parts: S3Storage, admin: Any, bucket: str
) -> None:
    """A writer not told its size cannot raise its parts: the part past the limit is
    refused before S3 would refuse it, and the upload is aborted."""
    writer = await three_parts.open_writer(
        "d/grows.bin", conflict=Conflict.OVERWRITE, tag=uuid.uuid4().hex
    )
    try:
        with pytest.raises(StorageError) as caught:
            await writer.write(randbytes(3 * PART))
            await writer.commit(sha256=sha(b""), mtime_ns=None)
    finally:
        await cleanup(writer.abort)
    assert caught.value.code == "TooManyParts"
    assert "s3.part_size_mib" in str(caught.value)
    assert uploads(admin, bucket) == []


class _SlowParts:
    """An S3 client stub whose part uploads take a while, counting how many overlap."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.nursery: trio.Nursery | None = None
        self.uploading = self.most = 0

    async def create_multipart_upload(self, bucket: str, key: str, **kwargs: Any) -> str:
        return "upload-1"

    async def upload_part(self, *args: Any, **kwargs: Any) -> str:
        self.uploading += 1
        self.most = max(self.most, self.uploading)
        await trio.sleep(0.02)
        self.uploading -= 1
        return '"etag"'

    async def abort_multipart_upload(self, *args: Any) -> None:
        pass


async def test_raised_parts_go_fewer_at_once() -> None:
    """Parts raised to 8 MiB under a 4 x 5 MiB budget: two in flight, not four."""
    settings = S3Settings(part_size=PART, parts_in_flight=4, max_parts=3)
    client = _SlowParts(settings)
    async with trio.open_nursery() as nursery:
        client.nursery = nursery
        storage = S3Storage("b", cast(Any, client))
        data = bytes(24 * MiB)  # three 8 MiB parts
        writer = await storage.open_writer(
            "big.bin", conflict=Conflict.OVERWRITE, tag="t", size=len(data), sha256=sha(data)
        )
        try:
            await writer.write(data)
            await writer._upload_rest()  # every part up, short of publishing
        finally:
            await cleanup(writer.abort)
    assert settings.upload_part_size(24 * MiB) == 8 * MiB
    assert client.most == 2
