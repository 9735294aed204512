"""Digest-first writes: a multipart object whose SHA-256 is known up front is uploaded
straight to its final key, and published only if the bytes hash to that digest."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from streamer._concurrency import cleanup
from streamer._engine import JobStatus
from streamer._errors import StorageError
from streamer._storage import FileDigest, LocalStorage, s3body, s3client
from streamer._storage.base import Conflict
from streamer._storage.s3 import S3Storage
from streamer._storage.s3client import S3Client
from streamer._storage.s3settings import MiB, S3Settings
from streamer._storage.s3writer import format_mtime
from tests.support.faultproxy import s3_error_body

from .conftest import PART, Proxied
from .helpers import download, keys, part_uploads, randbytes, sha, upload, upload_job, uploads

MTIME_NS = 1_600_000_000_123_456_789


async def test_announced_digest_uploads_to_the_final_key_and_publishes_metadata(
    storage: S3Storage, admin: Any, bucket: str
) -> None:
    data = randbytes(2 * PART + 1)
    writer = await storage.open_writer(
        "d/big.bin", conflict=Conflict.OVERWRITE, tag="t", sha256=sha(data), mtime_ns=MTIME_NS
    )
    try:
        await writer.write(data[: PART + 1])  # the first part ships: the upload exists
        assert uploads(admin, bucket) == ["d/big.bin"]  # no staging key
        await writer.write(data[PART + 1 :])
        assert await writer.commit(sha256=sha(data), mtime_ns=MTIME_NS) == "d/big.bin"
    finally:
        await cleanup(writer.abort)
    stored = admin.get_object(Bucket=bucket, Key="d/big.bin")
    assert stored["Body"].read() == data
    assert stored["Metadata"] == {"sha256": sha(data), "mtime": format_mtime(MTIME_NS)}
    assert keys(admin, bucket) == ["d/big.bin"]
    assert uploads(admin, bucket) == []


@pytest.mark.parametrize("size", [10, 2 * PART + 1], ids=["single-put", "multipart"])
async def test_bytes_that_are_not_the_announced_ones_publish_nothing(
    storage: S3Storage, admin: Any, bucket: str, size: int
) -> None:
    admin.put_object(Bucket=bucket, Key="d/f.bin", Body=b"old")
    announced, written = randbytes(size, seed=1), randbytes(size, seed=2)
    writer = await storage.open_writer(
        "d/f.bin", conflict=Conflict.OVERWRITE, tag="t", sha256=sha(announced)
    )
    try:
        await writer.write(written)
        with pytest.raises(StorageError) as caught:
            await writer.commit(sha256=sha(written), mtime_ns=None)
    finally:
        await cleanup(writer.abort)
    assert caught.value.code == "SourceChanged"
    assert admin.get_object(Bucket=bucket, Key="d/f.bin")["Body"].read() == b"old"
    assert keys(admin, bucket) == ["d/f.bin"]
    assert uploads(admin, bucket) == []


class ChangingLocal(LocalStorage):
    """A local disk whose files change right after being hashed (as a live file might)."""

    async def file_digest(self, path: str, *, part_size: int | None = None) -> FileDigest:
        digest = await super().file_digest(path, part_size=part_size)
        _overwrite_start(self.resolve(path), b"changed!")
        return digest


def _overwrite_start(path: str, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)


@pytest.mark.parametrize("changing", [False, True], ids=["steady", "changed-after-hashing"])
async def test_local_upload_is_direct_and_a_changed_source_lands_nowhere(
    tmp_path: Path, storage: S3Storage, admin: Any, bucket: str, changing: bool
) -> None:
    data = os.urandom(2 * PART + 1)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(data)
    local = (ChangingLocal if changing else LocalStorage)("local-0", tmp_path / "data")
    job = await upload_job(tmp_path, local, bucket, storage)
    assert uploads(admin, bucket) == []
    if changing:
        assert job.status is JobStatus.FAILED
        assert [e.error for e in job.errors] == ["SourceChanged"]
        assert keys(admin, bucket) == []
    else:
        assert job.status is JobStatus.COMPLETED, job.errors
        assert keys(admin, bucket) == ["up/big.bin"]
        head = admin.head_object(Bucket=bucket, Key="up/big.bin")
        assert head["Metadata"]["sha256"] == sha(data) == job.files[0].sha256


@pytest.mark.parametrize("size", [0, 10, 2 * PART + 1], ids=["empty", "single-put", "multipart"])
async def test_unsigned_payloads_store_the_same_bytes(
    settings: S3Settings, admin: Any, bucket: str, size: int
) -> None:
    data = randbytes(size, seed=size)
    async with S3Client(dataclasses.replace(settings, sign_payload=False)) as client:
        storage = S3Storage(bucket, client)
        assert await upload(storage, "u.bin", data, chunk=PART - 1) == "u.bin"
        assert await download(storage, "u.bin") == data
    assert admin.head_object(Bucket=bucket, Key="u.bin")["Metadata"]["sha256"] == sha(data)


async def test_a_local_upload_signs_each_part_by_the_digest_hashed_first(
    tmp_path: Path, proxied: Proxied, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over plain http parts are signed by their SHA-256: the file's pre-pass hashes
    them (beside the whole file), so no part is hashed again on its way up."""
    data = os.urandom(2 * PART + 1)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(data)
    hashed: list[int] = []
    real = s3body.sha256_hex

    async def counting(body: s3body.Body) -> str:
        hashed.append(len(body))
        return await real(body)

    monkeypatch.setattr(s3client, "sha256_hex", counting)
    local = LocalStorage("local-0", tmp_path / "data")
    job = await upload_job(tmp_path, local, bucket, proxied.storage)
    assert job.status is JobStatus.COMPLETED, job.errors
    parts = [data[at : at + PART] for at in range(0, len(data), PART)]
    signed = [head.headers["x-amz-content-sha256"] for head in part_uploads(proxied.proxy)]
    assert signed == [sha(part) for part in parts]
    assert not [size for size in hashed if size >= PART]
    assert await download(proxied.storage, "up/big.bin") == data


