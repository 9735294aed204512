"""Server-side copies between buckets of one endpoint: no bytes through the node."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamer._errors import ConfigError
from streamer._storage.base import Conflict
from streamer._storage.local import LocalStorage
from streamer._storage.s3 import S3Storage
from streamer._storage.s3client import S3Client
from streamer._storage.s3settings import MAX_COPY_OBJECT, S3Settings

from .conftest import PART
from .helpers import keys, randbytes, sha, upload


@pytest.mark.parametrize(
    "size", [0, 1, PART + 1, 3 * PART], ids=["empty", "one", "two-parts", "three-parts"]
)
async def test_copy_within_keeps_bytes_and_metadata(
    storage: S3Storage, admin: Any, bucket: str, size: int
) -> None:
    data = randbytes(size, seed=size)
    await upload(storage, "src/obj.bin", data, mtime_ns=1_600_000_000_000_000_001)
    other = f"{bucket}-dst"
    admin.create_bucket(Bucket=other)
    target = S3Storage(other, storage.client)

    result = await target.copy_within(
        storage, "src/obj.bin", "dst/obj.bin", conflict=Conflict.OVERWRITE, tag="t"
    )

    assert result is not None and (result.path, result.size, result.sha256) == (
        "dst/obj.bin",
        size,
        sha(data),
    )
    copied = admin.get_object(Bucket=other, Key="dst/obj.bin")
    assert copied["Body"].read() == data
    assert copied["Metadata"]["sha256"] == sha(data)
    assert keys(admin, other) == ["dst/obj.bin"]
    assert admin.list_multipart_uploads(Bucket=other).get("Uploads", []) == []


async def test_copy_within_applies_conflicts_and_declines_other_storages(
    storage: S3Storage, admin: Any, bucket: str, tmp_path: Path
) -> None:
    await upload(storage, "a.txt", b"new")
    await upload(storage, "b/a.txt", b"old")
    skipped = await storage.copy_within(
        storage, "a.txt", "b/a.txt", conflict=Conflict.SKIP, tag="t"
    )
    assert skipped is not None and skipped.path is None
    renamed = await storage.copy_within(
        storage, "a.txt", "b/a.txt", conflict=Conflict.RENAME, tag="t"
    )
    assert renamed is not None and renamed.path == "b/a (1).txt"
    assert admin.get_object(Bucket=bucket, Key="b/a.txt")["Body"].read() == b"old"
    assert admin.get_object(Bucket=bucket, Key="b/a (1).txt")["Body"].read() == b"new"
    local = LocalStorage("local", tmp_path)
    assert await storage.copy_within(local, "x", "y", conflict=Conflict.OVERWRITE, tag="t") is None


@pytest.mark.parametrize("how", ["copy_within", "staged-upload"])
async def test_objects_over_copy_object_max_are_copied_by_parts(
    client: S3Client, settings: S3Settings, admin: Any, bucket: str, how: str
) -> None:
    """UploadPartCopy, which S3 needs above 5 GiB, made to run on small objects."""
    storage = S3Storage(bucket, client, replace(settings, copy_object_max=PART))
    size = 3 * PART + 7  # four copy parts of PART (copy_part_size), the last ragged
    data = randbytes(size, seed=3)
    mtime_ns = 1_600_000_000_000_000_001
    if how == "copy_within":
        await upload(S3Storage(bucket, client), "src/obj.bin", data, mtime_ns=mtime_ns)
        result = await storage.copy_within(
            storage, "src/obj.bin", "dst/obj.bin", conflict=Conflict.OVERWRITE, tag="t"
        )
        assert result is not None and (result.path, result.size, result.sha256) == (
            "dst/obj.bin",
            size,
            sha(data),
        )
    else:  # a multipart upload to a staging key, published by a multipart copy
        assert await upload(storage, "dst/obj.bin", data, mtime_ns=mtime_ns) == "dst/obj.bin"
    copied = admin.get_object(Bucket=bucket, Key="dst/obj.bin")
    assert copied["Body"].read() == data
    assert copied["Metadata"] == {"sha256": sha(data), "mtime": "1600000000.000000001"}
    assert copied["ETag"].endswith('-4"')  # assembled from four parts, not one CopyObject
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    expected = ["dst/obj.bin", "src/obj.bin"] if how == "copy_within" else ["dst/obj.bin"]
    assert keys(admin, bucket) == expected


def test_copy_object_max_is_bounded_by_s3s_limit(settings: S3Settings) -> None:
    with pytest.raises(ConfigError):
        replace(settings, copy_object_max=MAX_COPY_OBJECT + 1)
