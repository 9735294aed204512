"""Directory transfers end to end: tree -> tar_chunks -> TarReader -> SafeExtractor.

Also GNU tar and tarfile on either side, hostile archives, and a live source tree.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import trio

from streamer._errors import Conflict
from streamer._pipeline.archive import DEFAULT_CHUNK_SIZE, iter_tree, tar_chunks, tar_stream
from streamer._pipeline.extract import SafeExtractor, UnsafeArchive
from streamer._pipeline.tarstream import (
    END_OF_ARCHIVE,
    ArchiveEnd,
    ArchiveLimitExceeded,
    Data,
    Event,
    MalformedArchive,
    Member,
    MemberEnd,
    MemberType,
    TarReader,
    encode_member,
)

LONG_PATH = "/".join(["L" * 100, "M" * 100, "N" * 100 + ".dat"])  # > 255 bytes in total


# -- helpers -------------------------------------------------------------------


def build_tree(root: Path) -> None:
    """A tree with every shape the transfer must preserve; integer mtimes throughout."""
    rng = random.Random(42)
    files = {
        **{f"sizes/{n}.bin": n for n in (0, 1, 511, 512, 513)},
        "big.bin": 3 * 1024 * 1024 + 17,
        "nested/a/b/c/deep.txt": 10,
        "x" * 150 + ".txt": 5,
        LONG_PATH: 700,
        "ünïcødé/кириллица-文件-🎉.txt": 20,
        "modes/exec.sh": 30,
        "modes/private": 3,
        "modes/group": 4,
        "modes/dir750/inner": 1,
        "readonly/inside.txt": 6,
    }
    for name, size in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(rng.randbytes(size))
    (root / "empty").mkdir()
    (root / "nested/empty-inner").mkdir()
    symlinks = {
        "link-to-file": "sizes/513.bin",
        "nested/a/b/c/up": "../../../../sizes/1.bin",
        "nested/a/link-dir": "b",
        "dangling": "missing/target",
        "long-link": LONG_PATH,
    }
    for name, target in symlinks.items():
        os.symlink(target, root / name)
    modes = {"modes/exec.sh": 0o755, "modes/private": 0o600, "modes/group": 0o640}
    modes |= {"modes/dir750": 0o750, "readonly": 0o555}
    for name, mode in modes.items():
        os.chmod(root / name, mode)
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for i, path in enumerate(paths):
        t = (1_600_000_000 + 1000 * i) * 10**9
        os.utime(path, ns=(t, t), follow_symlinks=False)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything the transfer must preserve, by relative path (not symlink mtimes)."""
    result: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns // 10**9
            if stat.S_ISLNK(st.st_mode):
                entry: tuple[Any, ...] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entry = ("dir", mode, mtime)
            else:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                entry = ("file", mode, mtime, digest)
            result[os.path.relpath(path, root)] = entry
    return result


def rechunk(chunks: Iterable[bytes], seed: int) -> Iterator[bytes]:
    """The same bytes in random pieces from 1 byte to 200 KiB."""
    data = b"".join(chunks)
    rng, pos = random.Random(seed), 0
    while pos < len(data):
        size = rng.choice([1, 7, 512, rng.randrange(1, 200_000)])
        yield data[pos : pos + size]
        pos += size


def extract(
    pieces: Iterable[bytes], staging: Path, *, max_members: int | None = None
) -> SafeExtractor:
    reader = TarReader()
    with SafeExtractor(str(staging), max_members=max_members) as extractor:
        for piece in pieces:
            extractor.feed(reader.feed(piece))
        reader.finish()
        extractor.finish()
    return extractor


def gnu_tar(*args: str, data: bytes = b"") -> bytes:
    return subprocess.run(["tar", *args], input=data, capture_output=True, check=True).stdout


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    build_tree(root)
    return root


# -- round trips ------------------------------------------------------------------


@pytest.mark.parametrize(("chunk_size", "seed"), [(DEFAULT_CHUNK_SIZE, None), (4096, 1), (777, 2)])
def test_round_trip(tree: Path, tmp_path: Path, chunk_size: int, seed: int | None) -> None:
    chunks: Iterable[bytes] = tar_chunks(str(tree), chunk_size)
    if seed is not None:
        chunks = rechunk(chunks, seed)
    staging = tmp_path / "staging"
    extractor = extract(chunks, staging)
    assert snapshot(staging) == snapshot(tree)
    assert len(snapshot(tree)) == extractor.members > 30
    for link in ("link-to-file", "nested/a/b/c/up"):
        assert os.lstat(staging / link).st_mtime == os.lstat(tree / link).st_mtime