async def test_a_part_the_server_finds_changed_fails_the_file_as_source_changed(
    tmp_path: Path, proxied: Proxied, admin: Any, bucket: str
) -> None:
    """A server that checks signed payloads (AWS, MinIO; not rclone or moto) refuses a part that
    changed after the pre-pass hashed it: the file fails ``SourceChanged``, its
    upload is aborted and nothing is published."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(os.urandom(2 * PART + 1))
    mismatch = s3_error_body(
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    )
    proxied.proxy.fail_next(
        status=400, body=mismatch, when=lambda head: "partNumber=1&" in head.target
    )
    job = await upload_job(
        tmp_path, ChangingLocal("local-0", tmp_path / "data"), bucket, proxied.storage
    )
    assert proxied.proxy.failed == 1
    assert job.status is JobStatus.FAILED
    assert [e.error for e in job.errors] == ["SourceChanged"]
    assert "part 1" in job.errors[0].message
    assert keys(admin, bucket) == []
    assert uploads(admin, bucket) == []


async def test_a_part_damaged_on_the_wire_is_not_taken_for_a_changed_source(
    tmp_path: Path, proxied: Proxied, admin: Any, bucket: str
) -> None:
    """The server refuses a part whose bytes are still the ones hashed first: they were
    damaged in transit, and the job says so in S3's words, not ``SourceChanged``."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(os.urandom(2 * PART + 1))
    mismatch = s3_error_body("XAmzContentSHA256Mismatch", "The content SHA-256 does not match.")
    proxied.proxy.fail_next(
        status=400, body=mismatch, when=lambda head: "partNumber=1&" in head.target
    )
    local = LocalStorage("local-0", tmp_path / "data")
    job = await upload_job(tmp_path, local, bucket, proxied.storage)
    assert job.status is JobStatus.FAILED
    assert [e.error for e in job.errors] == ["XAmzContentSHA256Mismatch"]
    assert keys(admin, bucket) == []
    assert uploads(admin, bucket) == []


class RecordingLocal(LocalStorage):
    """A local disk that tells when each file's pre-pass digest starts."""

    def __init__(self, *args: Any, started: dict[str, threading.Event]) -> None:
        super().__init__(*args)
        self.started = started

    async def file_digest(self, path: str, *, part_size: int | None = None) -> FileDigest:
        self.started[path].set()
        return await super().file_digest(path, part_size=part_size)


