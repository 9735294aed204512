"""Chunked AEAD stream for files at rest: the STREAM construction over AES-256-GCM.

Sans-IO: :class:`Encryptor` and :class:`Decryptor` turn bytes into bytes and never
touch a file, so the same code serves staging, resumed uploads and ranged reads.

Format (version 1, all integers big-endian)::

    header (77 bytes)
      0  magic        4   b"STRM"
      4  version      1   1
      5  algorithm    1   1 = AES-256-GCM
      6  chunk_size   4   plaintext bytes per chunk, 1 .. MAX_CHUNK_SIZE
     10  nonce_prefix 7   random per file
     17  wrap_nonce   12  random per wrapping
     29  wrapped_key  48  AES-256-GCM(master_key, wrap_nonce, data_key, aad=bytes 0..17)
    chunks
      chunk i = AES-256-GCM(data_key, nonce_i, plaintext_i, aad=bytes 0..17)
      nonce_i = nonce_prefix || u32(i) || (0x01 if last else 0x00)

Every file gets a fresh random 256-bit data key, wrapped by the node's master key.
Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last one
holds ``plaintext_size % chunk_size`` bytes (0 .. chunk_size - 1), so an empty file,
or one whose size is a multiple of the chunk size, ends with an empty last chunk.
Each ciphertext chunk is its plaintext plus a 16-byte tag.

Why it is safe: the chunk counter in the nonce makes a reordered, dropped or
duplicated chunk fail authentication; the last-chunk flag makes a stream cut at a
chunk boundary fail (no chunk that is not flagged last can end a stream). The
header's fixed fields (bytes 0..17) are the associated data of the wrapped key and
of every chunk, so changing the version, algorithm, chunk size or prefix fails,
and a changed wrap nonce or wrapped key fails to unwrap.

Choices beyond the textbook construction:

* A chunk of full size is never the last one. Hence neither side needs look-ahead:
  the encryptor emits a chunk the moment it is full, and the decryptor releases a
  full chunk's plaintext as soon as it has arrived and verified. A ranged read can
  decrypt just the chunks it needs and stop. The cost is a 16-byte empty chunk for
  files whose size is a multiple of ``chunk_size``; every size has one encoding.
* The chunks' associated data omits the wrapped key, so :func:`rewrap_header` can
  rotate the master key by rewriting the 77-byte header, not the data.
* ``chunk_size`` is capped at :data:`MAX_CHUNK_SIZE` so that a decryptor's buffer
  (at most one ciphertext chunk) stays small whatever a header says.

Resuming (:meth:`Encryptor.resume`) reuses the data key and nonce prefix, so chunk
``i`` gets the same nonce as it did before the crash. That is harmless when the
resumed plaintext from chunk ``i`` on is the same bytes as before (the client resends
from the offset it is told); if it may differ and the old ciphertext of those chunks
may have been seen, start a new stream instead, since GCM under a repeated nonce
leaks the XOR of the plaintexts and allows forgeries.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .._errors import PayloadTooLarge, StreamerError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ALGORITHM_AES_256_GCM",
    "DEFAULT_CHUNK_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "TAG_SIZE",
    "VERSION",
    "DecryptionError",
    "Decryptor",
    "Encryptor",
    "FormatError",
    "Header",
    "TruncatedError",
    "chunk_for_offset",
    "ciphertext_offset",
    "ciphertext_size",
    "generate_master_key",
    "parse_header",
    "plaintext_size",
    "rewrap_header",
    "whole_chunks",
]

MAGIC: Final = b"STRM"
VERSION: Final = 1
ALGORITHM_AES_256_GCM: Final = 1
KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MAX_CHUNK_SIZE: Final = 1 << 24

_PREFIX_SIZE: Final = 7
_WRAP_NONCE_SIZE: Final = 12
_FIXED = struct.Struct(">4sBBI7s")  # the authenticated fields: magic .. nonce_prefix
_HEADER = struct.Struct(">4sBBI7s12s48s")
_NONCE = struct.Struct(">7sIB")
_MAX_COUNTER: Final = 0xFFFF_FFFF

HEADER_SIZE: Final = _HEADER.size  # 77


class FormatError(StreamerError):
    """Bytes that are not a stream header this version can read."""

    status_code = 422
    code = "invalid_format"


class DecryptionError(StreamerError):
    """Authentication failed: wrong key, or a tampered, reordered or spliced stream."""

    status_code = 422
    code = "decryption_failed"


class TruncatedError(DecryptionError):
    """The stream ended before its last chunk."""

    code = "truncated_stream"


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed version-1 header; :meth:`to_bytes` gives back its exact bytes."""

    chunk_size: int
    nonce_prefix: bytes
    wrap_nonce: bytes
    wrapped_key: bytes

    @property
    def associated_data(self) -> bytes:
        """Bytes 0..17 of the header, authenticated with the wrapped key and each chunk."""
        return _FIXED.pack(
            MAGIC, VERSION, ALGORITHM_AES_256_GCM, self.chunk_size, self.nonce_prefix
        )

    def to_bytes(self) -> bytes:
        return self.associated_data + self.wrap_nonce + self.wrapped_key


