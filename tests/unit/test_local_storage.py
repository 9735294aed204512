"""LocalStorage: rooted paths, atomic publication, conflicts, staging cleanup."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from streamer._errors import InvalidPath, PathBlocked, SourceNotFound, StorageError
from streamer._storage import Conflict, FileDigest, LocalStorage
from streamer._storage.localwriter import HOLD_BYTES, LocalWriter


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    (tmp_path / "root").mkdir()
    return LocalStorage("local-0", tmp_path / "root")


async def write(storage: LocalStorage, path: str, data: bytes, conflict: Conflict) -> str | None:
    writer = await storage.open_writer(path, conflict=conflict, tag="t")
    try:
        await writer.write(data)
        return await writer.commit(sha256="x", mtime_ns=1_600_000_000_123_456_789)
    finally:
        await writer.abort()


async def test_write_publishes_atomically_with_mtime(storage: LocalStorage) -> None:
    root = Path(storage.root)
    writer = await storage.open_writer("a/b/file.bin", conflict=Conflict.OVERWRITE, tag="t")
    await writer.write(b"hello ")
    await writer.write(b"world")
    assert not (root / "a/b/file.bin").exists()  # nothing visible before commit
    assert [p.name for p in (root / "a/b").iterdir()] == [".streamer-t.part"]
    assert await writer.commit(sha256="x", mtime_ns=1_600_000_000_123_456_789) == "a/b/file.bin"
    await writer.abort()  # safe after commit: must not delete the published file
    assert (root / "a/b/file.bin").read_bytes() == b"hello world"
    assert os.stat(root / "a/b/file.bin").st_mtime_ns == 1_600_000_000_123_456_789
    assert [p.name for p in (root / "a/b").iterdir()] == ["file.bin"]


async def test_abort_removes_staging(storage: LocalStorage) -> None:
    writer = await storage.open_writer("f", conflict=Conflict.OVERWRITE, tag="t")
    await writer.write(b"partial")
    await writer.abort()
    assert os.listdir(storage.root) == []


async def test_conflict_policies(storage: LocalStorage) -> None:
    root = Path(storage.root)
    (root / "m.bin").write_bytes(b"old")
    assert await write(storage, "m.bin", b"skip", Conflict.SKIP) is None
    assert (root / "m.bin").read_bytes() == b"old"
    assert await write(storage, "m.bin", b"r1", Conflict.RENAME) == "m (1).bin"
    assert await write(storage, "m.bin", b"r2", Conflict.RENAME) == "m (2).bin"
    assert await write(storage, "m.bin", b"new", Conflict.OVERWRITE) == "m.bin"
    assert (root / "m.bin").read_bytes() == b"new"
    assert (root / "m (1).bin").read_bytes() == b"r1"
    assert sorted(os.listdir(root)) == ["m (1).bin", "m (2).bin", "m.bin"]


async def test_symlinks_cannot_lead_outside(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(outside, Path(storage.root) / "escape")
    os.symlink(outside / "secret", Path(storage.root) / "secret-link")
    with pytest.raises(InvalidPath):
        await storage.stat("escape/secret")
    for data in (b"small", b"x" * (HOLD_BYTES + 1)):  # group-committed, and streamed
        writer = await storage.open_writer("escape/new", conflict=Conflict.OVERWRITE, tag="t")
        try:
            with pytest.raises(InvalidPath):  # a lazily opened writer fails at its first I/O
                await writer.write(data)
                await writer.commit(sha256="", mtime_ns=None)
        finally:
            await writer.abort()
    with pytest.raises(InvalidPath):
        await storage.stat("secret-link")
    assert os.listdir(outside) == ["secret"]


async def test_walk_lists_files_only_without_symlinks_or_staging(storage: LocalStorage) -> None:
    root = Path(storage.root)
    (root / "d/e").mkdir(parents=True)
    (root / "d/one").write_bytes(b"1")
    (root / "d/e/two").write_bytes(b"22")
    (root / "d/.streamer-x.part").write_bytes(b"staging")
    os.symlink(root / "d/one", root / "d/link")
    entries = await storage.walk("d")
    assert [(e.path, e.size) for e in entries] == [("d/e/two", 2), ("d/one", 1)]
    with pytest.raises(SourceNotFound):
        await storage.walk("d/one")


async def test_read_streams_in_chunks(storage: LocalStorage) -> None:
    (Path(storage.root) / "f").write_bytes(b"abcdefghij")
    chunks = [c async for c in storage.read("f", chunk_size=4)]
    assert chunks == [b"abcd", b"efgh", b"ij"]
    with pytest.raises(SourceNotFound):
        [c async for c in storage.read("missing", chunk_size=4)]


async def test_read_refuses_special_files(storage: LocalStorage) -> None:
    os.mkfifo(Path(storage.root) / "fifo")
    with trio.fail_after(5), pytest.raises(SourceNotFound, match="regular file"):
        [c async for c in storage.read("fifo", chunk_size=4)]


async def test_sweep_removes_what_a_crash_left(storage: LocalStorage) -> None:
    (Path(storage.root) / "sub").mkdir()
    (Path(storage.root) / "sub/.streamer-job-3.part").write_bytes(b"junk")
    await storage.sweep("sub/file", tag="job-3")
    assert os.listdir(Path(storage.root) / "sub") == []


async def test_something_in_the_way_is_a_conflict_not_a_storage_failure(
    storage: LocalStorage,
) -> None:
    await write(storage, "a.bin", b"a", Conflict.OVERWRITE)
    (Path(storage.root) / "dir").mkdir()
    with pytest.raises(PathBlocked) as below_a_file:
        await write(storage, "a.bin/inner", b"x", Conflict.OVERWRITE)
    with pytest.raises(PathBlocked) as onto_a_directory:
        await write(storage, "dir", b"x", Conflict.OVERWRITE)
    assert below_a_file.value.status_code == 409 and below_a_file.value.code == "EEXIST"
    assert onto_a_directory.value.code == "EISDIR"
    assert sorted(os.listdir(storage.root)) == ["a.bin", "dir"]  # no staging left behind


@pytest.mark.parametrize("size", [5, HOLD_BYTES + 1])  # group-committed, and streamed
@pytest.mark.parametrize("conflict", [Conflict.OVERWRITE, Conflict.RENAME])
async def test_a_symlink_at_the_final_name_is_replaced_not_written_through(
    storage: LocalStorage, tmp_path: Path, size: int, conflict: Conflict
) -> None:
    root = Path(storage.root)
    (tmp_path / "outside").write_bytes(b"keep")
    (root / "d").mkdir()
    (root / "d/inside").write_bytes(b"keep too")
    os.symlink(tmp_path / "outside", root / "d/out-link")
    os.symlink("inside", root / "d/in-link")
    data = b"n" * size
    final = [await write(storage, f"d/{name}", data, conflict) for name in ("out-link", "in-link")]
    assert (tmp_path / "outside").read_bytes() == b"keep"
    assert (root / "d/inside").read_bytes() == b"keep too"
    if conflict is Conflict.OVERWRITE:
        assert final == ["d/out-link", "d/in-link"]
        for name in ("out-link", "in-link"):
            assert not (root / "d" / name).is_symlink()
            assert (root / "d" / name).read_bytes() == data
    else:  # a link is a name taken like any other
        assert final == ["d/out-link (1)", "d/in-link (1)"]
        assert (root / "d/out-link").is_symlink()
    assert not [name for name in os.listdir(root / "d") if name.startswith(".streamer")]


async def test_file_digest_hashes_the_file_and_stops_when_cancelled(
    storage: LocalStorage,
) -> None:
    root = Path(storage.root)
    (root / "small.bin").write_bytes(b"abc" * 500_000)
    digest = await storage.file_digest("small.bin")
    assert digest == FileDigest(hashlib.sha256(b"abc" * 500_000).hexdigest())
    with open(root / "huge.bin", "wb") as f:  # noqa: ASYNC230 - creating a fixture
        f.truncate(1 << 40)  # sparse: hashing it whole would take minutes
    for part_size in (None, 1 << 20):  # the parts' thread stops too
        with trio.move_on_after(0.2) as scope:
            await storage.file_digest("huge.bin", part_size=part_size)
        assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("size", "part_size"),
    [(0, 4), (3, 4), (8, 4), (9, 4), (3 << 20, 1 << 20), ((5 << 20) + 7, 2 << 20)],
    ids=["empty", "one-short", "exact", "remainder", "chunk-aligned", "unaligned-mib"],
)
async def test_file_digest_hashes_each_part_size_slice(
    storage: LocalStorage, size: int, part_size: int
) -> None:
    """Slices as an S3 writer cuts parts: every ``part_size`` bytes, the last shorter,
    none for an empty file; the whole file's digest beside them."""
    data = os.urandom(size)
    (Path(storage.root) / "f.bin").write_bytes(data)
    digest = await storage.file_digest("f.bin", part_size=part_size)
    slices = [data[at : at + part_size] for at in range(0, size, part_size)]
    assert digest == FileDigest(
        hashlib.sha256(data).hexdigest(), tuple(hashlib.sha256(s).hexdigest() for s in slices)
    )