def test_our_archive_extracted_by_tarfile(tree: Path, tmp_path: Path) -> None:
    data = b"".join(tar_chunks(str(tree)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "out", filter="fully_trusted")
    assert snapshot(tmp_path / "out") == snapshot(tree)


def test_our_archive_extracted_by_gnu_tar(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    gnu_tar(
        "-x", "-p", "-f", "-", "-C", str(tmp_path / "out"), data=b"".join(tar_chunks(str(tree)))
    )
    assert snapshot(tmp_path / "out") == snapshot(tree)


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_gnu_tar_archive_extracted_by_us(tree: Path, tmp_path: Path, fmt: str) -> None:
    os.link(tree / "sizes/513.bin", tree / "hardlink")
    data = gnu_tar("-c", f"--format={fmt}", "-f", "-", "-C", str(tree), ".")
    extract(rechunk([data], 3), tmp_path / "staging")
    assert snapshot(tmp_path / "staging") == snapshot(tree)
    assert (tmp_path / "staging/hardlink").samefile(tmp_path / "staging/sizes/513.bin")


def test_special_permission_bits_are_dropped(tmp_path: Path) -> None:
    members = [
        Member("suid", MemberType.FILE, mode=0o4755),
        Member("sgid", MemberType.FILE, mode=0o2750),
        Member("sticky", MemberType.DIR, mode=0o1777),
    ]
    extract([b"".join(map(encode_member, members)) + END_OF_ARCHIVE], tmp_path / "s")
    modes = {m.name: stat.S_IMODE(os.lstat(tmp_path / "s" / m.name).st_mode) for m in members}
    assert modes == {"suid": 0o755, "sgid": 0o750, "sticky": 0o777}


# -- hostile archives ---------------------------------------------------------------


def tar_of(*infos: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    """An archive written by tarfile, which writes whatever names it is given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in infos:
            info, data = item if isinstance(item, tuple) else (item, b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    result = tarfile.TarInfo(name)
    result.type, result.linkname = kind, linkname
    return result


def file(name: str, data: bytes = b"evil") -> tuple[tarfile.TarInfo, bytes]:
    result = info(name)
    result.size = len(data)
    return result, data


def with_pax(name: str, path: str) -> tarfile.TarInfo:
    result = info(name)
    result.pax_headers = {"path": path}
    return result


def dir_with_content() -> tuple[tarfile.TarInfo, bytes]:
    result = info("d", tarfile.DIRTYPE)
    result.size = 4
    return result, b"evil"


SYM, LNK, DIR = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
HOSTILE: dict[str, tuple[list[Any], str]] = {
    "absolute": ([file("/streamer-test-abs-evil")], "absolute"),
    "dotdot": ([file("../evil")], r"'\.\.'"),
    "nested-dotdot": ([file("a/../../evil")], r"'\.\.'"),
    "nul": ([with_pax("x", "a\0/../evil")], "NUL"),
    "symlink-absolute": ([info("etc", SYM, "/etc"), file("etc/evil")], "relative"),
    "symlink-parent": ([info("a", SYM, ".."), file("a/evil")], "leaves"),
    "symlink-nested-escape": ([info("d", DIR), info("d/l", SYM, "../../evil")], "leaves"),
    "symlink-climb-after-name": ([info("s", SYM, "."), info("l", SYM, "s/../../evil")], "leaves"),
    "symlink-then-through": (
        [info("sub", DIR), info("d", SYM, "sub"), file("d/evil")],
        "symlink or not a directory",
    ),
    "hardlink-outside": ([info("h", LNK, "../evil")], r"'\.\.'"),
    "hardlink-absolute": ([info("h", LNK, "/etc/passwd")], "absolute"),
    "hardlink-absent": ([info("h", LNK, "nope")], "no earlier regular file"),
    "hardlink-absent-dir": ([info("h", LNK, "nope/x")], "no earlier regular file"),
    "hardlink-to-dir": ([info("d", DIR), info("h", LNK, "d")], "no earlier regular file"),
    "hardlink-to-symlink": ([info("s", SYM, "x"), info("h", LNK, "s")], "no earlier regular"),
    "char-device": ([info("null", tarfile.CHRTYPE)], "char"),
    "block-device": ([info("sda", tarfile.BLKTYPE)], "block"),
    "fifo": ([info("pipe", tarfile.FIFOTYPE)], "fifo"),
    "unknown-type": ([info("vol", b"V")], "other"),
    "duplicate": ([file("f"), file("f")], "already exists"),
    "dir-over-file": ([file("f"), info("f", DIR)], "not a directory"),
    "file-as-root": ([file(".")], "staging root"),
    "dir-with-content": ([dir_with_content()], "has content"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_is_refused(tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    items, message = HOSTILE[case]
    with pytest.raises(UnsafeArchive, match=message):
        extract([tar_of(*items)], out / "staging")
    assert os.listdir(out) == ["staging"]
    assert not os.path.lexists(out / "staging/nope")
    assert not os.path.lexists("/etc/evil") and not os.path.lexists("/streamer-test-abs-evil")


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (file("planted-dir/pwned"), "symlink or not a directory"),
        (file("planted-dir/sub/pwned"), "symlink or not a directory"),
        (info("planted-dir", DIR), "symlink or not a directory"),
        (file("planted-file"), "already exists"),
    ],
)
def test_symlinks_planted_in_staging_are_never_followed(
    tmp_path: Path, member: Any, message: str
) -> None:
    outside, staging = tmp_path / "outside", tmp_path / "staging"
    outside.mkdir()
    with SafeExtractor(str(staging)) as extractor:
        os.symlink(outside, staging / "planted-dir")  # e.g. by a racing process
        os.symlink(outside / "file", staging / "planted-file")
        with pytest.raises(UnsafeArchive, match=message):
            extractor.feed(TarReader().feed(tar_of(member)))
    assert os.listdir(outside) == []


def test_member_limit(tmp_path: Path) -> None:
    data = tar_of(*(file(f"f{i}") for i in range(4)))
    assert extract([data], tmp_path / "ok", max_members=4).members == 4
    with pytest.raises(ArchiveLimitExceeded, match="more than 3 members"):
        extract([data], tmp_path / "too-many", max_members=3)
    assert sorted(os.listdir(tmp_path / "too-many")) == ["f0", "f1", "f2"]


def events_for(size: int, *pieces: bytes) -> list[Event]:
    return [Member("f", MemberType.FILE, size=size), *map(Data, pieces), MemberEnd()]


def test_content_beyond_declared_size_is_refused(tmp_path: Path) -> None:
    with (
        SafeExtractor(str(tmp_path / "s")) as extractor,
        pytest.raises(UnsafeArchive, match="more content than its declared 3 bytes"),
    ):
        extractor.feed(events_for(3, b"ab", b"cd"))
    assert (tmp_path / "s/f").read_bytes() == b"ab"


def test_content_short_of_declared_size_is_refused(tmp_path: Path) -> None:
    with (
        SafeExtractor(str(tmp_path / "s")) as extractor,
        pytest.raises(MalformedArchive, match="after 2 of 3 bytes"),
    ):
        extractor.feed(events_for(3, b"ab"))


def test_finish_requires_the_end_of_archive(tmp_path: Path) -> None:
    extractor = SafeExtractor(str(tmp_path / "s"))
    extractor.feed(events_for(1, b"x"))
    with pytest.raises(MalformedArchive, match="end-of-archive"):
        extractor.finish()
    extractor = SafeExtractor(str(tmp_path / "t"))
    extractor.feed([*events_for(1, b"x"), ArchiveEnd()])
    extractor.finish()


def test_staging_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    SafeExtractor(str(tmp_path / "s")).abort()  # existing and empty is fine
    (tmp_path / "s/x").touch()
    with pytest.raises(Conflict, match="not empty"):
        SafeExtractor(str(tmp_path / "s"))


def test_abort_closes_every_descriptor(tmp_path: Path) -> None:
    before = open_fds()
    extractor = SafeExtractor(str(tmp_path / "s"))
    names = [f"d{i}/e/f{j}" for i in range(100) for j in range(2)]  # more dirs than the cache
    for name in names:
        extractor.feed([Member(name, MemberType.FILE), MemberEnd()])
    assert open_fds() <= before + 1 + 64  # the root and a bounded cache of directories
    extractor.feed([Member("last/open", MemberType.FILE, size=10), Data(b"12345")])
    assert open_fds() > before
    extractor.abort()
    extractor.abort()
    assert open_fds() == before


# -- the source side ---------------------------------------------------------------


def test_iter_tree_order_and_entries(tree: Path) -> None:
    before = open_fds()
    names = [entry.member.name for entry in iter_tree(str(tree))]
    assert open_fds() == before
    siblings: dict[str, list[str]] = {}
    for name in names:
        siblings.setdefault(os.path.dirname(name), []).append(name)
    assert all(group == sorted(group) for group in siblings.values())
    assert len(siblings[""]) > 5 and len(siblings["nested/a"]) == 2
    assert (
        names.index("nested/a") < names.index("nested/a/b") < names.index("nested/a/b/c/deep.txt")
    )
    assert "nested/a/link-dir" in names and "nested/a/link-dir/c" not in names  # not followed
    assert sorted(names) == sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    kinds = {entry.member.name: entry.member.type for entry in iter_tree(str(tree))}
    assert kinds["empty"] is MemberType.DIR and kinds["dangling"] is MemberType.SYMLINK


def test_special_files_are_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"x")
    data = b"".join(tar_chunks(str(tmp_path)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["file"]


def test_small_files_are_batched_into_full_chunks(tmp_path: Path) -> None:
    for i in range(2000):
        (tmp_path / f"f{i:04}").write_bytes(b"x" * 100)
    (tmp_path / ("long" * 50)).write_bytes(bytes(300_000))  # a PAX header mid-stream
    chunks = list(tar_chunks(str(tmp_path), 64 * 1024))
    assert len(chunks) > 30
    assert all(64 * 1024 <= len(c) <= 64 * 1024 + 4 * 512 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 64 * 1024 + 4 * 512
    assert [m.name for m, _ in parse(chunks)][-3:] == ["f1998", "f1999", "long" * 50]


async def test_tar_stream_hops_once_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(2000):
        (tmp_path / f"f{i:04}").write_bytes(b"x" * 100)
    hops = 0
    real_run_sync = trio.to_thread.run_sync

    async def counting_run_sync(fn: Callable[..., Any], *args: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_run_sync(fn, *args)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting_run_sync)
    streamed = [chunk async for chunk in tar_stream(str(tmp_path))]
    assert b"".join(streamed) == b"".join(tar_chunks(str(tmp_path)))
    assert hops == len(streamed) + 1 <= 4  # 2 MiB of tar in 1 MiB chunks, plus the end


async def test_tar_stream_closed_early_releases_descriptors(tree: Path) -> None:
    before = open_fds()
    async with aclosing(tar_stream(str(tree), 4096)) as stream:
        async for _ in stream:
            break
        assert open_fds() > before
    assert open_fds() == before


def live_archive(src: Path, change: Callable[[], None]) -> list[tuple[Member, bytes]]:
    """Stream ``src`` in 1 KiB chunks, calling ``change`` after the first; parse the result."""
    chunks = tar_chunks(str(src), 1024)
    first = next(chunks)
    change()
    return parse([first, *chunks])


def parse(chunks: Iterable[bytes]) -> list[tuple[Member, bytes]]:
    """(member, content) pairs of a complete archive."""
    reader, entries = TarReader(), []
    for chunk in chunks:
        for event in reader.feed(chunk):
            if isinstance(event, Member):
                entries.append((event, b""))
            elif isinstance(event, Data):
                entries[-1] = (entries[-1][0], entries[-1][1] + event.data)
    reader.finish()
    return entries


def test_live_tree_file_shrinks_grows_or_vanishes(tmp_path: Path) -> None:
    content = random.Random(5).randbytes(10_000)
    (tmp_path / "a.bin").write_bytes(content)
    (tmp_path / "b.bin").write_bytes(content)
    (tmp_path / "c.txt").write_bytes(b"soon gone")

    def change() -> None:
        os.truncate(tmp_path / "a.bin", 100)  # being read: padded with zeros
        with (tmp_path / "b.bin").open("ab") as f:  # not yet opened: archived as it is then
            f.write(b"more")
        (tmp_path / "c.txt").unlink()  # listed, then gone: skipped

    entries = live_archive(tmp_path, change)
    assert [(m.name, m.size) for m, _ in entries] == [("a.bin", 10_000), ("b.bin", 10_004)]
    assert entries[0][1] == content[:512] + bytes(10_000 - 512)
    assert entries[1][1] == content + b"more"


def test_live_tree_file_grows_while_read(tmp_path: Path) -> None:
    content = random.Random(6).randbytes(10_000)
    (tmp_path / "a.bin").write_bytes(content)

    def grow() -> None:
        with (tmp_path / "a.bin").open("ab") as f:
            f.write(b"late")

    assert [(m.name, m.size, c) for m, c in live_archive(tmp_path, grow)] == [
        ("a.bin", 10_000, content)
    ]
