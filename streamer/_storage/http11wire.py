"""The bytes of HTTP/1.1 heads as the S3 client speaks it, with no I/O: strict
parsing of a response head (RFC 9112: a status line ``HTTP/1.x NNN``, ``name:
value`` lines with token names and no control characters, no obsolete line
folding), how its body is framed (RFC 9112 §6.3), and a request head that lets no
byte escape its field. :mod:`.http11` runs them on a connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_CHARS = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"  # a character class's contents
_CONTROL_CHARS = rb"\x00-\x08\x0a-\x1f\x7f"  # CTLs but HTAB
_TOKEN = re.compile(rb"[%s]+" % _TOKEN_CHARS)
_FIELD_VALUE_BAD = re.compile(rb"[%s]" % _CONTROL_CHARS)
# Header lines as they must be (token, colon, a value without CTLs but HTAB), each
# CRLF-terminated: one C call checks a whole head, where checking line by line took
# two per line (~18 lines from an S3 server; parse_head 11.7 -> 9 µs).
_HEADER_LINES = re.compile(rb"(?:[%s]+:[^%s]*\r\n)*" % (_TOKEN_CHARS, _CONTROL_CHARS))
_NO_BODY_STATUSES = frozenset({204, 304})


class WireError(Exception):
    """Base of the HTTP/1.1 wire's failures (here and in :mod:`.http11`)."""


class ProtocolError(WireError):
    """The server's bytes are not a well-formed HTTP/1.1 response."""


class RequestError(WireError):
    """The request cannot be sent as asked (a bad header, a body of the wrong length)."""


@dataclass(frozen=True, slots=True)
class Head:
    """A response's status line and headers (names lower-cased, values as sent)."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]


def parse_head(data: bytes) -> Head:
    """Parse a response head (without its blank line) or raise :class:`ProtocolError`."""
    status_line, _, block = data.partition(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"bad status line {status_line[:100]!r}")
    lines = block + b"\r\n" if block else b""
    if not _HEADER_LINES.fullmatch(lines):
        raise ProtocolError(_bad_header_line(lines))
    headers = []
    for line in block.split(b"\r\n") if block else ():
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip(b" \t")))
    connection = {
        token.strip().lower()
        for key, value in headers
        if key == b"connection"
        for token in value.split(b",")
    }
    keep_alive = version == b"HTTP/1.1" and b"close" not in connection
    return Head(int(code), reason, headers, keep_alive)


def _bad_header_line(lines: bytes) -> str:
    """What is wrong with the first ill-formed line of ``lines`` (CRLF-terminated)."""
    for line in lines.split(b"\r\n")[:-1]:
        if not _HEADER_LINES.fullmatch(line + b"\r\n"):
            name, colon, _ = line.partition(b":")
            if colon and _TOKEN.fullmatch(name):
                return f"control character in header {name[:100]!r}"
            return f"bad header line {line[:100]!r}"  # obs-fold starts with SP
    raise AssertionError("no ill-formed line")  # pragma: no cover - the caller found one


def body_framing(head: Head, method: bytes) -> tuple[str, int]:
    """How the body after ``head`` is delimited: ``("length", n)``, ``("chunked", 0)``
    or ``("close", 0)`` (until the server closes); RFC 9112 §6.3."""
    if method == b"HEAD" or head.status in _NO_BODY_STATUSES or head.status < 200:
        return "length", 0
    codings = [c.strip().lower() for v in head.values(b"transfer-encoding") for c in v.split(b",")]
    if codings:
        return ("chunked", 0) if codings[-1] == b"chunked" else ("close", 0)
    lengths = {v.strip() for value in head.values(b"content-length") for v in value.split(b",")}
    if not lengths:
        return "close", 0
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise ProtocolError(f"bad Content-Length {sorted(lengths)!r}")
    return "length", int(lengths.pop())


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytearray:
    """The request line and headers, ending in the blank line; :class:`RequestError` for a
    method, target or header that would let bytes escape their field."""
    if not _TOKEN.fullmatch(method) or not target or _FIELD_VALUE_BAD.search(target + b" "):
        raise RequestError(f"bad request line {method!r} {target[:100]!r}")
    out = bytearray(b"%s %s HTTP/1.1\r\n" % (method, target))
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _FIELD_VALUE_BAD.search(value):
            raise RequestError(f"bad request header {name[:100]!r}")
        out += b"%s: %s\r\n" % (name, value)
    out += b"\r\n"
    return out
