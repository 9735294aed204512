"""gzip/zstd: detection by magic bytes, bounded-output decoding, bombs, framing quirks."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import trio
import zstandard

from streamer._pipeline import pump
from streamer._pipeline.compression import (
    ArchiveFormat,
    Compress,
    CorruptArchive,
    Reader,
    detect,
    open_decoder,
)
from streamer._pipeline.tarformat import ArchiveLimitExceeded

MIB = 1 << 20


class Dribble:
    """A source that hands out at most ``step`` bytes per read (like a slow socket)."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def read(self, n: int, /) -> bytes:
        return self._data.read(min(n, self._step))


def decode_all(source: Reader, piece: int = 64 * 1024, **kwargs: int) -> tuple[bytes, int]:
    """Everything the decoder yields, and the largest single piece."""
    decoder = open_decoder(source, **kwargs)
    out, largest = bytearray(), 0
    while chunk := decoder.read(piece):
        largest = max(largest, len(chunk))
        out += chunk
    return bytes(out), largest


def zstd_frame(data: bytes, **params: int) -> bytes:
    compressor = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(3, **params)
    )
    out = io.BytesIO()
    with compressor.stream_writer(out, closefd=False) as writer:  # streamed: no content size
        writer.write(data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\x1f\x8b\x08\x00", ArchiveFormat.GZIP),
        (b"\x28\xb5\x2f\xfd\x00", ArchiveFormat.ZSTD),
        (gzip.compress(b"x", mtime=0), ArchiveFormat.GZIP),
        (zstandard.ZstdCompressor().compress(b"x"), ArchiveFormat.ZSTD),
    ],
    ids=["gzip-magic", "zstd-magic", "gzip-stream", "zstd-frame"],
)
def test_detect_by_magic(head: bytes, fmt: ArchiveFormat) -> None:
    assert detect(head) is fmt


@pytest.mark.parametrize(
    "head",
    [b"", b"\x1f", b"ustar", b"PK\x03\x04", b"BZh9", b"\xfd7zXZ\x00", bytes(512)],
    ids=["empty", "half-gzip", "tar", "zip", "bzip2", "xz", "zeros"],
)
def test_unknown_formats_are_refused(head: bytes) -> None:
    with pytest.raises(CorruptArchive, match="neither gzip nor zstd"):
        detect(head)
    with pytest.raises(CorruptArchive):
        open_decoder(io.BytesIO(head))


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
async def test_compress_stage_round_trip(fmt: ArchiveFormat) -> None:
    data = os.urandom(300_000) + bytes(2 * MIB) + b"text " * 50_000
    out = bytearray()

    class Sink:
        async def write(self, chunk: bytes) -> None:
            out.extend(chunk)

    async def source() -> object:
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]
            await trio.lowlevel.checkpoint()

    await pump(source(), [Compress(fmt)], Sink())  # type: ignore[arg-type]
    assert detect(bytes(out[:4])) is fmt
    assert len(out) < len(data) / 2
    assert decode_all(Dribble(bytes(out), 1000))[0] == data
    if fmt is ArchiveFormat.GZIP:
        assert gzip.decompress(bytes(out)) == data  # a standard gzip stream
    else:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(bytes(out)) == data


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
def test_bombs_come_out_in_bounded_pieces(fmt: ArchiveFormat) -> None:
    zeros = bytes(64 * MIB)
    bomb = gzip.compress(zeros, 1) if fmt is ArchiveFormat.GZIP else zstd_frame(zeros)
    assert len(bomb) < 300 * 1024  # over 200:1
    decoder = open_decoder(io.BytesIO(bomb))
    total, largest = 0, 0
    while piece := decoder.read(MIB):
        total += len(piece)
        largest = max(largest, len(piece))
    assert total == len(zeros) and largest <= MIB


def test_zstd_window_over_the_limit_is_refused_before_allocating() -> None:
    # A hand-made frame header declaring a 1 GiB window (window log 30).
    header = b"\x28\xb5\x2f\xfd" + bytes([0x00, (30 - 10) << 3])
    block = bytes([0x01, 0x00, 0x00])  # a last, empty raw block
    with pytest.raises(ArchiveLimitExceeded, match="window"):
        decode_all(io.BytesIO(header + block))
    # A real frame with a 16 MiB window: refused under an 8 MiB limit, fine under 16 MiB.
    frame = zstd_frame(os.urandom(64 * 1024), window_log=24)
    with pytest.raises(ArchiveLimitExceeded):
        decode_all(io.BytesIO(frame), max_window_size=8 * MIB)
    assert len(decode_all(io.BytesIO(frame), max_window_size=16 * MIB)[0]) == 64 * 1024


def test_concatenated_members_and_frames_are_read_through() -> None:
    a, b = b"first member " * 1000, b"second member " * 1000
    assert decode_all(Dribble(gzip.compress(a) + gzip.compress(b), 50))[0] == a + b
    frames = zstandard.ZstdCompressor().compress(a) + zstandard.ZstdCompressor().compress(b)
    assert decode_all(Dribble(frames, 50))[0] == a + b


def test_zero_padding_after_gzip_is_ignored_garbage_is_not() -> None:
    data = b"payload" * 100
    assert decode_all(io.BytesIO(gzip.compress(data) + bytes(10240)))[0] == data
    with pytest.raises(CorruptArchive, match="trailing garbage"):
        decode_all(io.BytesIO(gzip.compress(data) + b"junk"))


@pytest.mark.parametrize("cut", [10, 100, -1, -8])
def test_truncated_gzip_is_corrupt(cut: int) -> None:
    stream = gzip.compress(os.urandom(5000))
    with pytest.raises(CorruptArchive):
        decode_all(io.BytesIO(stream[:cut]))


def test_corrupt_streams() -> None:
    stream = bytearray(gzip.compress(b"hello world" * 1000))
    stream[20] ^= 0xFF
    with pytest.raises(CorruptArchive, match="gzip"):
        decode_all(io.BytesIO(bytes(stream)))
    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(os.urandom(9000)))
    frame[-6] ^= 0xFF
    with pytest.raises(CorruptArchive, match="zstd"):
        decode_all(io.BytesIO(bytes(frame)))
