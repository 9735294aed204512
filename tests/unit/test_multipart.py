"""The sans-IO multipart parser: any split of the body gives the same parts."""

from __future__ import annotations

import random

import pytest

from streamer._node import multipart
from streamer._node.multipart import (
    Finished,
    MalformedMultipart,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
)

BOUNDARY = "7f1c0ce0a5a1e3c1d7b2f0b1e9d8c7a6b5f4e3d2c1b0a9f8e7d6c5b4a3b2"


def go_body(archive: bytes, checksum: str, boundary: str = BOUNDARY) -> bytes:
    """Byte for byte what Go's mime/multipart writer produces for Wings' push."""
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="archive"; filename="archive.tar.gz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + archive
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="checksum"\r\n\r\n'.encode()
        + checksum.encode()
        + f"\r\n--{boundary}--\r\n".encode()
    )


def parse(body: bytes, pieces: list[int] | None = None, boundary: str = BOUNDARY) -> list[object]:
    """Feed ``body`` cut at ``pieces`` (sizes); return events with data merged per part."""
    parser = MultipartParser(boundary)
    events: list[object] = []
    pos = 0
    for size in [*(pieces or []), len(body)]:
        events += parser.feed(body[pos : pos + size])
        pos += size
        if pos >= len(body):
            break
    parser.finish()
    merged: list[object] = []
    for event in events:
        if isinstance(event, PartData):
            assert event.data, "PartData is never empty"
            if merged and isinstance(merged[-1], PartData):
                merged[-1] = PartData(merged[-1].data + event.data)
                continue
        merged.append(event)
    return merged


def expected(archive: bytes, checksum: bytes) -> list[object]:
    out: list[object] = [
        PartStart(
            "archive",
            "archive.tar.gz",
            {
                "content-disposition": 'form-data; name="archive"; filename="archive.tar.gz"',
                "content-type": "application/octet-stream",
            },
        )
    ]
    if archive:
        out.append(PartData(archive))
    out += [PartEnd(), PartStart("checksum", None, {"content-disposition": out_disp()})]
    out += [PartData(checksum), PartEnd(), Finished()]
    return out


def out_disp() -> str:
    return 'form-data; name="checksum"'


def tricky_archive(rng: random.Random, size: int) -> bytes:
    """Random bytes salted with delimiter look-alikes and partial delimiters."""
    pieces: list[bytes] = []
    near = [
        b"\r",
        b"\r\n",
        b"\r\n-",
        b"\r\n--",
        f"\r\n--{BOUNDARY[:30]}".encode(),
        f"\r\n--{BOUNDARY[:-1]}".encode(),
        f"--{BOUNDARY}".encode(),  # without the CRLF it is content
        f"\n--{BOUNDARY}".encode(),
    ]
    while sum(map(len, pieces)) < size:
        pieces.append(rng.choice(near) if rng.random() < 0.3 else rng.randbytes(rng.randint(1, 40)))
    data = b"".join(pieces)
    # Pieces may join into a real delimiter, which content cannot contain: break those.
    return data.replace(f"\r\n--{BOUNDARY}".encode(), f"\r\n-+{BOUNDARY}".encode())


def test_go_shaped_body_in_one_piece() -> None:
    archive = b"\x1f\x8b" + bytes(range(256)) * 10
    checksum = "ab" * 32
    assert parse(go_body(archive, checksum)) == expected(archive, checksum.encode())


@pytest.mark.parametrize("seed", range(40))
def test_random_splits_give_the_same_parts(seed: int) -> None:
    rng = random.Random(seed)
    archive = tricky_archive(rng, rng.choice([0, 1, 100, 5000]))
    body = go_body(archive, "cd" * 32)
    pieces = [rng.randint(1, 70) for _ in range(len(body))]
    assert parse(body, pieces) == expected(archive, b"cd" * 32)


def test_byte_by_byte() -> None:
    archive = tricky_archive(random.Random(7), 2000)
    body = go_body(archive, "ef" * 32)
    assert parse(body, [1] * len(body)) == expected(archive, b"ef" * 32)