def generate_master_key() -> bytes:
    """A fresh random 32-byte master key (keep it secret; it unwraps every file key)."""
    return os.urandom(KEY_SIZE)


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse the header at the start of ``data`` (bytes after it are ignored).

    Checks structure only; a forged header is caught when its key is unwrapped.
    Raises :class:`FormatError` for a short header, bad magic, an unknown version
    or algorithm, or a chunk size outside ``1 .. MAX_CHUNK_SIZE``.
    """
    data = bytes(data[:HEADER_SIZE])
    if len(data) < 6:
        raise FormatError(f"stream header is {len(data)} bytes, too short")
    if data[:4] != MAGIC:
        raise FormatError("not an encrypted stream (bad magic)")
    if data[4] != VERSION:
        raise FormatError(f"unsupported stream version {data[4]}")
    if data[5] != ALGORITHM_AES_256_GCM:
        raise FormatError(f"unsupported stream algorithm {data[5]}")
    if len(data) < HEADER_SIZE:
        raise FormatError(f"stream header is {len(data)} bytes, need {HEADER_SIZE}")
    _, _, _, chunk_size, prefix, wrap_nonce, wrapped_key = _HEADER.unpack(data)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise FormatError(f"stream chunk size {chunk_size} out of range")
    return Header(chunk_size, prefix, wrap_nonce, wrapped_key)


def rewrap_header(header: bytes, old_master_key: bytes, new_master_key: bytes) -> bytes:
    """The same header with its data key wrapped under ``new_master_key``.

    The chunks stay valid, so rotating the master key rewrites only the header.
    Raises :class:`DecryptionError` if ``old_master_key`` does not unwrap it.
    """
    parsed = parse_header(header)
    data_key = _unwrap(old_master_key, parsed)
    return _wrap(new_master_key, data_key, parsed.chunk_size, parsed.nonce_prefix).to_bytes()


# -- size and offset arithmetic (for HTTP ranges and resumption) -------------


def ciphertext_size(plaintext_size: int, chunk_size: int) -> int:
    """Total stream size, header included, for ``plaintext_size`` bytes of plaintext."""
    _check_non_negative(plaintext_size)
    return HEADER_SIZE + plaintext_size + (plaintext_size // chunk_size + 1) * TAG_SIZE


def plaintext_size(ciphertext_size: int, chunk_size: int) -> int:
    """The inverse of :func:`ciphertext_size`.

    Raises :class:`FormatError` if no complete stream has ``ciphertext_size`` bytes
    (it was cut or padded).
    """
    _check_non_negative(ciphertext_size)
    full, rest = divmod(ciphertext_size - HEADER_SIZE, chunk_size + TAG_SIZE)
    if full < 0 or not TAG_SIZE <= rest < chunk_size + TAG_SIZE:
        raise FormatError(f"{ciphertext_size} bytes is not the size of a complete stream")
    return full * chunk_size + rest - TAG_SIZE


def chunk_for_offset(plaintext_offset: int, chunk_size: int) -> tuple[int, int]:
    """``(chunk index, offset within that chunk's plaintext)`` of a plaintext byte."""
    _check_non_negative(plaintext_offset)
    return divmod(plaintext_offset, chunk_size)


def ciphertext_offset(chunk_index: int, chunk_size: int) -> int:
    """Where chunk ``chunk_index`` starts in the stream, header included."""
    _check_non_negative(chunk_index)
    return HEADER_SIZE + chunk_index * (chunk_size + TAG_SIZE)


def whole_chunks(ciphertext_size: int, chunk_size: int) -> int:
    """How many whole chunks a partly written stream of ``ciphertext_size`` bytes holds.

    To resume after a crash, truncate the file to ``ciphertext_offset(n, chunk_size)`` and call
    ``Encryptor.resume(..., n)`` with ``n`` this number.
    """
    if ciphertext_size < HEADER_SIZE:
        raise FormatError(f"{ciphertext_size} bytes is shorter than a stream header")
    return (ciphertext_size - HEADER_SIZE) // (chunk_size + TAG_SIZE)


# -- the two directions ------------------------------------------------------


class Encryptor:
    """Encrypts one stream; create it with :meth:`new` or :meth:`resume`.

    Write :attr:`header`, then the bytes of every :meth:`feed` and finally of
    :meth:`finish`. It buffers less than one chunk of plaintext. After an
    exception the object is unusable.
    """

    def __init__(self, data_key: bytes, header: Header, next_chunk: int) -> None:
        """Internal; reusing a data key with another header would repeat nonces."""
        self._aead = _aesgcm(data_key)
        self._header = header
        self._aad = header.associated_data
        self._chunk_size = header.chunk_size
        self._buffer = bytearray()
        self._finished = False
        self.chunks_written = next_chunk
        """Chunks emitted so far, counted from the start of the stream."""
        self.plaintext_bytes = next_chunk * header.chunk_size
        """Plaintext accepted so far (buffered included), counted from the stream start."""

    @classmethod
    def new(cls, master_key: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Encryptor:
        """A new stream with a fresh data key and nonce prefix."""
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} out of range 1..{MAX_CHUNK_SIZE}")
        data_key = os.urandom(KEY_SIZE)
        header = _wrap(master_key, data_key, chunk_size, os.urandom(_PREFIX_SIZE))
        return cls(data_key, header, 0)

    @classmethod
    def resume(cls, master_key: bytes, header: bytes, next_chunk: int) -> Encryptor:
        """Continue a stream whose chunks ``0 .. next_chunk - 1`` are already written.

        Feed it the plaintext from offset ``next_chunk * chunk_size`` on; its output
        then matches what the interrupted encryptor would have produced. See the
        module docstring for when resuming is safe. Raises :class:`DecryptionError`
        if ``master_key`` does not unwrap ``header``.
        """
        if not 0 <= next_chunk <= _MAX_COUNTER:
            raise ValueError(f"chunk index {next_chunk} out of range")
        parsed = parse_header(header)
        return cls(_unwrap(master_key, parsed), parsed, next_chunk)

    @property
    def header(self) -> bytes:
        return self._header.to_bytes()

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Accept plaintext; return the ciphertext of every chunk it completed."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        size = self._chunk_size
        out: list[bytes] = []
        with memoryview(data) as view:
            self.plaintext_bytes += len(view)
            pos = 0
            if self._buffer:
                pos = min(len(view), size - len(self._buffer))
                self._buffer += view[:pos]
                if len(self._buffer) == size:
                    out.append(self._seal(self._buffer, last=False))
                    self._buffer.clear()
            while len(view) - pos >= size:
                with view[pos : pos + size] as chunk:  # released even if _seal raises
                    out.append(self._seal(chunk, last=False))
                pos += size
            self._buffer += view[pos:]
        return b"".join(out)

    def finish(self) -> bytes:
        """Return the last chunk; the stream is then complete."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        last = self._seal(self._buffer, last=True)
        self._buffer = bytearray()
        return last

    def _seal(self, plaintext: bytes | bytearray | memoryview, *, last: bool) -> bytes:
        index = self.chunks_written
        # The last chunk may take the final counter value; any other chunk needs a successor.
        if index > (_MAX_COUNTER if last else _MAX_COUNTER - 1):
            raise PayloadTooLarge(f"stream exceeds {_MAX_COUNTER + 1} chunks")
        nonce = _NONCE.pack(self._header.nonce_prefix, index, last)
        sealed = self._aead.encrypt(nonce, plaintext, self._aad)
        self.chunks_written = index + 1
        return sealed


class Decryptor:
    """Decrypts one stream from chunk ``start_chunk`` on.

    Feed it the stream bytes that follow the header (or, for a range, those from
    ``ciphertext_offset(start_chunk, chunk_size)``). Every byte it returns has been
    authenticated as belonging to this stream at that position. Call :meth:`finish`
    at end of input to verify the stream was not truncated; a ranged read that stops
    before the end may skip it. Buffers less than one ciphertext chunk. After an
    exception the object is unusable.

    Raises :class:`DecryptionError` if ``master_key`` does not unwrap ``header``.
    """

    def __init__(self, master_key: bytes, header: bytes, *, start_chunk: int = 0) -> None:
        if not 0 <= start_chunk <= _MAX_COUNTER:
            raise ValueError(f"chunk index {start_chunk} out of range")
        self._header = parse_header(header)
        self._aead = _aesgcm(_unwrap(master_key, self._header))
        self._aad = self._header.associated_data
        self._sealed_size = self._header.chunk_size + TAG_SIZE
        self._buffer = bytearray()
        self._finished = False
        self.chunks_read = start_chunk
        """Index of the next chunk expected."""

    @property
    def chunk_size(self) -> int:
        return self._header.chunk_size

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Accept stream bytes; return the plaintext of every chunk they completed."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        size = self._sealed_size
        out: list[bytes] = []
        with memoryview(data) as view:
            pos = 0
            if self._buffer:
                pos = min(len(view), size - len(self._buffer))
                self._buffer += view[:pos]
                if len(self._buffer) == size:
                    out.append(self._open(self._buffer, last=False))
                    self._buffer.clear()
            while len(view) - pos >= size:
                with view[pos : pos + size] as chunk:  # released even if _open raises
                    out.append(self._open(chunk, last=False))
                pos += size
            self._buffer += view[pos:]
        return b"".join(out)

    def finish(self) -> bytes:
        """Return the last chunk's plaintext, proving the stream is complete.

        Raises :class:`TruncatedError` if the input ended on a chunk boundary or
        inside a tag, and :class:`DecryptionError` if the remaining bytes are not
        this stream's last chunk (cut mid-chunk, tampered or followed by garbage).
        """
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        if len(self._buffer) < TAG_SIZE:
            raise TruncatedError(f"stream ends before its last chunk ({self.chunks_read})")
        return self._open(self._buffer, last=True)

    def _open(self, sealed: bytes | bytearray | memoryview, *, last: bool) -> bytes:
        index = self.chunks_read
        if index > (_MAX_COUNTER if last else _MAX_COUNTER - 1):
            raise DecryptionError(f"stream exceeds {_MAX_COUNTER + 1} chunks")
        nonce = _NONCE.pack(self._header.nonce_prefix, index, last)
        plaintext = _decrypt(self._aead, nonce, sealed, self._aad)
        if plaintext is None:
            kind = "last chunk" if last else "chunk"
            raise DecryptionError(f"{kind} {index} failed authentication")
        self.chunks_read = index + 1
        return plaintext


# -- helpers -------------------------------------------------------------------


def _wrap(master_key: bytes, data_key: bytes, chunk_size: int, prefix: bytes) -> Header:
    wrap_nonce = os.urandom(_WRAP_NONCE_SIZE)
    header = Header(chunk_size, prefix, wrap_nonce, b"")
    wrapped = _master(master_key).encrypt(wrap_nonce, data_key, header.associated_data)
    return Header(chunk_size, prefix, wrap_nonce, wrapped)


def _unwrap(master_key: bytes, header: Header) -> bytes:
    data_key = _decrypt(
        _master(master_key), header.wrap_nonce, header.wrapped_key, header.associated_data
    )
    if data_key is None:
        raise DecryptionError("wrong master key or tampered stream header")
    return data_key


def _master(master_key: bytes) -> AESGCM:
    if len(master_key) != KEY_SIZE:
        raise ValueError(f"master key must be {KEY_SIZE} bytes, got {len(master_key)}")
    return _aesgcm(master_key)


def _aesgcm(key: bytes) -> AESGCM:
    """AES-GCM keyed with ``key``. cryptography is imported on first use, not with
    this module: a node that never encrypts does not keep its ~8 MB resident."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _decrypt(
    aead: AESGCM, nonce: bytes, sealed: bytes | bytearray | memoryview, aad: bytes
) -> bytes | None:
    """The plaintext of ``sealed``, or None when it fails authentication."""
    from cryptography.exceptions import InvalidTag  # loaded by _aesgcm already

    try:
        return aead.decrypt(nonce, sealed, aad)
    except InvalidTag:
        return None


def _check_non_negative(value: int) -> None:
    if value < 0:
        raise ValueError(f"expected a non-negative size or offset, got {value}")
