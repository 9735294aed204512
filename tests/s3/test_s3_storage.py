"""S3Storage against a real (moto) S3 server: round trips, listings, errors, conflicts, cleanup."""

from __future__ import annotations

import os
from contextlib import aclosing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from streamer._concurrency import cleanup
from streamer._errors import SourceNotFound
from streamer._storage.base import Conflict, Entry
from streamer._storage.local import LocalStorage
from streamer._storage.s3 import S3Storage, staging_key
from streamer._storage.s3client import S3Client
from streamer._storage.s3errors import S3Error
from streamer._storage.s3settings import MiB, S3Settings
from streamer._storage.s3writer import format_mtime, parse_mtime

from .conftest import PART
from .helpers import download, keys, randbytes, sha, transfer, upload, uploads

MTIME_NS = 1_600_000_000_123_456_789
SIZES = {
    "empty": 0,
    "one-byte": 1,
    "one-part": PART,
    "part-plus-one": PART + 1,
    "three-parts": 3 * PART,
}


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_round_trip_local_to_s3_and_back(
    storage: S3Storage, admin: Any, bucket: str, tmp_path: Path, size: int
) -> None:
    data = randbytes(size, seed=size)
    source = tmp_path / "in" / "file.bin"
    source.parent.mkdir()
    source.write_bytes(data)
    os.utime(source, ns=(MTIME_NS, MTIME_NS))
    local = LocalStorage("local", tmp_path)

    assert await transfer(local, "in/file.bin", storage, "dir/file.bin") == (
        "dir/file.bin",
        sha(data),
    )

    head = admin.head_object(Bucket=bucket, Key="dir/file.bin")
    assert head["ContentLength"] == size
    assert head["Metadata"] == {"sha256": sha(data), "mtime": "1600000000.123456789"}
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert keys(admin, bucket) == ["dir/file.bin"]  # no staging object left
    assert uploads(admin, bucket) == []
    assert await storage.stat("dir/file.bin") == Entry(
        "dir/file.bin", size, MTIME_NS, sha256=sha(data)
    )

    assert await transfer(storage, "dir/file.bin", local, "out/file.bin") == (
        "out/file.bin",
        sha(data),
    )
    back = tmp_path / "out" / "file.bin"
    assert sha(back.read_bytes()) == sha(data)
    assert back.stat().st_mtime_ns == MTIME_NS


@pytest.mark.parametrize(
    "chunk", [3 * PART + 5, 999_983, 1], ids=["one-write", "odd-chunks", "bytewise-tail"]
)
async def test_writes_of_any_shape_store_the_same_bytes(storage: S3Storage, chunk: int) -> None:
    data = randbytes(2 * PART + 5 if chunk != 1 else 300, seed=chunk)
    assert await upload(storage, "shapes.bin", data, chunk=chunk) == "shapes.bin"
    assert sha(await download(storage, "shapes.bin", chunk=65_537)) == sha(data)


async def test_large_reads_stay_within_parts_in_flight(
    settings: S3Settings, storage: S3Storage, bucket: str
) -> None:
    data = randbytes(4 * PART + 17)
    await upload(storage, "big.bin", data)
    async with S3Client(replace(settings, parts_in_flight=3)) as client:
        assert sha(await download(S3Storage(bucket, client), "big.bin")) == sha(data)