async def test_file_digest_of_a_missing_file_is_not_found(storage: LocalStorage) -> None:
    with pytest.raises(SourceNotFound):
        await storage.file_digest("nope.bin", part_size=4)


async def test_a_failed_write_of_held_bytes_leaves_no_temp(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes held in memory are written when the temp file is first needed (here to
    read them back); a failed write there (a full disk) leaves no temp after abort."""
    writer = await storage.open_writer("full.bin", conflict=Conflict.OVERWRITE, tag="t1")
    await writer.write(b"held")

    def disk_full(self: LocalWriter, fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalWriter, "_write_sync", disk_full)
    with pytest.raises(StorageError, match="No space left") as raised:
        await writer.hash_staged(lambda _: None)
    assert raised.value.code == "ENOSPC"
    await writer.abort()
    assert os.listdir(storage.root) == []


async def test_ranges_of_the_pinned_version_come_whole(storage: LocalStorage) -> None:
    data = os.urandom(3 * 4096 + 5)
    (Path(storage.root) / "big.bin").write_bytes(data)
    pinned = await storage.pin("big.bin")
    assert (pinned.size, pinned.sha256) == (len(data), None)
    into = memoryview(bytearray(4096 + 5))
    landed: list[int] = []

    async def land(count: int) -> None:
        landed.append(count)

    await storage.fetch_range(
        "big.bin", start=2 * 4096, version=pinned.version, into=into, landed=land
    )
    assert bytes(into) == data[2 * 4096 :]
    assert landed == [len(into)]  # told once, when every byte is in


def _change(path: Path, how: str) -> None:
    if how == "rewritten":  # same size, new bytes: the mtime tells
        with open(path, "r+b") as f:
            f.write(b"b")
        os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1))
    elif how == "grown":
        with open(path, "ab") as f:
            f.write(b"more")
    else:  # a copy renamed over it, mtime and all: another inode
        new = path.with_name("new.bin")
        new.write_bytes(path.read_bytes())
        os.utime(new, ns=(0, os.stat(path).st_mtime_ns))
        os.replace(new, path)


@pytest.mark.parametrize("how", ["rewritten", "grown", "replaced"])
async def test_a_file_changed_since_pinned_is_a_changed_source(
    storage: LocalStorage, how: str
) -> None:
    path = Path(storage.root) / "big.bin"
    path.write_bytes(b"a" * 8192)
    pinned = await storage.pin("big.bin")
    _change(path, how)

    async def land(count: int) -> None:
        raise AssertionError("nothing lands from a changed file")

    into = memoryview(bytearray(4096))
    with pytest.raises(StorageError) as caught:
        await storage.fetch_range(
            "big.bin", start=0, version=pinned.version, into=into, landed=land
        )
    assert caught.value.code == "SourceChanged"


async def test_pinning_needs_a_regular_file(storage: LocalStorage) -> None:
    (Path(storage.root) / "dir").mkdir()
    with pytest.raises(SourceNotFound):
        await storage.pin("dir")
    with pytest.raises(SourceNotFound):
        await storage.pin("missing.bin")
