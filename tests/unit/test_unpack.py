"""ExtractSink (decompress + untar + safe extract in a thread) and server directory commits."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
import trio

from streamer._errors import NotFound
from streamer._node import servers
from streamer._pipeline.archive import tar_chunks
from streamer._pipeline.compression import ArchiveFormat, Compress, CorruptArchive
from streamer._pipeline.extract import UnsafeArchive
from streamer._pipeline.tarformat import ArchiveLimitExceeded, MalformedArchive
from streamer._pipeline.unpack import ExtractSink

MIB = 1 << 20
SERVER = "8a2b7c1d-0e4f-4a5b-9c6d-7e8f9a0b1c2d"


def make_tree(root: Path) -> Path:
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/data.bin").write_bytes(os.urandom(3 * MIB))
    (root / "a/text.txt").write_bytes(b"hello " * 10_000)
    (root / "empty").mkdir()
    os.symlink("b/data.bin", root / "a/link")
    return root


def listing(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


async def compressed(root: Path, fmt: ArchiveFormat) -> list[bytes]:
    stage = Compress(fmt)
    out = [await stage.feed(chunk) for chunk in tar_chunks(str(root), 256 * 1024)]
    out.append(await stage.flush())
    return [c for c in out if c]


def hostile_tar(name: str = "../escape.txt", kind: bytes = tarfile.REGTYPE) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 4
        tar.addfile(ok, io.BytesIO(b"fine"))
        bad = tarfile.TarInfo(name)
        bad.type = kind
        bad.size = 4 if kind == tarfile.REGTYPE else 0
        tar.addfile(bad, io.BytesIO(b"evil") if bad.size else None)
    return gzip.compress(buffer.getvalue())


async def feed_all(sink: ExtractSink, chunks: list[bytes], piece: int = 64 * 1024) -> None:
    for chunk in chunks:
        for i in range(0, len(chunk), piece):
            await sink.write(chunk[i : i + piece])
    await sink.finish()


@pytest.mark.parametrize(
    ("fmt", "durable"),
    [(ArchiveFormat.GZIP, False), (ArchiveFormat.ZSTD, False), (ArchiveFormat.ZSTD, True)],
)
async def test_round_trip(tmp_path: Path, fmt: ArchiveFormat, durable: bool) -> None:
    src = make_tree(tmp_path / "src")
    staging = tmp_path / "staging"
    sink = ExtractSink(str(staging), durable=durable)
    try:
        await feed_all(sink, await compressed(src, fmt))
    finally:
        await sink.aclose()
    assert listing(staging) == listing(src)
    assert sink.format is fmt and sink.members == 6 and sink.current is None
    assert sink.bytes_out > 3 * MIB


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("../escape.txt", tarfile.REGTYPE),
        ("/etc/passwd-copy", tarfile.REGTYPE),
        ("dev-null", tarfile.CHRTYPE),
        ("fifo", tarfile.FIFOTYPE),
    ],
)
async def test_hostile_members_fail_the_sink(tmp_path: Path, name: str, kind: bytes) -> None:
    staging = tmp_path / "staging"
    sink = ExtractSink(str(staging))
    with pytest.raises(UnsafeArchive):
        try:
            await feed_all(sink, [hostile_tar(name, kind)], piece=100)
        finally:
            await sink.aclose()
    assert not (tmp_path / "escape.txt").exists()


async def test_an_early_error_stops_the_writer(tmp_path: Path) -> None:
    sink = ExtractSink(str(tmp_path / "staging"), max_pending=2)
    with pytest.raises(CorruptArchive):
        await sink.write(b"PK\x03\x04 not a tar.gz")
        for _ in range(1000):  # the worker died: writes fail instead of blocking forever
            await sink.write(bytes(1024))
    await sink.aclose()


async def test_limits(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    chunks = await compressed(src, ArchiveFormat.ZSTD)
    sink = ExtractSink(str(tmp_path / "s1"), max_bytes=MIB)
    with pytest.raises(ArchiveLimitExceeded):
        await feed_all(sink, chunks)
    await sink.aclose()
    sink = ExtractSink(str(tmp_path / "s2"), max_members=3)
    with pytest.raises(ArchiveLimitExceeded):
        await feed_all(sink, chunks)
    await sink.aclose()


async def test_truncated_archive_is_refused_at_finish(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    data = b"".join(await compressed(src, ArchiveFormat.ZSTD))
    sink = ExtractSink(str(tmp_path / "staging"))
    with pytest.raises(MalformedArchive):
        await feed_all(sink, [data[: len(data) // 2]])
    await sink.aclose()


async def test_aclose_mid_stream_stops_the_worker(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    chunks = await compressed(src, ArchiveFormat.GZIP)
    sink = ExtractSink(str(tmp_path / "staging"))
    await sink.write(chunks[0])
    with trio.fail_after(5):
        await sink.aclose()
    servers.remove_tree(str(tmp_path / "staging"))
    assert not (tmp_path / "staging").exists()


# -- server directories ----------------------------------------------------------


def test_commit_replaces_atomically_and_removes_the_old_tree(tmp_path: Path) -> None:
    root = tmp_path / "servers"
    target = root / SERVER
    (target / "old").mkdir(parents=True)
    (target / "old/file").write_text("old")
    staging = Path(servers.staging_dir(str(root), SERVER, "job1"))
    (staging / "new").mkdir(parents=True)
    servers.commit(str(staging), str(target))
    assert listing(target) == {"new": "dir"}
    assert sorted(p.name for p in root.iterdir()) == [SERVER]
    # And into a place where nothing was.
    staging2 = Path(servers.staging_dir(str(root), SERVER.replace("8", "9"), "job2"))
    staging2.mkdir()
    servers.commit(str(staging2), str(root / SERVER.replace("8", "9")), durable=False)
    assert (root / SERVER.replace("8", "9")).is_dir()


def test_sweep_removes_only_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "servers"
    (root / SERVER).mkdir(parents=True)
    Path(servers.staging_dir(str(root), SERVER, "job1"), "x").mkdir(parents=True)
    (root / f".{SERVER}.old-.x.staging-job0").mkdir()
    (root / ".hidden-but-not-ours").mkdir()
    assert len(servers.sweep(str(root))) == 2
    assert sorted(p.name for p in root.iterdir()) == [".hidden-but-not-ours", SERVER]
    assert servers.sweep(str(tmp_path / "missing")) == []


def test_server_dirs_are_uuids_and_real_directories(tmp_path: Path) -> None:
    for bad in ("..", "../x", "a/b", "not-a-uuid", ""):
        with pytest.raises(NotFound):
            servers.server_dir(str(tmp_path), bad)
    with pytest.raises(NotFound):
        servers.existing_server_dir(str(tmp_path), SERVER)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / SERVER)
    with pytest.raises(NotFound):  # a symlink is not a server directory
        servers.existing_server_dir(str(tmp_path), SERVER)


async def test_hooks_get_the_uuid_and_fail_on_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = ["sh", "-c", f'echo "$1 $STREAMER_HOOK $STREAMER_SERVER_DIR" > {out}', "hook"]
    await servers.run_hook("after_extract", script, SERVER, "/srv/x", seconds=10)
    assert out.read_text() == f"{SERVER} after_extract /srv/x\n"
    with pytest.raises(servers.HookFailed, match="status 3"):
        await servers.run_hook("before_archive", ["sh", "-c", "exit 3"], SERVER, "/", seconds=10)
    with pytest.raises(servers.HookFailed, match="within"):
        await servers.run_hook("x", ["sh", "-c", "sleep 5", "-"], SERVER, "/", seconds=0.2)
    with pytest.raises(servers.HookFailed, match="could not run"):
        await servers.run_hook("before_archive", [str(tmp_path / "nope")], SERVER, "/", seconds=1)
    await servers.run_hook("before_archive", [], SERVER, "/", seconds=1)  # no hook: nothing


def test_estimate_tar_size(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    actual = sum(map(len, tar_chunks(str(src))))
    assert abs(servers.estimate_tar_size(str(src)) - actual) <= 2048


def test_commit_over_a_symlink_replaces_the_link_not_its_target(tmp_path: Path) -> None:
    root = tmp_path / "servers"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep")
    os.symlink(elsewhere, root / SERVER)
    staging = Path(servers.staging_dir(str(root), SERVER, "job1"))
    (staging / "new").mkdir(parents=True)
    servers.commit(str(staging), str(root / SERVER))
    assert (root / SERVER).is_dir() and not (root / SERVER).is_symlink()
    assert (elsewhere / "precious").read_text() == "keep"
    assert sorted(p.name for p in root.iterdir()) == [SERVER]
