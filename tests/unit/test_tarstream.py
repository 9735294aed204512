"""Tar framing: our writer and push parser, against each other, tarfile and GNU tar."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from streamer._pipeline.tarstream import (
    BLOCK,
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
    padding,
)

Entry = tuple[Member, bytes]


def archive(entries: Iterable[Entry]) -> bytes:
    """A complete archive written with our writer."""
    out = bytearray()
    for member, content in entries:
        out += encode_member(member) + content + padding(len(content))
    return bytes(out + END_OF_ARCHIVE)


def splits(data: bytes, how: str) -> Iterator[bytes]:
    """``data`` cut into pieces: ``whole``, ``1``, ``7`` or ``random<seed>``."""
    if how == "whole":
        yield data
        return
    rng = random.Random(how)
    pos = 0
    while pos < len(data):
        size = (
            int(how)
            if how.isdigit()
            else rng.choice([1, 3, 511, 512, 513, rng.randrange(1, 70_000)])
        )
        yield data[pos : pos + size]
        pos += size


def read(data: bytes, how: str = "whole", reader: TarReader | None = None) -> list[Entry]:
    """Parse ``data`` fed in pieces; return (member, content) pairs, checking event order."""
    reader = reader or TarReader()
    events: list[Event] = []
    for piece in splits(data, how):
        events += reader.feed(piece)
    reader.finish()
    entries: list[Entry] = []
    content: list[bytes] | None = None
    for event in events:
        if isinstance(event, Member):
            assert content is None, "member inside member"
            entries.append((event, b""))
            content = []
        elif isinstance(event, Data):
            assert content is not None and event.data, "stray or empty data"
            content.append(event.data)
        elif isinstance(event, MemberEnd):
            assert content is not None
            entries[-1] = (entries[-1][0], b"".join(content))
            content = None
    assert content is None
    assert isinstance(events[-1], ArchiveEnd)
    assert sum(isinstance(event, ArchiveEnd) for event in events) == 1
    return entries


def sample_entries() -> list[Entry]:
    rng = random.Random(7)

    def file(name: str, content: bytes, mode: int = 0o644, mtime: int = 0, uid: int = 0) -> Entry:
        return Member(name, MemberType.FILE, len(content), mode, mtime, uid=uid, gid=uid), content

    deep = "/".join(["d" * 60, "e" * 90, "f" * 120])  # > 255 bytes in total, components < 256
    sized = [
        file(f"top/size-{n}", rng.randbytes(n), mode=0o640, mtime=1_500_000_000 + n)
        for n in (0, 1, 511, 512, 513, 70_001)
    ]
    entries = [
        (Member("top", MemberType.DIR, mode=0o750, mtime=1_600_000_000), b""),
        (Member("top/empty", MemberType.DIR, mode=0o700, mtime=1_600_000_001), b""),
        *sized,
        file("x" * 101, b"long name", mtime=1),
        file(deep, b"very long path"),
        file("ünïcødé/文件-🎉.txt", "ü".encode(), mode=0o600),
        file("raw-\udcff-name", b"not utf-8"),  # surrogate escape of byte 0xff
        file("old", b"negative mtime", mtime=-86_400),
        file("ids", b"", uid=3_000_000),  # needs base-256 / PAX
        (Member("top/link", MemberType.SYMLINK, mode=0o777, linkname="size-1"), b""),
        (Member("long-link", MemberType.SYMLINK, mode=0o777, linkname=deep), b""),
        (Member("hard", MemberType.HARDLINK, linkname="top/size-1"), b""),
        (Member("fifo", MemberType.FIFO, mode=0o600), b""),
    ]
    return entries


SPLITS = ["whole", "1", "7", "random1", "random2"]


@pytest.mark.parametrize("how", SPLITS)
def test_round_trip_through_our_reader(how: str) -> None:
    entries = sample_entries()
    assert read(archive(entries), how) == entries


def test_data_is_streamed_in_the_pieces_fed() -> None:
    content = random.Random(1).randbytes(1 << 20)
    data = archive([(Member("big", MemberType.FILE, size=len(content)), content)])
    reader = TarReader()
    first = reader.feed(data[: BLOCK + 4096])
    assert first[0] == Member("big", MemberType.FILE, size=len(content))
    assert first[1:] == [Data(content[:4096])]  # content flows before the member is complete
    for pos in range(BLOCK + 4096, len(data), 4096):
        assert all(
            len(e.data) <= 4096 for e in reader.feed(data[pos : pos + 4096]) if isinstance(e, Data)
        )
    reader.finish()


def test_our_archive_read_by_tarfile() -> None:
    entries = [(m, c) for m, c in sample_entries() if m.type is not MemberType.FIFO]
    with tarfile.open(fileobj=io.BytesIO(archive(entries)), encoding="utf-8") as tar:
        infos = tar.getmembers()
        got = [
            (info.name.rstrip("/"), info.type, info.size, info.mode, info.mtime, info.linkname,
             info.uid, info.gid, tar.extractfile(info).read() if info.isreg() else b"")  # type: ignore[union-attr]
            for info in infos
        ]  # fmt: skip
    assert got == [
        (m.name, m.type.value.encode(), m.size, m.mode, m.mtime, m.linkname, m.uid, m.gid, c)
        for m, c in entries
    ]


def test_our_archive_extracted_by_gnu_tar(tmp_path: Path) -> None:
    entries = [(m, c) for m, c in sample_entries() if m.type is not MemberType.FIFO]
    subprocess.run(
        ["tar", "-x", "-p", "-f", "-", "-C", str(tmp_path)], input=archive(entries), check=True
    )
    for member, content in entries:
        path = tmp_path / member.name
        if member.type is MemberType.SYMLINK:
            assert os.readlink(path) == member.linkname
        elif member.type is MemberType.HARDLINK:
            assert path.samefile(tmp_path / member.linkname)
        elif member.type is MemberType.DIR:
            assert path.is_dir()
            assert path.stat().st_mode & 0o7777 == member.mode
        else:
            assert path.read_bytes() == content
            assert path.lstat().st_mtime == member.mtime


def make_small_tree(root: Path, *, long_names: bool) -> None:
    (root / "dir/empty").mkdir(parents=True)
    (root / "dir/file.txt").write_bytes(b"hello")
    (root / "dir/ünï.txt").write_bytes(b"unicode")
    os.link(root / "dir/file.txt", root / "hardlink")
    os.symlink("dir/file.txt", root / "symlink")
    if long_names:
        deep = root / ("p" * 90) / ("q" * 100)
        deep.mkdir(parents=True)
        (deep / ("r" * 120)).write_bytes(b"deep")
        os.symlink(os.path.relpath(deep / ("r" * 120), root), root / "long-symlink")
    else:  # fits ustar's 155-byte prefix + 100-byte name
        (root / ("p" * 90)).mkdir()
        (root / ("p" * 90) / ("r" * 80)).write_bytes(b"prefixed")


@pytest.mark.parametrize(
    ("fmt", "marker"),
    [
        ("gnu", b"././@LongLink"),
        ("oldgnu", b"././@LongLink"),
        ("pax", b"PaxHeaders"),
        ("ustar", b"ustar\x0000"),
    ],
)
def test_reads_gnu_tar_archives(tmp_path: Path, fmt: str, marker: bytes) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_small_tree(src, long_names=fmt != "ustar")
    data = subprocess.run(
        ["tar", "-c", f"--format={fmt}", "-f", "-", "-C", str(src), "."],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert marker in data  # the long-name machinery really was exercised
    entries = {m.name.removeprefix("./"): (m, c) for m, c in read(data, "random3")}
    assert entries.keys() == {
        ".", *(str(p.relative_to(src)) for p in src.rglob("*"))
    }  # fmt: skip
    for name, (member, content) in entries.items():
        path = src / name
        st = path.lstat()
        assert member.mtime == pytest.approx(st.st_mtime, abs=1)
        if member.type is MemberType.FILE:
            assert content == path.read_bytes()
            assert member.mode == st.st_mode & 0o7777
        elif member.type is MemberType.SYMLINK:
            assert member.linkname == os.readlink(path)
        elif member.type is MemberType.HARDLINK:
            assert (src / member.linkname.removeprefix("./")).samefile(path)
        else:
            assert member.type is MemberType.DIR and path.is_dir()
    kinds = {member.type for member, _ in entries.values()}
    assert kinds == {MemberType.DIR, MemberType.FILE, MemberType.SYMLINK, MemberType.HARDLINK}


def test_gnu_sparse_members_are_refused(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as f:
        f.truncate(1 << 20)
        f.write(b"x")
    for fmt in ("gnu", "pax"):
        data = subprocess.run(
            ["tar", "-c", "-S", f"--format={fmt}", "-f", "-", "-C", str(tmp_path), "sparse"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        with pytest.raises(MalformedArchive, match="sparse"):
            read(data)


def test_base256_numbers_from_tarfile() -> None:
    info = tarfile.TarInfo("huge")
    info.size, info.mtime, info.uid = 9 << 30, -1_000, 1 << 40
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    assert header[124] == 0x80 and header[136] == 0xFF  # base-256 size, negative mtime
    reader = TarReader()
    assert reader.feed(header) == [
        Member("huge", MemberType.FILE, size=9 << 30, mtime=-1_000.0, uid=1 << 40)
    ]
    with pytest.raises(MalformedArchive, match="member data"):
        reader.finish()


def test_huge_sizes_use_pax_and_base256() -> None:
    member = Member("huge", MemberType.FILE, size=9 << 30, mtime=-5)
    header = encode_member(member)
    assert b" size=9663676416\n" in header and b" mtime=-5\n" in header
    assert TarReader().feed(header) == [Member("huge", MemberType.FILE, size=9 << 30, mtime=-5.0)]
    ustar = tarfile.TarInfo.frombuf(header[-BLOCK:], "utf-8", "surrogateescape")
    assert (ustar.size, ustar.mtime) == (9 << 30, -5)  # readers that skip PAX see base-256


def test_non_ascii_names_travel_in_pax_records() -> None:
    # ustar fields are meant for the portable character set; PAX paths are UTF-8.
    header = encode_member(Member("dir/ü", MemberType.SYMLINK, linkname="é"))
    assert b" path=dir/\xc3\xbc\n" in header and b" linkpath=\xc3\xa9\n" in header
    assert encode_member(Member("plain", MemberType.FILE)).count(b"ustar") == 1  # no PAX


def test_pax_global_header_applies_to_later_members() -> None:
    buffer = io.BytesIO()
    pax = {"mtime": "1234567890.5", "uid": "4242"}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax) as tar:
        tar.addfile(tarfile.TarInfo("a"))
        info = tarfile.TarInfo("b")
        info.pax_headers = {"uid": ""}  # an empty local record cancels the global one
        tar.addfile(info)
    assert buffer.getvalue()[156:157] == b"g"
    members = [m for m, _ in read(buffer.getvalue(), "7")]
    assert [(m.name, m.mtime, m.uid) for m in members] == [
        ("a", 1234567890.5, 4242),
        ("b", 1234567890.5, 0),
    ]


def test_dataless_types_ignore_their_size_field() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname, link.size = tarfile.LNKTYPE, "x", 1000
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo("after"))
    assert buffer.getvalue()[124:135] == b"%011o" % 1000
    assert [(m.name, m.size) for m, _ in read(buffer.getvalue())] == [("link", 0), ("after", 0)]


def test_unknown_types_and_old_style_directories() -> None:
    volume = encode_member(Member("label", MemberType.FILE, size=3))
    volume = patch_header(volume, 156, b"V")
    old_dir = patch_header(encode_member(Member("olddir/", MemberType.FILE)), 156, b"\0")
    data = volume + b"abc" + padding(3) + old_dir + END_OF_ARCHIVE
    assert read(data) == [
        (Member("label", MemberType.OTHER, size=3), b"abc"),
        (Member("olddir", MemberType.DIR), b""),
    ]


def test_ustar_prefix_field() -> None:
    header = bytearray(encode_member(Member("file", MemberType.FILE)))
    header[345 : 345 + 9] = b"some/dir\0"
    assert (
        read(patch_header(bytes(header), 0, b"file") + END_OF_ARCHIVE)[0][0].name == "some/dir/file"
    )


def patch_header(header: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes in the last header block and fix its checksum."""
    block = bytearray(header[-BLOCK:])
    block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return header[:-BLOCK] + bytes(block)