class Concurrency:
    """Wraps an async method to record how many calls ran at once (each held a while)."""

    def __init__(self, target: Any, name: str) -> None:
        self.running = self.peak = 0
        original = getattr(target, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await trio.sleep(0.05)
                return await original(*args, **kwargs)
            finally:
                self.running -= 1

        setattr(target, name, wrapper)


async def test_parts_move_in_parallel_within_parts_in_flight(
    settings: S3Settings, bucket: str
) -> None:
    data = randbytes(5 * PART + 1)
    async with S3Client(replace(settings, parts_in_flight=3)) as client:
        storage = S3Storage(bucket, client)
        uploads = Concurrency(client, "upload_part")
        await upload(storage, "big.bin", data, chunk=PART // 3)
        fetches = Concurrency(client, "get_range")
        assert sha(await download(storage, "big.bin")) == sha(data)
    # Three parts in memory at most: being filled/consumed, or on the wire.
    assert uploads.peak == 3
    assert fetches.peak == 3


async def test_abandoned_read_stops_prefetching(storage: S3Storage, client: S3Client) -> None:
    await upload(storage, "big.bin", randbytes(4 * PART))
    async with aclosing(storage.read("big.bin", chunk_size=MiB)) as chunks:
        await anext(chunks)
        assert client.nursery.child_tasks  # parts being fetched ahead
    assert not client.nursery.child_tasks


# -- listing and stat ------------------------------------------------------------


async def test_walk_follows_continuation_tokens(
    settings: S3Settings, admin: Any, bucket: str, moto_server: Any
) -> None:
    from tests.support.faultproxy import fault_proxy

    files = [f"tree/{n:02d}.txt" for n in range(25)] + ["tree/sub/deep.txt"]
    ignored = ["tree/folder/", "tree/.streamer-abc.part", "tree/a//b", "other/x.txt", "tree-x.txt"]
    for key in files + ignored:
        admin.put_object(Bucket=bucket, Key=key, Body=key.encode())

    async with fault_proxy(moto_server.port) as proxy:
        paged = replace(settings, endpoint_url=f"http://127.0.0.1:{proxy.port}", list_page_size=10)
        async with S3Client(paged) as client:
            entries = await S3Storage(bucket, client).walk("tree")

    assert [e.path for e in entries] == sorted(files)
    assert all(e.size == len(e.path) and e.mtime_ns and not e.is_dir for e in entries)
    listings = [r for r in proxy.log if "list-type=2" in r.target]
    assert len(listings) == 3  # 30 keys under tree/, 10 a page


async def test_walk_root_missing_and_file(storage: S3Storage, admin: Any, bucket: str) -> None:
    assert await storage.walk("") == []
    admin.put_object(Bucket=bucket, Key="a/b.txt", Body=b"b")
    admin.put_object(Bucket=bucket, Key="c.txt", Body=b"cc")
    assert [(e.path, e.size) for e in await storage.walk("")] == [("a/b.txt", 1), ("c.txt", 2)]
    for path in ("missing", "c.txt", "a/b"):
        with pytest.raises(SourceNotFound):
            await storage.walk(path)


async def test_stat(storage: S3Storage, admin: Any, bucket: str) -> None:
    admin.put_object(Bucket=bucket, Key="dir/foreign.txt", Body=b"abc")
    await upload(storage, "dir/ours.txt", b"hello", mtime_ns=MTIME_NS)

    assert await storage.stat("missing") is None
    assert await storage.stat("dir/fo") is None  # a key prefix is not a directory
    assert await storage.stat("dir") == Entry("dir", 0, is_dir=True)
    assert await storage.stat("") == Entry("", 0, is_dir=True)
    assert await storage.stat("dir/ours.txt") == Entry(
        "dir/ours.txt", 5, MTIME_NS, sha256=sha(b"hello")
    )
    foreign = await storage.stat("dir/foreign.txt")
    assert foreign is not None and foreign.sha256 is None and foreign.size == 3
    assert foreign.mtime_ns is not None and foreign.mtime_ns > MTIME_NS  # LastModified


# -- errors --------------------------------------------------------------------


async def test_read_missing_key(storage: S3Storage, client: S3Client) -> None:
    with pytest.raises(S3Error) as caught:
        await download(storage, "nope.bin")
    assert caught.value.code == "NoSuchKey"
    assert caught.value.message == "The specified key does not exist."
    assert isinstance(caught.value, SourceNotFound)
    assert client.retries == 0


async def test_missing_bucket(client: S3Client) -> None:
    storage = S3Storage("no-such-bucket-here", client)
    for attempt in (download(storage, "x"), storage.walk(""), storage.stat("x"), storage.stat("")):
        with pytest.raises(S3Error) as caught:
            await attempt
        assert caught.value.code == "NoSuchBucket"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"access_key_id": "AKIAIOSFODNN7NOTREAL"}, "InvalidAccessKeyId"),
        ({"secret_access_key": "not-the-secret"}, "SignatureDoesNotMatch"),
    ],
)
async def test_bad_credentials(
    settings: S3Settings, bucket: str, change: dict[str, Any], code: str
) -> None:
    async with S3Client(replace(settings, **change)) as client:
        storage = S3Storage(bucket, client)
        with pytest.raises(S3Error) as caught:
            await storage.walk("")
        assert caught.value.code == code
        with pytest.raises(S3Error) as caught:
            await storage.stat("x")  # HEAD: no error document, the status names it
        assert (caught.value.code, caught.value.status) == ("AccessDenied", 403)
        assert client.retries == 0


async def test_object_replaced_between_parts_raises_source_changed(
    settings: S3Settings, storage: S3Storage, admin: Any, bucket: str
) -> None:
    await upload(storage, "big.bin", randbytes(3 * PART))
    # One part in flight: part 1 is only requested once part 0 has been consumed.
    async with S3Client(replace(settings, parts_in_flight=1)) as client:
        reader = S3Storage(bucket, client).read("big.bin", chunk_size=MiB)
        async with aclosing(reader) as chunks:
            await anext(chunks)
            admin.put_object(Bucket=bucket, Key="big.bin", Body=b"replaced")
            with pytest.raises(S3Error) as caught:
                async for _ in chunks:
                    pass
    assert caught.value.code == "SourceChanged"