async def test_the_next_big_file_is_hashed_while_one_uploads(
    tmp_path: Path, proxied: Proxied, bucket: str
) -> None:
    """Big files upload one at a time, and each needs its digest first: the next
    one's is taken while the one before uploads. Here the first file's parts are
    held until the second's digest has started, so this cannot finish otherwise."""
    (tmp_path / "data").mkdir()
    contents = {name: os.urandom(2 * PART + 1) for name in ("a.bin", "b.bin", "c.bin")}
    for name, data in contents.items():
        (tmp_path / "data" / name).write_bytes(data)
    started = {name: threading.Event() for name in contents}
    proxied.proxy.stall_after(
        0, release=started["b.bin"], when=lambda head: "/up/a.bin?partNumber=1&" in head.target
    )
    local = RecordingLocal("local-0", tmp_path / "data", started=started)
    with trio.fail_after(30):
        job = await upload_job(tmp_path, local, bucket, proxied.storage, tuple(contents))
    assert job.status is JobStatus.COMPLETED, job.errors
    assert proxied.proxy.stalled == 1
    for name, data in contents.items():
        assert await download(proxied.storage, f"up/{name}") == data


class VanishingLocal(LocalStorage):
    """A local disk where ``b.bin`` is gone by the time its digest is taken."""

    async def file_digest(self, path: str, *, part_size: int | None = None) -> FileDigest:
        if path == "b.bin":
            os.unlink(self.resolve(path))
        return await super().file_digest(path, part_size=part_size)


async def test_a_file_gone_before_its_digest_ahead_fails_alone(
    tmp_path: Path, storage: S3Storage, admin: Any, bucket: str
) -> None:
    (tmp_path / "data").mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (tmp_path / "data" / name).write_bytes(os.urandom(2 * PART + 1))
    local = VanishingLocal("local-0", tmp_path / "data")
    job = await upload_job(tmp_path, local, bucket, storage, ("a.bin", "b.bin", "c.bin"))
    assert [(f.source, f.status.value) for f in job.files] == [
        ("a.bin", "completed"),
        ("b.bin", "error"),
        ("c.bin", "completed"),
    ]
    assert [e.error for e in job.errors] == ["NotFound"]
    assert keys(admin, bucket) == ["up/a.bin", "up/c.bin"]
    assert uploads(admin, bucket) == []


class CountingLocal(LocalStorage):
    """A local disk that counts the pre-pass digests taken of each file."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.digests: dict[str, int] = {}

    async def file_digest(self, path: str, *, part_size: int | None = None) -> FileDigest:
        self.digests[path] = self.digests.get(path, 0) + 1
        return await super().file_digest(path, part_size=part_size)


async def test_no_file_is_hashed_twice_or_for_nothing(
    tmp_path: Path, storage: S3Storage, admin: Any, bucket: str
) -> None:
    """Files of 6 MiB need a digest (parts of 5 MiB) but go several at once, so they
    are hashed when they ask, never ahead; a big file ``skip`` will skip is not
    hashed at all; every other file once."""
    sizes = {"a.bin": 12, "b.bin": 12, "c.bin": 6, "d.bin": 12, "e.bin": 6}
    (tmp_path / "data").mkdir()
    for name, mib in sizes.items():
        (tmp_path / "data" / name).write_bytes(os.urandom(mib * MiB))
    admin.put_object(Bucket=bucket, Key="up/b.bin", Body=b"already there")
    local = CountingLocal("local-0", tmp_path / "data")
    job = await upload_job(
        tmp_path, local, bucket, storage, tuple(sizes), conflictResolution="skip"
    )
    assert job.status is JobStatus.COMPLETED, job.errors
    assert [f.status.value for f in job.files] == ["completed", "skipped", *["completed"] * 3]
    assert local.digests == {"a.bin": 1, "c.bin": 1, "d.bin": 1, "e.bin": 1}
    assert admin.get_object(Bucket=bucket, Key="up/b.bin")["Body"].read() == b"already there"