def test_bad_checksum_is_rejected() -> None:
    data = bytearray(archive(sample_entries()[:3]))
    data[BLOCK * 2 + 5] ^= 0x01  # a name byte of the third header
    with pytest.raises(MalformedArchive, match="checksum"):
        read(bytes(data))


def test_signed_checksum_of_old_tars_is_accepted() -> None:
    header = bytearray(encode_member(Member("caf\xe9", MemberType.FILE)))[-BLOCK:]
    header[0:5] = b"caf\xe9\0"
    header[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in header)
    header[148:156] = b"%06o\0 " % signed
    assert read(bytes(header) + END_OF_ARCHIVE)[0][0].name == "caf\udce9"


@pytest.mark.parametrize(
    "cut",
    [100, BLOCK, BLOCK + 1000, -2 * BLOCK, -BLOCK],  # header, data, boundary, end marker
)
def test_truncated_archive_is_rejected(cut: int) -> None:
    data = archive([(Member("a", MemberType.FILE, size=2000), bytes(2000))])
    read(data)  # the whole archive is fine
    with pytest.raises(MalformedArchive, match="truncated"):
        read(data[:cut])


def test_bytes_after_the_end_marker_are_ignored() -> None:
    data = archive([(Member("a", MemberType.FILE, size=1), b"x")])
    assert read(data + bytes(10240) + b"junk") == [(Member("a", MemberType.FILE, size=1), b"x")]