# -- conflicts -----------------------------------------------------------------

CONFLICT_SIZES = {"single-put": 10, "multipart": PART + 1}


@pytest.mark.parametrize("announce", [False, True], ids=["staged", "digest-first"])
@pytest.mark.parametrize("size", CONFLICT_SIZES.values(), ids=CONFLICT_SIZES.keys())
async def test_conflict_policies(
    storage: S3Storage, admin: Any, bucket: str, size: int, announce: bool
) -> None:
    first, second, third = (randbytes(size, seed=n) for n in range(3))
    path = "d/model.tar.gz"
    put = partial(upload, storage, path, announce=announce)
    assert await put(first, conflict=Conflict.SKIP) == path  # free: written

    assert await put(second, conflict=Conflict.SKIP) is None
    assert sha(await download(storage, path)) == sha(first)

    assert await put(second, conflict=Conflict.RENAME) == "d/model.tar (1).gz"
    assert await put(third, conflict=Conflict.RENAME) == "d/model.tar (2).gz"
    assert sha(await download(storage, "d/model.tar (1).gz")) == sha(second)
    assert sha(await download(storage, "d/model.tar (2).gz")) == sha(third)

    assert await put(third, conflict=Conflict.OVERWRITE) == path
    assert sha(await download(storage, path)) == sha(third)
    assert admin.head_object(Bucket=bucket, Key=path)["Metadata"]["sha256"] == sha(third)

    assert keys(admin, bucket) == sorted([path, "d/model.tar (1).gz", "d/model.tar (2).gz"])
    assert uploads(admin, bucket) == []


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("1600000000.123456789", MTIME_NS),
        ("1600000000", 1_600_000_000_000_000_000),
        ("1600000000.5", 1_600_000_000_500_000_000),
        ("-1.000000001", -1_000_000_001),
        ("soon", None),
        ("", None),
    ],
)
def test_mtime_metadata_format(value: str, ns: int | None) -> None:
    assert parse_mtime(value) == ns
    if ns is not None and value.count(".") and len(value.partition(".")[2]) == 9:
        assert format_mtime(ns) == value


async def test_copy_object(client: S3Client, admin: Any, bucket: str) -> None:
    admin.put_object(Bucket=bucket, Key="src", Body=b"abc", Metadata={"a": "1"})
    etag = admin.head_object(Bucket=bucket, Key="src")["ETag"]
    await client.copy_object(bucket, "dst", bucket, "src", metadata={"b": "2"}, source_etag=etag)
    await client.copy_object(bucket, "kept", bucket, "src")
    assert admin.head_object(Bucket=bucket, Key="dst")["Metadata"] == {"b": "2"}
    assert admin.head_object(Bucket=bucket, Key="kept")["Metadata"] == {"a": "1"}
    assert admin.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"abc"


# -- cancellation and cleanup ------------------------------------------------------


async def test_cancel_mid_multipart_leaves_nothing(
    storage: S3Storage, admin: Any, bucket: str
) -> None:
    writer = await storage.open_writer("big.bin", conflict=Conflict.OVERWRITE, tag="t1")
    try:
        with trio.CancelScope() as scope:
            for n in range(12):
                await writer.write(randbytes(MiB, seed=n))
            assert uploads(admin, bucket) == [staging_key("big.bin", "t1")]
            scope.cancel()
            await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
    finally:
        await cleanup(writer.abort)
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == []
    await writer.abort()  # idempotent


async def test_abort_after_commit_keeps_the_object(
    storage: S3Storage, admin: Any, bucket: str
) -> None:
    writer = await storage.open_writer("a.bin", conflict=Conflict.OVERWRITE, tag="t2")
    data = randbytes(PART + 1)
    await writer.write(data)
    assert await writer.commit(sha256=sha(data), mtime_ns=None) == "a.bin"
    await writer.abort()
    assert keys(admin, bucket) == ["a.bin"]
    assert "mtime" not in admin.head_object(Bucket=bucket, Key="a.bin")["Metadata"]


async def test_sweep_removes_what_a_crashed_writer_left(
    settings: S3Settings, storage: S3Storage, admin: Any, bucket: str
) -> None:
    async with S3Client(settings) as crashed:
        writer = await S3Storage(bucket, crashed).open_writer(
            "x.bin", conflict=Conflict.OVERWRITE, tag="crash"
        )
        await writer.write(randbytes(PART + 1))  # starts the multipart upload
    # ...and the process died: no commit, no abort.
    admin.put_object(Bucket=bucket, Key=staging_key("y.bin", "crash2"), Body=b"staged")
    assert uploads(admin, bucket) == [staging_key("x.bin", "crash")]

    await storage.sweep("x.bin", tag="crash")
    await storage.sweep("y.bin", tag="crash2")
    await storage.sweep("z.bin", tag="never-used")
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == []
