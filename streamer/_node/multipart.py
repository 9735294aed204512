"""Sans-IO ``multipart/form-data``: a push parser and the writer's framing.

:class:`MultipartParser` is fed the body in pieces of any size and returns
events: :class:`PartStart` (the part's form name, file name and headers),
:class:`PartData` (content, never buffered whole: a part may be gigabytes),
:class:`PartEnd` and finally :class:`Finished` at the closing boundary.
:meth:`MultipartParser.finish` raises if the body ended before that.
Content is passed on as it arrives except for at most ``len(boundary) + 3``
bytes held back while they could be the start of a delimiter.

The writer side (:func:`part_head`, :func:`closing`) frames parts exactly as
Go's ``mime/multipart`` writer does, which is what Wings sends and expects.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from .._errors import BadRequest

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_PARTS: Final = 64
_BOUNDARY: Final = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PARAM: Final = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MalformedMultipart(BadRequest):
    """The body does not follow ``multipart/form-data`` framing."""

    code = "malformed_multipart"


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; ``headers`` has lower-cased names."""

    name: str | None
    filename: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartData:
    """The next piece of the current part's content (never empty)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part's content is complete."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The closing boundary was read; what follows (the epilogue) is ignored."""


Event: TypeAlias = PartStart | PartData | PartEnd | Finished
PART_END: Final = PartEnd()
FINISHED: Final = Finished()

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


def check_boundary(boundary: str) -> str:
    """``boundary`` if RFC 2046 allows it (1-70 safe characters); else 400."""
    if not _BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart(f"invalid multipart boundary {boundary[:80]!r}")
    return boundary


class MultipartParser:
    """Push parser for one ``multipart/form-data`` body; see the module docstring."""

    def __init__(
        self,
        boundary: str,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_parts: int = MAX_PARTS,
    ) -> None:
        self._delimiter = b"\r\n--" + check_boundary(boundary).encode("ascii")
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._state = _PREAMBLE
        # The first delimiter may open the body without a CRLF: pretend there was one.
        self._buffer = bytearray(b"\r\n")
        self._carry = b""  # end of the last body piece that may start a delimiter
        self.parts = 0

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next bytes of the body; return the events they complete."""
        events: list[Event] = []
        pending = data
        while True:
            if self._state == _EPILOGUE:
                return events
            if self._state == _BODY:
                if not pending:
                    return events
                rest = self._body(pending, events)
                if rest is None:
                    return events
                self._state, pending = _AFTER_DELIMITER, rest
                continue
            self._buffer += pending
            pending = b""
            if not self._step(events):
                return events
            if self._state == _BODY and self._buffer:
                pending = bytes(self._buffer)
                self._buffer.clear()

    def finish(self) -> None:
        """The body ended: raise :class:`MalformedMultipart` unless it was complete."""
        if self._state != _EPILOGUE:
            raise MalformedMultipart("multipart body ended before its closing boundary")

    # -- states ---------------------------------------------------------------

    def _step(self, events: list[Event]) -> bool:
        """Advance through the buffered states; ``False`` when more bytes are needed."""
        buffer = self._buffer
        if self._state == _PREAMBLE:
            at = buffer.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1
                if len(buffer) > keep:  # preamble: discard all but a possible partial delimiter
                    del buffer[:-keep]
                return False
            del buffer[: at + len(self._delimiter)]
            self._state = _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            if len(buffer) < 2:
                return False
            if buffer.startswith(b"--"):
                self._state = _EPILOGUE
                buffer.clear()
                events.append(FINISHED)
                return True
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 1024:
                    raise MalformedMultipart("garbage after a multipart boundary")
                return False
            if buffer[:end].strip(b" \t"):
                raise MalformedMultipart("garbage after a multipart boundary")
            del buffer[: end + 2]
            self._state = _HEADERS
            return True
        # _HEADERS
        if buffer.startswith(b"\r\n"):
            raw, consumed = b"", 2
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._max_header_bytes:
                    raise MalformedMultipart(f"part headers exceed {self._max_header_bytes} bytes")
                return False
            raw, consumed = bytes(buffer[:end]), end + 4
        if consumed - 4 > self._max_header_bytes:
            raise MalformedMultipart(f"part headers exceed {self._max_header_bytes} bytes")
        del buffer[:consumed]
        self.parts += 1
        if self.parts > self._max_parts:
            raise MalformedMultipart(f"more than {self._max_parts} parts")
        events.append(_part_start(raw))
        self._state = _BODY
        return True

    def _body(self, data: bytes, events: list[Event]) -> bytes | None:
        """Pass on content; at the delimiter end the part and return what follows it."""
        delimiter = self._delimiter
        if self._carry:
            data, self._carry = self._carry + data, b""
        at = data.find(delimiter)
        if at >= 0:
            if at:
                events.append(PartData(data[:at]))
            events.append(PART_END)
            return data[at + len(delimiter) :]
        keep = _partial_suffix(data, delimiter)
        if keep:
            data, self._carry = data[:-keep], data[-keep:]
        if data:
            events.append(PartData(data))
        return None


def _partial_suffix(data: bytes, delimiter: bytes) -> int:
    """Length of the longest end of ``data`` that is a proper prefix of ``delimiter``."""
    at = data.find(b"\r", max(0, len(data) - len(delimiter) + 1))
    while at >= 0:
        if delimiter.startswith(data[at:]):
            return len(data) - at
        at = data.find(b"\r", at + 1)
    return 0


def _part_start(raw: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n") if raw else []:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise MalformedMultipart(f"bad part header line {line[:100]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
    disposition = headers.get("content-disposition", "")
    params = parse_params(disposition)
    return PartStart(name=params.get("name"), filename=params.get("filename"), headers=headers)


def parse_params(value: str) -> dict[str, str]:
    """The ``; key=value`` parameters of a header value (quoted strings unescaped)."""
    params: dict[str, str] = {}
    for match in _PARAM.finditer(value):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(key, raw)
    return params


# -- writing -----------------------------------------------------------------------


def new_boundary() -> str:
    """A random boundary shaped like Go's (60 hex digits)."""
    return secrets.token_hex(30)


def content_type(boundary: str) -> str:
    return f"multipart/form-data; boundary={boundary}"


def part_head(
    boundary: str,
    name: str,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    first: bool = False,
) -> bytes:
    """The delimiter and headers that open a part (Go's ``CreatePart`` framing)."""
    disposition = f'form-data; name="{_quote(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quote(filename)}"'
    lines = [f"--{boundary}" if first else f"\r\n--{boundary}"]
    lines.append(f"Content-Disposition: {disposition}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closing(boundary: str) -> bytes:
    """The closing delimiter that ends the body."""
    return f"\r\n--{boundary}--\r\n".encode()


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