def test_extended_header_without_member_is_rejected() -> None:
    pax_only = encode_member(Member("x" * 200, MemberType.FILE))[:-BLOCK]
    assert pax_only[156:157] == b"x"
    with pytest.raises(MalformedArchive, match="extended header not followed by a member"):
        read(pax_only + END_OF_ARCHIVE)


def test_lone_zero_block_is_rejected() -> None:
    one = archive([(Member("a", MemberType.FILE), b"")])[: -2 * BLOCK]
    with pytest.raises(MalformedArchive, match="lone zero block"):
        read(one + bytes(BLOCK) + one)


@pytest.mark.parametrize(
    "field",
    [(124, b"0000000009\0"), (100, b"07x4\0")],  # a digit that is not octal, garbage in mode
)
def test_bad_numeric_field_is_rejected(field: tuple[int, bytes]) -> None:
    data = patch_header(encode_member(Member("a", MemberType.FILE)), *field) + END_OF_ARCHIVE
    with pytest.raises(MalformedArchive, match="field"):
        read(data)


@pytest.mark.parametrize("record", [b"13 path=abc\n", b"9 path=ab\n", b"x path=a\n", b"6 abc\n"])
def test_bad_pax_record_is_rejected(record: bytes) -> None:
    header = patch_header(
        encode_member(Member("pax", MemberType.FILE)), 124, b"%011o\0" % len(record)
    )
    header = patch_header(header, 156, b"x")
    data = header + record + padding(len(record)) + encode_member(Member("a", MemberType.FILE))
    with pytest.raises(MalformedArchive, match="PAX"):
        read(data + END_OF_ARCHIVE)