def test_large_pieces_pass_through_without_being_held() -> None:
    parser = MultipartParser(BOUNDARY)
    head = multipart.part_head(BOUNDARY, "archive", filename="a", first=True)
    events = parser.feed(head)
    assert isinstance(events[0], PartStart)
    chunk = bytes(1 << 20)
    out = parser.feed(chunk)
    assert out == [PartData(chunk)]
    assert isinstance(out[0], PartData) and out[0].data is chunk  # not copied


def test_preamble_epilogue_transport_padding_and_quoting() -> None:
    body = (
        b"this is a preamble\r\n"
        + f"--{BOUNDARY}  \t\r\n".encode()
        + b'content-disposition: form-data; name="we\\"ird"; filename=plain.bin\r\n\r\n'
        + b"data"
        + f"\r\n--{BOUNDARY}\r\n\r\nno headers\r\n--{BOUNDARY}--\r\nepilogue junk".encode()
    )
    events = parse(body)
    assert isinstance(events[0], PartStart)
    assert events[0].name == 'we"ird' and events[0].filename == "plain.bin"
    assert events[1:4] == [PartData(b"data"), PartEnd(), PartStart(None, None, {})]
    assert events[4:] == [PartData(b"no headers"), PartEnd(), Finished()]


def test_boundary_may_open_the_body_directly_and_parts_may_be_empty() -> None:
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n--{BOUNDARY}--'
    events = parse(body.encode())
    assert events == [
        PartStart("x", None, {"content-disposition": 'form-data; name="x"'}),
        PartEnd(),
        Finished(),
    ]


@pytest.mark.parametrize("cut", [0, 10, 100, -3, -4, -len(BOUNDARY) - 6])
def test_truncated_body_fails_at_finish(cut: int) -> None:
    body = go_body(b"x" * 50, "ab" * 32)
    parser = MultipartParser(BOUNDARY)
    parser.feed(body[:cut])
    with pytest.raises(MalformedMultipart, match="closing boundary"):
        parser.finish()


def test_garbage_after_a_boundary() -> None:
    parser = MultipartParser(BOUNDARY)
    with pytest.raises(MalformedMultipart, match="garbage"):
        parser.feed(f"--{BOUNDARY}xyz\r\n\r\n".encode())


def test_header_limits() -> None:
    parser = MultipartParser(BOUNDARY, max_header_bytes=100)
    with pytest.raises(MalformedMultipart, match="headers exceed"):
        parser.feed(f"--{BOUNDARY}\r\nX: {'y' * 200}".encode())
    parser = MultipartParser(BOUNDARY)
    with pytest.raises(MalformedMultipart, match="header line"):
        parser.feed(f"--{BOUNDARY}\r\nno colon here\r\n\r\n".encode())


def test_part_count_limit() -> None:
    parser = MultipartParser(BOUNDARY, max_parts=2)
    part = f"--{BOUNDARY}\r\n\r\nx\r\n".encode()
    with pytest.raises(MalformedMultipart, match="more than 2 parts"):
        parser.feed(part * 3)


@pytest.mark.parametrize("boundary", ["", "a" * 71, "bad\r\nboundary", "ends with space "])
def test_invalid_boundaries(boundary: str) -> None:
    with pytest.raises(MalformedMultipart):
        MultipartParser(boundary)


def test_writer_matches_go() -> None:
    archive = b"ARCHIVE"
    body = (
        multipart.part_head(
            BOUNDARY,
            "archive",
            filename="archive.tar.gz",
            content_type="application/octet-stream",
            first=True,
        )
        + archive
        + multipart.part_head(BOUNDARY, "checksum")
        + b"ab" * 32
        + multipart.closing(BOUNDARY)
    )
    assert body == go_body(archive, "ab" * 32)
    assert len(multipart.new_boundary()) == 60
    assert multipart.content_type("b") == "multipart/form-data; boundary=b"
