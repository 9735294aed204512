"""Sans-IO tar streams: a push parser, plus the writer from :mod:`.tarformat`.

:class:`TarReader` is fed the bytes of an archive in pieces of any size and
returns :data:`Event` objects: a :class:`Member` header, its content as
:class:`Data` pieces (slices of what was fed, never a whole member buffered),
:class:`MemberEnd`, and finally :class:`ArchiveEnd`. It reads POSIX ustar,
PAX (``x`` and global ``g`` headers: ``path``, ``linkpath``, ``size``,
``mtime``, ``uid``, ``gid``), GNU tar's long names and link targets
(``L``/``K``), base-256 numbers and old v7 headers, and validates every header
checksum.

The writer side is :func:`encode_member`, :func:`padding` and
:data:`END_OF_ARCHIVE`, re-exported here so that callers import one module.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from .tarformat import (
    ARCHIVE_END,
    BLOCK,
    DATALESS_TYPES,
    END_OF_ARCHIVE,
    MEMBER_END,
    ArchiveEnd,
    ArchiveLimitExceeded,
    Data,
    Event,
    MalformedArchive,
    Member,
    MemberEnd,
    MemberType,
    encode_member,
    padding,
)

__all__ = [
    "BLOCK",
    "DEFAULT_MAX_HEADER_BYTES",
    "END_OF_ARCHIVE",
    "ArchiveEnd",
    "ArchiveLimitExceeded",
    "Data",
    "Event",
    "MalformedArchive",
    "Member",
    "MemberEnd",
    "MemberType",
    "TarReader",
    "encode_member",
    "padding",
]

DEFAULT_MAX_HEADER_BYTES: Final = 1 << 20
"""Default cap on the extended-header bytes (PAX, GNU long names) of one member."""

_ZERO_BLOCK: Final = bytes(BLOCK)
_TYPES: Final = {
    0: MemberType.FILE,  # old "AREGTYPE"
    ord("0"): MemberType.FILE,
    ord("7"): MemberType.FILE,  # contiguous file: an ordinary file everywhere we care
    ord("1"): MemberType.HARDLINK,
    ord("2"): MemberType.SYMLINK,
    ord("3"): MemberType.CHAR,
    ord("4"): MemberType.BLOCK,
    ord("5"): MemberType.DIR,
    ord("6"): MemberType.FIFO,
}
_PAX_LOCAL, _PAX_GLOBAL, _GNU_NAME, _GNU_LINK = b"xgLK"
_GNU_SPARSE: Final = ord("S")
_PAX_INTEGER: Final = re.compile(rb"[0-9]+")
_PAX_TIME: Final = re.compile(rb"-?[0-9]+(?:\.[0-9]*)?")


class _State(enum.Enum):
    HEADER = "a header"  # collecting a 512-byte header block
    EXTENSION = "an extended header"  # collecting a PAX or GNU long-name payload
    DATA = "member data"  # streaming a member's content
    SKIP = "block padding"  # skipping the padding after content or payload
    ZERO = "the end-of-archive marker"  # one zero block seen; the second must follow
    DONE = "the end"  # both zero blocks seen; later bytes are ignored


class TarReader:
    """Push parser for a tar stream; see the module docstring for the events.

    Limits (``None`` = unlimited), each raising :class:`ArchiveLimitExceeded`
    before the offending content is read:

    * ``max_header_bytes`` -- extended-header payload bytes for one member, and
      the total size of the global PAX records in force;
    * ``max_members`` -- number of members (extension headers do not count);
    * ``max_total_bytes`` -- sum of the members' declared content sizes, i.e.
      the decompressed size of everything that will be written.

    Format errors (bad checksum, unparsable field, a lone zero block, an
    unsupported GNU sparse member, truncation found by :meth:`finish`) raise
    :class:`MalformedArchive`. After an error the reader is unusable. Bytes
    after the end-of-archive marker (GNU tar pads to 10 KiB records) are
    ignored.
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_members: int | None = None,
        max_total_bytes: int | None = None,
    ) -> None:
        self._max_header_bytes = max_header_bytes
        self._max_members = max_members
        self._max_total_bytes = max_total_bytes
        self.members = 0
        """Members announced so far."""
        self.total_bytes = 0
        """Sum of the content sizes declared so far."""
        self.offset = 0
        """Bytes of the stream consumed so far."""
        self._state = _State.HEADER
        self._want = BLOCK  # bytes still to collect, stream or skip in this state
        self._pad = 0  # padding that follows the current content or payload
        self._buffer = bytearray()  # a partial header block or extension payload
        self._extension_flag = 0
        self._extension_bytes = 0  # extension payload bytes since the last member
        self._pax: dict[bytes, bytes] = {}  # the next member's PAX records
        self._gnu: dict[bytes, bytes] = {}  # the next member's GNU long name/link
        self._globals: dict[bytes, bytes] = {}  # PAX records in force for every member

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``, the next bytes of the stream; return the events it completes."""
        events: list[Event] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.DONE:
                take = end - pos
            else:
                take = min(self._want - len(self._buffer), end - pos)
            start, pos = pos, pos + take
            self.offset += take
            if state is _State.DATA:
                events.append(Data(data if take == end else data[start:pos]))
                self._want -= take
                if not self._want:
                    events.append(MEMBER_END)
                    self._skip_padding()
            elif state is _State.SKIP:
                self._want -= take
                if not self._want:
                    self._expect_header()
            elif state is not _State.DONE:  # HEADER, ZERO, EXTENSION: collect self._want bytes
                if self._buffer or take < self._want:
                    self._buffer += data[start:pos]
                    if len(self._buffer) < self._want:
                        continue
                    piece = bytes(self._buffer)
                    self._buffer.clear()
                else:
                    piece = data[start:pos]
                if state is _State.EXTENSION:
                    self._on_extension(piece)
                else:
                    self._on_block(piece, events)
        return events

    def finish(self) -> None:
        """Declare the end of the stream; raise :class:`MalformedArchive` if it is truncated.

        Both zero blocks of the end-of-archive marker are required: every tar
        writer we interoperate with writes them, and without them a stream cut
        exactly at a member boundary would pass for a complete archive.
        """
        if self._state is not _State.DONE:
            raise MalformedArchive(
                f"tar stream truncated in {self._state.value} at offset {self.offset}"
                + (f" ({self._want - len(self._buffer)} bytes missing)" if self._want else "")
            )

    # -- blocks -------------------------------------------------------------

    def _on_block(self, block: bytes, events: list[Event]) -> None:
        if block == _ZERO_BLOCK:
            if self._state is _State.ZERO:
                events.append(ARCHIVE_END)
                self._state = _State.DONE
            elif self._pax or self._gnu:
                raise self._malformed("extended header not followed by a member")
            else:
                self._state = _State.ZERO
            return
        if self._state is _State.ZERO:
            raise self._malformed("lone zero block before a header")
        _check_checksum(block, self.offset - BLOCK)
        flag = block[156]
        size = _number(block[124:136], "size")
        if flag in (_PAX_LOCAL, _PAX_GLOBAL, _GNU_NAME, _GNU_LINK):
            self._start_extension(flag, size)
        elif flag == _GNU_SPARSE:
            raise self._malformed("GNU sparse members are not supported")
        else:
            self._on_member(self._member(block, flag, size), events)

    def _member(self, block: bytes, flag: int, size: int) -> Member:
        merged = {**self._globals, **self._gnu, **self._pax}
        ext = {key: value for key, value in merged.items() if value}  # "" cancels a key
        if any(key.startswith(b"GNU.sparse.") for key in ext):
            raise self._malformed("GNU sparse members are not supported")
        name = _cstring(block[0:100])
        if block[257:265] == b"ustar\x0000" and block[345]:  # POSIX ustar: a name prefix
            name = _cstring(block[345:500]) + b"/" + name
        name = ext.get(b"path", name)
        kind = _TYPES.get(flag, MemberType.OTHER)
        if flag == 0 and name.endswith(b"/"):  # pre-POSIX directory
            kind = MemberType.DIR
        if kind is MemberType.DIR:
            name = name.rstrip(b"/") or name
        if b"size" in ext:
            size = _pax_integer(ext[b"size"], "size")
        if b"mtime" in ext:
            if not _PAX_TIME.fullmatch(ext[b"mtime"]):
                raise self._malformed(f"bad PAX mtime {ext[b'mtime']!r}")
            mtime = float(ext[b"mtime"])
        else:
            mtime = float(_number(block[136:148], "mtime"))
        uid, gid = _number(block[108:116], "uid"), _number(block[116:124], "gid")
        return Member(
            name=_decode(name),
            type=kind,
            size=0 if kind in DATALESS_TYPES else size,
            mode=_number(block[100:108], "mode") & 0o7777,
            mtime=mtime,
            linkname=_decode(ext.get(b"linkpath", _cstring(block[157:257]))),
            uid=_pax_integer(ext[b"uid"], "uid") if b"uid" in ext else uid,
            gid=_pax_integer(ext[b"gid"], "gid") if b"gid" in ext else gid,
        )

    def _on_member(self, member: Member, events: list[Event]) -> None:
        if member.size < 0:
            raise self._malformed(f"negative size {member.size} for {member.name!r}")
        self.members += 1
        self.total_bytes += member.size
        if self._max_members is not None and self.members > self._max_members:
            raise ArchiveLimitExceeded(f"archive has more than {self._max_members} members")
        if self._max_total_bytes is not None and self.total_bytes > self._max_total_bytes:
            raise ArchiveLimitExceeded(
                f"archive content exceeds {self._max_total_bytes} bytes at {member.name!r}"
            )
        self._pax.clear()
        self._gnu.clear()
        self._extension_bytes = 0
        events.append(member)
        if member.size:
            self._state, self._want, self._pad = _State.DATA, member.size, -member.size % BLOCK
        else:
            events.append(MEMBER_END)
            self._expect_header()

    # -- extended headers ---------------------------------------------------

    def _start_extension(self, flag: int, size: int) -> None:
        # Global records are capped by their dict's size instead (see _on_extension).
        pending = size if flag == _PAX_GLOBAL else self._extension_bytes + size
        if flag != _PAX_GLOBAL:
            self._extension_bytes = pending
        if size < 0 or pending > self._max_header_bytes:
            raise ArchiveLimitExceeded(
                f"extended header of {size} bytes at offset {self.offset - BLOCK} exceeds"
                f" the {self._max_header_bytes}-byte limit"
            )
        self._extension_flag = flag
        self._state, self._want, self._pad = _State.EXTENSION, size, -size % BLOCK
        if not size:
            self._on_extension(b"")

    def _on_extension(self, payload: bytes) -> None:
        flag = self._extension_flag
        if flag == _GNU_NAME:
            self._gnu[b"path"] = _cstring(payload)
        elif flag == _GNU_LINK:
            self._gnu[b"linkpath"] = _cstring(payload)
        elif flag == _PAX_LOCAL:
            self._pax.update(_parse_pax(payload, self.offset))
        else:
            self._globals.update(_parse_pax(payload, self.offset))
            if sum(len(k) + len(v) for k, v in self._globals.items()) > self._max_header_bytes:
                raise ArchiveLimitExceeded(
                    f"global PAX records exceed the {self._max_header_bytes}-byte limit"
                )
        self._skip_padding()

    # -- state helpers ------------------------------------------------------

    def _skip_padding(self) -> None:
        if self._pad:
            self._state, self._want, self._pad = _State.SKIP, self._pad, 0
        else:
            self._expect_header()

    def _expect_header(self) -> None:
        self._state, self._want = _State.HEADER, BLOCK

    def _malformed(self, message: str) -> MalformedArchive:
        return MalformedArchive(f"{message} (offset {self.offset})")


def _check_checksum(block: bytes, offset: int) -> None:
    """Accept the unsigned sum POSIX specifies or the signed one old tars wrote."""
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block) - sum(block[148:156]) + 8 * ord(" ")
    if stored == unsigned:
        return
    high_bytes = sum(byte >> 7 for byte in block[:148] + block[156:])
    if stored != unsigned - 256 * high_bytes:
        raise MalformedArchive(f"bad tar header checksum at offset {offset}")


def _number(field: bytes, what: str) -> int:
    """A numeric header field: octal (space/NUL padded) or GNU base-256."""
    if field[0] in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    try:
        if digits.isdigit():  # int() alone would take signs, underscores and inner blanks
            return int(digits, 8)
    except ValueError:  # an 8 or a 9
        pass
    raise MalformedArchive(f"bad {what} field {field!r} in tar header")


def _pax_integer(value: bytes, key: str) -> int:
    if not _PAX_INTEGER.fullmatch(value):
        raise MalformedArchive(f"bad PAX {key} {value!r}")
    return int(value)


def _parse_pax(payload: bytes, offset: int) -> dict[bytes, bytes]:
    """``"<len> key=value\\n"`` records; an empty value cancels the key (see POSIX pax)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(payload) and payload[pos]:  # tolerate trailing NUL padding
        space = payload.find(b" ", pos)
        length = payload[pos:space]
        stop = pos + int(length) if space > pos and length.isdigit() else -1
        if stop <= space or stop > len(payload) or payload[stop - 1] != ord("\n"):
            raise MalformedArchive(f"bad PAX record at offset {offset - len(payload) + pos}")
        key, equals, value = payload[space + 1 : stop - 1].partition(b"=")
        if not equals or not key:
            raise MalformedArchive(f"bad PAX record {payload[pos:stop]!r}")
        records[key] = value
        pos = stop
    return records


def _cstring(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
