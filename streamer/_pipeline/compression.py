"""Gzip and zstd for archive streams.

* :class:`Compress` is a pipeline stage (gzip through ``isal`` when installed,
  ~8x faster than zlib at level 1 and byte-compatible; zstd through
  ``zstandard``). Each chunk is compressed in a worker thread, both libraries
  release the GIL, so compression overlaps reading and hashing.
* :func:`detect` names the format of a stream from its first bytes (magic
  numbers), whatever the sender claims.
* :func:`open_decoder` wraps a blocking byte source (``read(n)``) in a decoder
  whose ``read(n)`` returns at most ``n`` decompressed bytes: memory stays
  bounded whatever the compression ratio (a 1 KiB zstd frame can expand to
  gigabytes). zstd frames declaring a window larger than ``max_window_size``
  are refused before any allocation. Concatenated gzip members and zstd frames
  are read through, as ``gzip -d`` and ``zstd -d`` do.

Errors are :class:`CorruptArchive` (the bytes do not decode) and
:class:`~.tarformat.ArchiveLimitExceeded` (a zstd window over the limit).
"""

from __future__ import annotations

import enum
import zlib
from types import ModuleType
from typing import Final, Protocol

import trio
import zstandard

from .tarformat import ArchiveLimitExceeded, MalformedArchive

_GZIP: ModuleType
try:  # pragma: no cover - which branch runs depends on the installation
    from isal import isal_zlib as _GZIP

    GZIP_BACKEND = "isal"
except ImportError:  # pragma: no cover
    _GZIP = zlib
    GZIP_BACKEND = "zlib"

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
DEFAULT_MAX_WINDOW: Final = 128 << 20
"""zstd's own default decoding limit: enough for every level, ``--long=27`` included."""

_GZIP_WBITS: Final = 16 + 15  # gzip container, 32 KiB window
_THREAD_MIN_BYTES: Final = 64 * 1024
_READ_SIZE: Final = 256 * 1024


class ArchiveFormat(enum.StrEnum):
    """The compressed archive formats a node sends and accepts."""

    GZIP = "tar.gz"
    ZSTD = "tar.zst"

    @property
    def extension(self) -> str:
        return self.value


class CorruptArchive(MalformedArchive):
    """The archive's compressed bytes do not decode (or the format is not one we read)."""

    code = "corrupt_archive"


class Reader(Protocol):
    def read(self, n: int, /) -> bytes:
        """Up to ``n`` bytes (at least one), or ``b""`` at the end of the stream."""
        ...


# -- detection -----------------------------------------------------------------


def detect(head: bytes) -> ArchiveFormat:
    """The format whose magic number ``head`` starts with (needs 4 bytes for zstd)."""
    if head.startswith(GZIP_MAGIC):
        return ArchiveFormat.GZIP
    if head.startswith(ZSTD_MAGIC):
        return ArchiveFormat.ZSTD
    raise CorruptArchive(
        f"archive is neither gzip nor zstd (starts with {head[:4].hex() or 'nothing'})"
    )


# -- compression -----------------------------------------------------------------


class _CompressObj(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class Compress:
    """A stage that compresses the stream into ``fmt`` (level 1 by default: speed first).

    ``threads`` > 0 lets zstd use that many extra worker threads (ignored for gzip).
    """

    def __init__(self, fmt: ArchiveFormat, *, level: int = 1, threads: int = 0) -> None:
        self.format = fmt
        self._obj: _CompressObj
        if fmt is ArchiveFormat.GZIP:
            gzip_level = min(level, 3) if GZIP_BACKEND == "isal" else level
            self._obj = _GZIP.compressobj(gzip_level, zlib.DEFLATED, _GZIP_WBITS)
        else:
            self._obj = zstandard.ZstdCompressor(level=level, threads=threads).compressobj()

    async def feed(self, chunk: bytes) -> bytes:
        if len(chunk) < _THREAD_MIN_BYTES:
            return self._obj.compress(chunk)
        return await trio.to_thread.run_sync(self._obj.compress, chunk)

    async def flush(self) -> bytes:
        return self._obj.flush()

    def close(self) -> None:
        pass


# -- decompression ---------------------------------------------------------------


def open_decoder(source: Reader, *, max_window_size: int = DEFAULT_MAX_WINDOW) -> Decoder:
    """A bounded-output decoder for the stream ``source`` yields, format from its magic.

    Blocking: call from a worker thread. Raises :class:`CorruptArchive` if the
    stream is empty or not gzip/zstd.
    """
    head = b""
    while len(head) < len(ZSTD_MAGIC):
        piece = source.read(len(ZSTD_MAGIC) - len(head))
        if not piece:
            break
        head += piece
    fmt = detect(head)
    prefixed = _Prefixed(head, source)
    if fmt is ArchiveFormat.GZIP:
        return _GzipDecoder(prefixed)
    return _ZstdDecoder(prefixed, max_window_size)


class Decoder(Protocol):
    format: ArchiveFormat

    def read(self, n: int, /) -> bytes:
        """At most ``n`` decompressed bytes; ``b""`` at the end of the stream."""
        ...


class _Prefixed:
    """``head`` then the rest of ``source``."""

    def __init__(self, head: bytes, source: Reader) -> None:
        self._head = head
        self._source = source

    def read(self, n: int, /) -> bytes:
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._source.read(n)


class _GzipDecoder:
    format = ArchiveFormat.GZIP

    def __init__(self, source: Reader) -> None:
        self._source = source
        self._obj = _GZIP.decompressobj(_GZIP_WBITS)
        self._pending = b""  # compressed input not yet given to the decompressor
        self._in_member = False  # bytes of the current member were consumed

    def read(self, n: int, /) -> bytes:
        while True:
            data, self._pending = self._pending, b""
            if not data:
                data = self._source.read(_READ_SIZE)
                if not data:
                    if self._in_member:
                        raise CorruptArchive("gzip stream truncated")
                    return b""
            if not self._in_member and not data.strip(b"\0"):
                continue  # zero padding between or after members (tape-style): skip it
            self._in_member = True
            try:
                out = self._obj.decompress(data, n)
            except (zlib.error, _GZIP.error) as exc:
                raise CorruptArchive(f"gzip stream is corrupt: {exc}") from None
            self._pending = self._obj.unconsumed_tail
            if self._obj.eof:  # member complete; another may follow
                self._pending = self._obj.unused_data + self._pending
                self._obj = _GZIP.decompressobj(_GZIP_WBITS)
                self._in_member = False
                if not self._pending.startswith(GZIP_MAGIC[:1]) and self._pending.strip(b"\0"):
                    raise CorruptArchive("trailing garbage after the gzip stream")
            if out:
                return bytes(out)


class _ZstdDecoder:
    format = ArchiveFormat.ZSTD

    def __init__(self, source: Reader, max_window_size: int) -> None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window_size)
        self._max_window = max_window_size
        self._reader = decompressor.stream_reader(
            source,  # type: ignore[arg-type]  # any object with read() will do
            read_size=_READ_SIZE,
            read_across_frames=True,
        )

    def read(self, n: int, /) -> bytes:
        try:
            return self._reader.read(n)
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise ArchiveLimitExceeded(
                    f"zstd frame needs a window over the {self._max_window >> 20} MiB limit"
                ) from None
            raise CorruptArchive(f"zstd stream is corrupt: {exc}") from None
