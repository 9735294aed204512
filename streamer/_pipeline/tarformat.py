"""The tar data model and header encoding shared by the writer and the reader.

Everything here is sans-IO: plain values in, plain bytes out. A member is
described by :class:`Member`; :func:`encode_member` turns it into the bytes
that precede its content (a POSIX ustar header, preceded by a PAX ``x`` header
when a field does not fit ustar). The content follows, then :func:`padding`,
and :data:`END_OF_ARCHIVE` closes the archive. The output is a POSIX.1-2001
(pax) archive that GNU tar, bsdtar, Go's ``archive/tar`` and Python's
``tarfile`` extract.

Names are ``str``; bytes that are not UTF-8 travel as surrogate escapes
(``os.fsdecode`` on a UTF-8 system), so any file name round-trips byte for byte.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

from .._errors import PayloadTooLarge, StreamerError

BLOCK: Final = 512
"""Tar's unit: headers are one block, content is padded to whole blocks."""

END_OF_ARCHIVE: Final = bytes(2 * BLOCK)
"""Two zero blocks: the end-of-archive marker."""

_ENCODING: Final = "utf-8"
_ERRORS: Final = "surrogateescape"

# POSIX ustar header layout (offsets in the 512-byte block).
_USTAR: Final = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_USTAR_MAGIC: Final = b"ustar\x0000"
_CHKSUM: Final = slice(148, 156)
_PAX_NAME: Final = b"././@PaxHeader"
_NAME_FIELD: Final = 100


class MalformedArchive(StreamerError):
    """The bytes are not a tar archive we accept: bad checksum, bad field, truncation."""

    status_code = 400
    code = "malformed_archive"


class ArchiveLimitExceeded(PayloadTooLarge):
    """The archive declares more than a configured limit allows (headers, members, bytes)."""

    code = "archive_limit_exceeded"


class MemberType(enum.Enum):
    """What a member is; the value is its ustar typeflag (``OTHER`` has none)."""

    FILE = "0"
    HARDLINK = "1"
    SYMLINK = "2"
    CHAR = "3"
    BLOCK = "4"
    DIR = "5"
    FIFO = "6"
    OTHER = "?"


DATALESS_TYPES: Final = frozenset(
    {MemberType.HARDLINK, MemberType.SYMLINK, MemberType.CHAR, MemberType.BLOCK, MemberType.FIFO}
)
"""Types that never carry content blocks, whatever their size field says (POSIX)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One archive member's metadata (its content travels separately).

    ``name`` is the path inside the archive, ``/``-separated, without the
    trailing ``/`` tar puts on directories. ``size`` is the number of content
    bytes that follow the header (always 0 for :data:`DATALESS_TYPES`).
    ``mode`` holds the permission bits (``& 0o7777``), ``mtime`` seconds since
    the epoch (the writer stores whole seconds), ``linkname`` the target of a
    symlink or hard link.
    """

    name: str
    type: MemberType
    size: int = 0
    mode: int = 0o644
    mtime: float = 0.0
    linkname: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of the current member's content, in order; pieces are never empty."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MemberEnd:
    """The current member's content is complete (sent for every member, even empty)."""


@dataclass(frozen=True, slots=True)
class ArchiveEnd:
    """The end-of-archive marker was read; nothing follows."""


Event: TypeAlias = Member | Data | MemberEnd | ArchiveEnd

MEMBER_END: Final = MemberEnd()
ARCHIVE_END: Final = ArchiveEnd()


def padding(size: int) -> bytes:
    """The zero bytes that complete content of ``size`` bytes to a whole block."""
    return bytes(-size % BLOCK)


def encode_member(member: Member) -> bytes:
    """The header bytes for ``member``; its ``member.size`` content bytes follow.

    A PAX extended header precedes the ustar header when the name or link
    target is longer than 100 bytes or not ASCII, or when a number does not fit
    its octal field (size >= 8 GiB, negative or huge mtime, big uid/gid); the
    ustar field then holds a truncated name or a base-256 number for readers
    that ignore PAX. Directories get tar's trailing ``/``. Raises
    :class:`ValueError` for :attr:`MemberType.OTHER`, which has no typeflag.
    """
    if member.type is MemberType.OTHER:
        raise ValueError(f"cannot encode member {member.name!r} of type OTHER")
    name = member.name
    if member.type is MemberType.DIR and not name.endswith("/"):
        name += "/"
    pax: dict[bytes, bytes] = {}
    name_field = _text_field(name, b"path", pax)
    link_field = _text_field(member.linkname, b"linkpath", pax)
    size = 0 if member.type in DATALESS_TYPES else member.size
    mtime = math.floor(member.mtime)
    header = _ustar_block(
        name=name_field,
        mode=_octal(member.mode & 0o7777, 8),
        uid=_number_field(member.uid, 8, b"uid", pax),
        gid=_number_field(member.gid, 8, b"gid", pax),
        size=_number_field(size, 12, b"size", pax),
        mtime=_number_field(mtime, 12, b"mtime", pax),
        typeflag=member.type.value.encode(),
        linkname=link_field,
    )
    if not pax:
        return header
    return _pax_header(pax, mtime) + header


def _text_field(text: str, key: bytes, pax: dict[bytes, bytes]) -> bytes:
    # Bytes that are not UTF-8 go into the record as they are, without the
    # ``hdrcharset=BINARY`` record: GNU tar warns about it, and GNU tar,
    # tarfile and Go all take the raw bytes anyway.
    raw = text.encode(_ENCODING, _ERRORS)
    if len(raw) > _NAME_FIELD or not raw.isascii():
        pax[key] = raw
    return raw[:_NAME_FIELD]


def _octal(value: int, width: int) -> bytes:
    """A NUL-terminated, zero-filled octal field of ``width`` bytes."""
    return b"%0*o\0" % (width - 1, value)


def _number_field(value: int, width: int, key: bytes, pax: dict[bytes, bytes]) -> bytes:
    """``value`` as an octal field, or base-256 plus a PAX record when it does not fit."""
    if 0 <= value < 8 ** (width - 1):
        return _octal(value, width)
    pax[key] = b"%d" % value
    room = 1 << 8 * (width - 1)
    if not -room // 2 <= value < room // 2:
        return bytes(width)  # only the PAX record can hold it
    return (b"\xff" if value < 0 else b"\x80") + (value % room).to_bytes(width - 1, "big")


def _ustar_block(
    *,
    name: bytes,
    mode: bytes,
    uid: bytes,
    gid: bytes,
    size: bytes,
    mtime: bytes,
    typeflag: bytes,
    linkname: bytes,
) -> bytes:
    devices = _octal(0, 8)
    fields = (name, mode, uid, gid, size, mtime, b" " * 8, typeflag, linkname)
    block = bytearray(_USTAR.pack(*fields, _USTAR_MAGIC, b"", b"", devices, devices, b""))
    block[_CHKSUM] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pax_header(records: dict[bytes, bytes], mtime: int) -> bytes:
    """A PAX ``x`` header carrying ``records``, padded."""
    payload = b"".join(_pax_record(key, value) for key, value in records.items())
    header = _ustar_block(
        name=_PAX_NAME,
        mode=_octal(0o644, 8),
        uid=_octal(0, 8),
        gid=_octal(0, 8),
        size=_octal(len(payload), 12),
        mtime=_octal(max(0, min(mtime, 8**11 - 1)), 12),
        typeflag=b"x",
        linkname=b"",
    )
    return header + payload + padding(len(payload))


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"<len> key=value\\n"`` where ``<len>`` counts the whole record, itself included."""
    body = b" %s=%s\n" % (key, value)
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d%s" % (length, body)
