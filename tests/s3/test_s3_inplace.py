"""S3 → local by parallel ranges written in place, each hashed in order from its buffer."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from streamer._concurrency import cleanup
from streamer._engine import JobStatus
from streamer._engine.copy import IN_PLACE_FILE
from streamer._engine.inplace import copy_in_place
from streamer._errors import StorageError
from streamer._pipeline import Progress
from streamer._storage import LocalStorage
from streamer._storage.base import Conflict, Pinned
from streamer._storage.registry import Locations
from streamer._storage.s3 import S3Storage
from tests.e2e.node import staging_files
from tests.support.engine import run_job

from .conftest import PART
from .helpers import sha


class Counting(S3Storage):
    """Records the ranges fetched at once (most seen) and can replace the object once
    pinned, as a concurrent writer might."""

    replace_with: bytes | None = None
    admin: Any = None
    running = 0
    most = 0

    async def pin(self, path: str) -> Pinned:
        pinned = await super().pin(path)
        if self.replace_with is not None:
            self.admin.put_object(Bucket=self.bucket, Key=path, Body=self.replace_with)
        return pinned

    async def fetch_range(self, path: str, **kwargs: Any) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await super().fetch_range(path, **kwargs)
        finally:
            self.running -= 1


@pytest.mark.parametrize("size", [3 * PART, 3 * PART + 7], ids=["whole-parts", "ragged"])
async def test_ranges_land_in_place_and_every_byte_is_hashed(
    storage: S3Storage, admin: Any, bucket: str, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    admin.put_object(Bucket=bucket, Key="big.bin", Body=data)
    source = Counting(bucket, storage.client)
    local = LocalStorage("local", tmp_path)
    writer = await local.open_writer("out/big.bin", conflict=Conflict.OVERWRITE, tag="t")
    seen: list[int] = []
    try:
        digest = await copy_in_place(source, "big.bin", size, writer, Progress(seen.append))
        assert await writer.commit(sha256=digest, mtime_ns=None) == "out/big.bin"
    finally:
        await cleanup(writer.abort)
    assert digest == sha(data)
    assert (tmp_path / "out/big.bin").read_bytes() == data
    assert seen[-1] == size and seen == sorted(seen)
    assert source.most == storage.settings.parts_in_flight  # parallel, and bounded


@pytest.mark.parametrize("replaced", ["same-size", "other-size"])
async def test_an_object_replaced_mid_copy_lands_nothing(
    storage: S3Storage, admin: Any, bucket: str, tmp_path: Path, replaced: str
) -> None:
    size = 3 * PART
    admin.put_object(Bucket=bucket, Key="big.bin", Body=os.urandom(size))
    source = Counting(bucket, storage.client)
    source.admin = admin
    source.replace_with = os.urandom(size if replaced == "same-size" else size + 1)
    local = LocalStorage("local", tmp_path)
    writer = await local.open_writer("big.bin", conflict=Conflict.OVERWRITE, tag="t")
    try:
        with pytest.raises(StorageError) as caught:
            await copy_in_place(source, "big.bin", size, writer, Progress(lambda _: None))
    finally:
        await cleanup(writer.abort)
    assert caught.value.code == "SourceChanged"
    assert os.listdir(tmp_path) == []  # no temp file left, nothing published


async def test_the_copy_runner_fetches_big_objects_in_place(
    storage: S3Storage, admin: Any, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(max(IN_PLACE_FILE + 1, 2 * PART + 1))  # several ranges
    admin.upload_fileobj(io.BytesIO(data), bucket, "src/big.bin")
    source = Counting(bucket, storage.client)
    where = Locations([LocalStorage("local-0", tmp_path / "data")], buckets=lambda _: source)
    body = {
        "source": {"type": "s3", "locationId": bucket, "path": "src"},
        "destination": {"type": "local", "locationId": "local-0", "path": "/dst"},
        "items": [{"path": "big.bin", "type": "file"}],
    }
    (tmp_path / "data").mkdir()
    job, store = await run_job(tmp_path, where, body)
    store.close()
    assert job.status is JobStatus.COMPLETED, job.errors
    assert source.most > 1  # ranges, not one stream
    landed = (tmp_path / "data/dst/big.bin").read_bytes()
    assert hashlib.sha256(landed).hexdigest() == hashlib.sha256(data).hexdigest()
    assert job.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert staging_files(tmp_path / "data") == []


async def test_a_range_the_object_cannot_fill_is_a_changed_source(
    storage: S3Storage, admin: Any, bucket: str
) -> None:
    """A range that comes back shorter than asked (the object is not the size it was
    pinned at) fails rather than leaving the rest of its buffer to be hashed."""
    data = os.urandom(PART)
    admin.put_object(Bucket=bucket, Key="big.bin", Body=data)
    pinned = await storage.pin("big.bin")
    into = memoryview(bytearray(PART + 10))

    async def landed(filled: int) -> None:
        pass

    with pytest.raises(StorageError, match="changed while being copied") as raised:
        await storage.fetch_range(
            "big.bin", start=0, version=pinned.version, into=into, landed=landed
        )
    assert raised.value.code == "SourceChanged"
