"""Local → S3: big files read straight into the parts of the upload, hashed there."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from streamer._concurrency import cleanup
from streamer._engine import JobStatus
from streamer._engine.copy import INTO_PARTS_FILE
from streamer._engine.intoparts import copy_into_parts
from streamer._pipeline import Progress
from streamer._storage import LocalStorage
from streamer._storage.base import Conflict
from streamer._storage.local import LocalFile
from streamer._storage.s3 import S3Storage

from .conftest import PART
from .helpers import keys, sha, upload_job, uploads


class Changing(LocalFile):
    """A file that ``change`` rewrites once its first part has been read."""

    def __init__(self, file: LocalFile, real: str, change: str) -> None:
        self.__dict__.update(file.__dict__)
        self._real, self._change = real, change

    def readinto(self, offset: int, buffer: memoryview) -> int:
        if offset >= PART and self._change:
            with open(self._real, "r+b") as f:
                if self._change == "grown":
                    f.seek(0, os.SEEK_END)
                    f.write(b"more")
                elif self._change == "shrunk":
                    f.truncate(PART + 1)
                else:  # same size, other bytes
                    f.seek(PART)
                    f.write(b"changed!")
            self._change = ""
        return super().readinto(offset, buffer)


class Spying(LocalStorage):
    """Counts the files opened by offset; reading as a stream (the pump) fails."""

    change = ""
    opened = 0

    async def open_positional(self, path: str) -> LocalFile:
        self.opened += 1
        file = await super().open_positional(path)
        return Changing(file, self.resolve(path), self.change) if self.change else file

    def read(self, path: str, *, chunk_size: int, **_: Any) -> AsyncIterator[bytes]:
        raise AssertionError("streamed instead of read into the parts")


@pytest.mark.parametrize(
    "size",
    [2 * PART, 3 * PART + 7, INTO_PARTS_FILE + 1],
    ids=["whole-parts", "ragged", "one-part"],
)
async def test_the_copy_runner_reads_big_local_files_into_the_parts(
    tmp_path: Path, storage: S3Storage, admin: Any, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(data)
    local = Spying("local-0", tmp_path / "data")
    job = await upload_job(tmp_path, local, bucket, storage)
    assert job.status is JobStatus.COMPLETED, job.errors
    assert local.opened == 1
    stored = admin.get_object(Bucket=bucket, Key="up/big.bin")
    assert stored["Body"].read() == data
    assert stored["Metadata"]["sha256"] == sha(data) == job.files[0].sha256
    if size > PART:
        assert stored["ETag"].endswith(f'-{-(-size // PART)}"')  # one part per lent buffer
    else:  # one lent buffer, published by a single PutObject
        assert "-" not in stored["ETag"]
    assert keys(admin, bucket) == ["up/big.bin"]
    assert uploads(admin, bucket) == []


@pytest.mark.parametrize("change", ["grown", "shrunk", "rewritten"])
async def test_a_file_changed_while_read_lands_nothing(
    tmp_path: Path, storage: S3Storage, admin: Any, bucket: str, change: str
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(os.urandom(3 * PART))
    local = Spying("local-0", tmp_path / "data")
    local.change = change
    job = await upload_job(tmp_path, local, bucket, storage)
    assert job.status is JobStatus.FAILED
    assert [e.error for e in job.errors] == ["SourceChanged"]
    assert keys(admin, bucket) == []
    assert uploads(admin, bucket) == []


async def test_a_cancelled_copy_aborts_the_upload(
    tmp_path: Path, storage: S3Storage, admin: Any, bucket: str
) -> None:
    data = os.urandom(4 * PART)
    (tmp_path / "big.bin").write_bytes(data)
    writer = await storage.open_writer(
        "big.bin", conflict=Conflict.OVERWRITE, tag="t", sha256=sha(data)
    )
    seen: list[int] = []
    try:
        with trio.CancelScope() as scope:

            def report(total: int) -> None:
                seen.append(total)
                if total >= 2 * PART:
                    scope.cancel()

            await copy_into_parts(
                LocalStorage("local", tmp_path), "big.bin", len(data), writer, Progress(report)
            )
        assert scope.cancelled_caught
        assert uploads(admin, bucket) == ["big.bin"]  # the first part shipped
    finally:
        await cleanup(writer.abort)
    assert seen == [PART, 2 * PART]
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == []
