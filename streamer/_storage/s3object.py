"""Reading objects: what a HEAD/GET says about an object, and ranged GETs that resume.

Every GET body is read to its end (or to a transport error) inside one call,
never suspended half-read across a ``yield``: a half-read body holds its
connection, and through an httpx transport (tests) it is a chain of async
generators that cannot be closed early, which trio reports as unclosed
generators (httpx issue #3686). Callers therefore fetch bounded ranges (a
part at most) into memory, or receive them in place, and yield from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from . import s3xml
from .base import Landed
from .httpexchange import Response
from .s3errors import PRECONDITION_FAILED, SOURCE_CHANGED, S3Error, transport_errors
from .s3settings import S3Settings

_META_PREFIX = "x-amz-meta-"
_SURPLUS = memoryview(bytearray(64 * 1024))  # bytes past a range (a server's excess), dropped

#: Given a range's length in bytes, the buffer to receive it into (that long).
Into = Callable[[int], memoryview]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD or GET says about one version of an object.

    ``metadata`` holds the ``x-amz-meta-*`` headers, lower-cased, without prefix.
    ``last_modified`` is the ``Last-Modified`` header as sent (``""``: none), parsed
    only when asked for (:attr:`last_modified_ns`): a copy never needs it, and
    parsing it cost ~2 µs of every small GET.
    """

    size: int
    etag: str
    last_modified: str
    metadata: Mapping[str, str]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], size: int) -> ObjectInfo:
        """From response headers (names lower-case)."""
        return cls(
            size=size,
            etag=str(headers.get("etag", "")),
            last_modified=headers.get("last-modified", ""),
            metadata={
                name[len(_META_PREFIX) :]: value
                for name, value in headers.items()
                if name.startswith(_META_PREFIX)
            },
        )

    @property
    def last_modified_ns(self) -> int | None:
        """``Last-Modified`` in nanoseconds since the epoch (``None``: absent or not a date)."""
        return _http_date_ns(self.last_modified) if self.last_modified else None


def _http_date_ns(value: str) -> int | None:
    """Nanoseconds since the epoch of an HTTP date; ``None`` if it is not one.

    The IMF-fixdate every current server sends (``Sun, 06 Nov 1994 08:49:37 GMT``)
    is read directly (email.utils takes ~20 µs, a tenth of a small GET's budget);
    the obsolete forms go through :func:`email.utils.parsedate_to_datetime`.
    """
    parts = value.split(" ")
    if len(parts) == 6 and parts[5] == "GMT" and (month := _MONTHS.get(parts[2])):
        try:
            hour, minute, second = map(int, parts[4].split(":"))
            moment = datetime(int(parts[3]), month, int(parts[1]), hour, minute, second, tzinfo=UTC)
        except ValueError:  # a field out of range, not a number, or not three of them
            return None
        return s3xml.datetime_ns(moment)
    try:
        return s3xml.datetime_ns(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


class Getter(Protocol):
    """What :func:`read_range` needs from the client."""

    settings: S3Settings

    async def get_response(self, bucket: str, key: str, headers: dict[str, str]) -> Response:
        """A signed GET (retried until it has a 200/206 response); body unread."""
        ...

    async def backoff(self, failures: int) -> None:
        """Count a retry and sleep before it."""
        ...


async def stream_range(
    client: Getter,
    bucket: str,
    key: str,
    *,
    start: int,
    end: int,
    into: Into,
    landed: Landed | None = None,
    etag: str | None = None,
) -> ObjectInfo:
    """Bytes ``[start, end)`` of an object (``end`` may exceed its size) received in
    order into the buffer ``into(length)`` returns (asked once, when the first
    response tells how many bytes the range has), ``landed`` awaited after each
    receive with how many are in.

    With ``etag`` every GET is pinned to that version (``If-Match``); without,
    to the version the first response delivers. After a dropped connection
    the next GET asks for ``Range: bytes=<first missing byte>-<end - 1>`` of
    the pinned version, so the bytes received are exactly that version's or
    an ``S3Error`` with code ``SourceChanged`` is raised. Drops are retried up
    to ``max_retries`` times in a row (the count resets when bytes arrive).
    """
    reader = _RangeReader(client, bucket, key, start, end, etag, into, landed)
    failures = 0
    while not reader.done:
        before = reader.received
        try:
            await reader.attempt()
        except S3Error as exc:
            failures = 1 if reader.received > before else failures + 1
            if not exc.retryable or failures > client.settings.max_retries:
                raise
            await client.backoff(failures)
    assert reader.info is not None
    return reader.info


async def read_range(
    client: Getter, bucket: str, key: str, *, start: int, end: int, etag: str | None = None
) -> tuple[ObjectInfo, bytearray]:
    """:func:`stream_range` into memory: one buffer, received into in place."""
    data = bytearray()

    def allocate(length: int) -> memoryview:
        nonlocal data
        data = bytearray(length)
        return memoryview(data)

    info = await stream_range(client, bucket, key, start=start, end=end, into=allocate, etag=etag)
    return info, data


class _RangeReader:
    def __init__(
        self,
        client: Getter,
        bucket: str,
        key: str,
        start: int,
        end: int,
        etag: str | None,
        into: Into,
        landed: Landed | None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._start = start
        self._end = end
        self._etag = etag
        self._into = into
        self._landed = landed
        self._ranged = True  # dropped after a 416 at byte 0: the object is empty
        self.info: ObjectInfo | None = None
        self.received = 0
        self._buffer: memoryview | None = None  # from into(), once the first response came

    @property
    def _position(self) -> int:
        return self._start + self.received

    @property
    def done(self) -> bool:
        return self.info is not None and self._position >= min(self._end, self.info.size)

    def _describe(self) -> str:
        return f"GET s3://{self._bucket}/{self._key}"

    async def attempt(self) -> None:
        """One GET from the first missing byte, read to its end."""
        headers: dict[str, str] = {}
        if self._ranged:
            headers["Range"] = f"bytes={self._position}-{self._end - 1}"
        if self._etag:
            headers["If-Match"] = self._etag
        try:
            response = await self._client.get_response(self._bucket, self._key, headers)
        except S3Error as exc:
            if exc.code == PRECONDITION_FAILED and self._etag:
                raise self._changed() from None
            if exc.code == "InvalidRange" and self._position == 0 and self._ranged:
                self._ranged = False
                return
            raise
        try:
            stop = self._check(response)
            if self._buffer is None:
                self._buffer = self._into(stop - self._start)
            buffer = self._buffer[: stop - self._start]
            with transport_errors(self._describe):
                while self.received < len(buffer):
                    count = await response.read_into(buffer[self.received :])
                    if not count:
                        break
                    self.received += count
                    if self._landed is not None:
                        await self._landed(self.received)
                while await response.read_into(_SURPLUS):  # to its end: see module doc
                    pass
        finally:
            await response.aclose()  # shielded: never leaks the connection
        if self._position < stop:
            raise S3Error(
                f"{self._describe()}: body ended at byte {self._position} of {stop}",
                code="IncompleteBody",
            )

    def _check(self, response: Response) -> int:
        """Validate a response against what was asked; returns the byte to stop at."""
        headers = response.headers
        etag = headers.get("etag", "")
        if self._etag and etag and etag != self._etag:
            raise self._changed()  # a server that ignores If-Match
        self._etag = self._etag or etag
        if response.status == 206 or "content-range" in headers:
            first, size = _content_range(headers.get("content-range", ""))
            if first != self._position:
                raise S3Error(
                    f"{self._describe()}: range starts at {first}, not {self._position}",
                    code="InvalidRange",
                )
        else:
            size = int(headers.get("content-length", "0"))
            if self._position != 0 or size > self._end:
                raise S3Error(f"{self._describe()}: the server ignored Range", code="InvalidRange")
        if self.info is None:
            self.info = ObjectInfo.from_headers(headers, size)
        return min(self._end, size)

    def _changed(self) -> S3Error:
        return S3Error(
            f"s3://{self._bucket}/{self._key} changed while being read (ETag {self._etag} is gone)",
            code=SOURCE_CHANGED,
            status=412,
        )


def _content_range(value: str) -> tuple[int, int]:
    """``(first byte, total size)`` of ``bytes first-last/total``."""
    unit, _, spec = value.partition(" ")
    span, _, total = spec.partition("/")
    try:
        if unit != "bytes":
            raise ValueError(unit)
        return int(span.partition("-")[0]), int(total)
    except ValueError:
        raise S3Error(f"unparseable Content-Range {value!r}", code="InvalidRange") from None