def test_member_limit() -> None:
    data = archive([(Member(f"f{i}", MemberType.FILE), b"") for i in range(5)])
    assert len(read(data, reader=TarReader(max_members=5))) == 5
    with pytest.raises(ArchiveLimitExceeded, match="more than 4 members"):
        read(data, reader=TarReader(max_members=4))


def test_total_size_limit_trips_before_any_content() -> None:
    data = archive(
        [
            (Member("a", MemberType.FILE, size=60), bytes(60)),
            (Member("b", MemberType.FILE, size=50), bytes(50)),
        ]
    )
    assert len(read(data, reader=TarReader(max_total_bytes=110))) == 2
    reader = TarReader(max_total_bytes=100)
    events = reader.feed(data[: 2 * BLOCK])  # a and its content
    assert [e for e in events if isinstance(e, Member)] == [Member("a", MemberType.FILE, size=60)]
    with pytest.raises(ArchiveLimitExceeded, match="exceeds 100 bytes"):
        reader.feed(data[2 * BLOCK :])  # b's header: refused before its content


@pytest.mark.parametrize("kind", ["pax", "gnu"])
def test_header_size_limit(kind: str) -> None:
    name = "n" * 2000
    if kind == "pax":
        data = archive([(Member(name, MemberType.FILE), b"")])
    else:
        data = tarfile.TarInfo(name).tobuf(tarfile.GNU_FORMAT, "utf-8", "strict") + END_OF_ARCHIVE
    assert read(data)[0][0].name == name
    with pytest.raises(ArchiveLimitExceeded, match="1024-byte limit"):
        read(data, reader=TarReader(max_header_bytes=1024))


def test_global_header_size_limit() -> None:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "c" * 600}
    ):
        pass
    size = int(buffer.getvalue()[124:135], 8)
    one_global = buffer.getvalue()[: BLOCK + size + len(padding(size))]
    assert TarReader(max_header_bytes=1024).feed(one_global * 3) == []  # same key: no growth
    grow = one_global.replace(b"comment", b"commenu")
    with pytest.raises(ArchiveLimitExceeded, match="global PAX"):
        TarReader(max_header_bytes=1024).feed(one_global + grow)
