"""HTTP downloads for imports: one long-lived httpx client, retries, resumable streams.

:class:`HttpClient` is shared by every import of a node (Hugging Face, URLs)
for the daemon's lifetime. It follows redirects (httpx drops the
``Authorization`` header when a redirect leaves the origin, so a Hub token never
reaches the CDN a file is redirected to), keeps no cookies, and asks for
``Accept-Encoding: identity``: the bytes saved are the bytes served.

Connections go only where :class:`~streamer._storage.netguard.AddressGuard`
allows (public addresses unless ``allow_private_networks``; the
``trusted_origins``, the configured Hub, always), checked per connection by
:mod:`streamer._storage.guardnet`; :meth:`HttpClient.check_url` refuses a
blocked literal address before anything is sent.

Failures (dropped connections, timeouts, 5xx but 501, 408, 429) are retried up
to ``max_retries`` times in a row with exponential backoff and full jitter
(:func:`trio.sleep`, so a ``MockClock`` drives it; ``Retry-After`` is honoured
up to ``backoff_max``); :attr:`HttpClient.retries` counts the retries.

A download (:meth:`HttpClient.stream`) that breaks off resumes with
``Range: bytes=<received>-`` pinned by ``If-Range`` (the first response's
strong ETag, else its Last-Modified). A ``206`` must continue exactly at the
first missing byte; a ``200`` (a server without ranges, or a resource that
changed) is accepted only if its validators and length match the first
response, and the bytes already delivered are skipped, never repeated;
anything else fails with code ``SourceChanged``. Without validators a change
between two requests cannot be detected (sizes still are).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Self, TypeVar

import httpx

from .._concurrency import cleanup
from .._httpbody import StreamedBody
from .._retry import Backoff
from .guardnet import ImportTransport
from .httperrors import SOURCE_CHANGED, HttpError, describe, from_response, transport_errors
from .netguard import AddressGuard

T = TypeVar("T")

MiB = 1 << 20
MAX_JSON_BYTES = 64 * MiB  # cap on bodies read whole (API answers)
UNKNOWN = -1  # a size no response has declared
_ERROR_BODY_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts (seconds), retry policy, pool size and address policy of the shared client.

    ``allow_private_networks`` lets imports reach non-public addresses;
    ``trusted_origins`` are base URLs whose host and port are reached whatever
    their address (the configured Hub endpoint).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_connections: int = 64
    user_agent: str = "streamer"
    allow_private_networks: bool = False
    trusted_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """A response read whole: status, headers, body and the URL it finally came from."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str


@dataclass(frozen=True, slots=True)
class Probe:
    """What a server says about a resource before it is downloaded."""

    size: int  # UNKNOWN when the server did not say
    last_modified: str | None


class _Body(StreamedBody):
    """A raw response body whose transport failures raise :class:`HttpError`."""

    def __init__(self, response: httpx.Response, method: str, url: str) -> None:
        super().__init__(response)
        self._what = (method, url)

    async def next(self) -> bytes | None:
        """The next piece of the body, or ``None`` at its end."""
        with transport_errors(*self._what):
            return await super().next()

    async def read(self, limit: int, *, truncate: bool = False) -> bytes:
        """The rest of the body, at most ``limit`` bytes (more: error, or cut if ``truncate``)."""
        data = bytearray()
        while (piece := await self.next()) is not None:
            data += piece
            if len(data) > limit:
                if truncate:
                    return bytes(data[:limit])
                method, url = self._what
                raise HttpError(
                    f"{method} {describe(url)}: response larger than {limit} bytes",
                    code="ResponseTooLarge",
                    status=self.response.status_code,
                )
        return bytes(data)


class HttpClient:
    """The node's HTTP client for imports; use as ``async with HttpClient(settings)``.

    ``transport`` replaces the network (and its connection checks), for tests.
    """

    def __init__(
        self,
        settings: HttpSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings = settings or HttpSettings()
        s = settings
        self._backoff = Backoff(s.backoff_base, s.backoff_max, s.max_retries)
        self.guard = AddressGuard.of(
            allow_private=s.allow_private_networks, trusted_urls=s.trusted_origins
        )
        limits = httpx.Limits(
            max_connections=s.max_connections,
            max_keepalive_connections=min(16, s.max_connections),
        )
        self._http = httpx.AsyncClient(
            transport=transport or ImportTransport(self.guard, limits=limits),
            timeout=httpx.Timeout(s.read_timeout, connect=s.connect_timeout, pool=None),
            follow_redirects=True,
            max_redirects=10,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # none kept
            headers={"User-Agent": settings.user_agent},
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    def check_url(self, url: str) -> None:
        """Refuse ``url`` at once if its host is a blocked literal address or ``localhost``
        (:class:`~streamer._storage.netguard.BlockedAddress`, a 400)."""
        self.guard.check_url(url)

    # -- one request ---------------------------------------------------------

    async def send(self, method: str, url: str, headers: Mapping[str, str]) -> _Body:
        """One attempt (redirects followed); the body is unread: close it."""
        with transport_errors(method, url):
            request = self._http.build_request(
                method, url, headers={**headers, "Accept-Encoding": "identity"}
            )
            response = await self._http.send(request, stream=True)
        return _Body(response, method, url)

    async def _failure(self, method: str, url: str, body: _Body) -> HttpError:
        """The error for an unwanted response, with the start of its body as detail."""
        if method == "HEAD":
            return from_response(method, url, body.response, b"")
        try:
            start = await body.read(_ERROR_BODY_BYTES, truncate=True)
        except HttpError:
            start = b""
        return from_response(method, url, body.response, start)

    @property
    def retries(self) -> int:
        """Retries taken so far, over all requests."""
        return self._backoff.retries

    async def backoff(self, failures: int, retry_after: float | None = None) -> None:
        """Count one retry and sleep (see :class:`~streamer._retry.Backoff`)."""
        await self._backoff.sleep(failures, retry_after)

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds, fails for good, or ``max_retries`` retries failed."""
        return await self._backoff.run(attempt, HttpError)

    async def _attempt(
        self, method: str, url: str, headers: Mapping[str, str] | None, ok: Sequence[int]
    ) -> _Body:
        """One attempt that must answer a status in ``ok`` (else its error is raised)."""
        body = await self.send(method, url, headers or {})
        if body.response.status_code in ok:
            return body
        try:
            raise await self._failure(method, url, body)
        finally:
            await cleanup(body.close)

    async def open(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200,),
    ) -> _Body:
        """Send (with retries) until a response with a status in ``ok``; close its body."""
        return await self.retrying(lambda: self._attempt(method, url, headers, ok))

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200,),
        limit: int = MAX_JSON_BYTES,
    ) -> Reply:
        """A whole (capped) response with a status in ``ok``, with retries."""

        async def attempt() -> Reply:
            body = await self._attempt(method, url, headers, ok)
            try:
                data = b"" if method == "HEAD" else await body.read(limit)
            finally:
                await cleanup(body.close)
            response = body.response
            return Reply(response.status_code, response.headers, data, str(response.url))

        return await self.retrying(attempt)

    async def probe(self, url: str, *, headers: Mapping[str, str] | None = None) -> Probe:
        """Size and Last-Modified of ``url`` by HEAD, else by a GET of its first byte.

        The GET covers servers that refuse HEAD (405, or 403 for URLs signed for
        GET) or answer it without a length. Raises the GET's error.
        """
        try:
            head = await self.fetch("HEAD", url, headers=headers)
        except HttpError as exc:
            if exc.retryable:
                raise
        else:
            size = _content_length(head.headers)
            if size != UNKNOWN:
                return Probe(size, head.headers.get("last-modified"))
        ranged = {**(headers or {}), "Range": "bytes=0-0"}
        body = await self.open("GET", url, headers=ranged, ok=(200, 206, 416))
        try:
            response = body.response
            if response.status_code == 200:
                size = _content_length(response.headers)
            else:  # 206 "bytes 0-0/N", or 416 "bytes */0" for an empty resource
                size = _content_range(response.headers.get("content-range", ""))[2]
            return Probe(size, response.headers.get("last-modified"))
        finally:
            await cleanup(body.close)

    # -- downloads -----------------------------------------------------------

    async def stream(
        self, url: str, *, chunk_size: int, headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[bytes]:
        """The bytes of ``url`` in chunks of ``chunk_size`` (the last may be shorter),
        resuming after failures as the module docstring describes.

        Close the generator (``aclosing``) when abandoning it early.
        """
        download = _Download(self, url, headers or {})
        pending = bytearray()
        try:
            while (piece := await download.next_piece()) is not None:
                pending += piece
                while len(pending) >= chunk_size:
                    chunk = bytes(pending[:chunk_size])
                    del pending[:chunk_size]
                    yield chunk
            if pending:
                yield bytes(pending)
        finally:
            await cleanup(download.close)


class _Download:
    """The state of one resumable GET: bytes delivered, validators, the open body."""

    def __init__(self, client: HttpClient, url: str, headers: Mapping[str, str]) -> None:
        self._client = client
        self._url = url
        self._headers = dict(headers)
        self.received = 0
        self.total = UNKNOWN
        self._etag: str | None = None
        self._modified: str | None = None
        self._body: _Body | None = None
        self._offset = 0  # file position of the open body's next byte
        self._done = False
        self._failures = 0
        self._received_at_failure = 0

    async def next_piece(self) -> bytes | None:
        """The next new bytes (never empty), or ``None`` once all arrived."""
        while not self._done:
            try:
                if self._body is None:
                    await self._open()
                    continue
                piece = await self._body.next()
                if piece is None:
                    await self._ended()
                    continue
                piece = self._fresh(piece)
                if piece:
                    self.received += len(piece)
                    return piece
            except HttpError as exc:
                await self.close()
                await self._retry_or_raise(exc)
        return None

    async def _retry_or_raise(self, exc: HttpError) -> None:
        if self.received > self._received_at_failure:
            self._failures = 0  # progress since the last failure: a fresh budget
        self._received_at_failure = self.received
        if not exc.retryable or self._failures >= self._client.settings.max_retries:
            raise exc
        self._failures += 1
        await self._client.backoff(self._failures, exc.retry_after)

    async def close(self) -> None:
        if self._body is not None:
            body, self._body = self._body, None
            await body.close()

    def _describe(self) -> str:
        return f"GET {describe(self._url)}"

    def _changed(self, why: str) -> HttpError:
        return HttpError(
            f"{self._describe()}: the resource changed during the download ({why})",
            code=SOURCE_CHANGED,
        )

    async def _open(self) -> None:
        headers = dict(self._headers)
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
            validator = self._etag or self._modified
            if validator:
                headers["If-Range"] = validator
        body = await self._client.send("GET", self._url, headers)
        try:
            response = body.response
            status = response.status_code
            if status == 416 and self.received:
                total = _content_range(response.headers.get("content-range", ""))[2]
                if total != self.received:
                    raise self._changed(f"it now has {total} bytes, {self.received} arrived")
                self._done = True  # everything had arrived; only the ending was lost
                await body.close()
                return
            if status == 206 and self.received:
                first, _, total = _content_range(response.headers.get("content-range", ""))
                if first != self.received:
                    raise HttpError(
                        f"{self._describe()}: asked for bytes from {self.received}, "
                        f"got bytes from {first}",
                        code="InvalidRange",
                        status=status,
                    )
                self._offset = first
            elif status == 200:
                self._offset = 0  # the whole resource (again): _fresh skips what arrived
                total = _content_length(response.headers)
            else:
                raise await self._client._failure("GET", self._url, body)
            self._pin(response, total)
        except BaseException:
            await cleanup(body.close)
            raise
        self._body = body

    def _pin(self, response: httpx.Response, total: int) -> None:
        """Check the response's validators and size against the first response's."""
        etag = response.headers.get("etag")
        modified = response.headers.get("last-modified")
        if self._etag and etag and etag != self._etag:
            raise self._changed(f"ETag {self._etag} → {etag}")
        if self._modified and modified and modified != self._modified:
            raise self._changed(f"Last-Modified {self._modified} → {modified}")
        if total != UNKNOWN:
            if self.total != UNKNOWN and total != self.total:
                raise self._changed(f"size {self.total} → {total}")
            if total < self.received:
                raise self._changed(f"it now has {total} bytes, {self.received} arrived")
            self.total = total
        if not self.received:
            self._etag = etag if etag and not etag.startswith("W/") else None
            self._modified = modified

    def _fresh(self, piece: bytes) -> bytes:
        """The part of ``piece`` (at the open body's position) not delivered yet."""
        start = self._offset
        self._offset += len(piece)
        if self._offset <= self.received:
            return b""
        return piece[max(0, self.received - start) :]

    async def _ended(self) -> None:
        await self.close()
        if self.total != UNKNOWN and self.received < self.total:
            raise HttpError(
                f"{self._describe()}: body ended at byte {self.received} of {self.total}",
                code="IncompleteBody",
            )
        self._done = True


def _content_length(headers: httpx.Headers) -> int:
    value = headers.get("content-length", "")
    if "chunked" in headers.get("transfer-encoding", "").lower() or not value.isdigit():
        return UNKNOWN
    return int(value)


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def _content_range(value: str) -> tuple[int, int, int]:
    """``(first, last, total)`` of ``bytes first-last/total`` (or ``bytes */total``);
    missing parts are :data:`UNKNOWN`."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise HttpError(f"unparseable Content-Range {value!r}", code="InvalidRange")
    first, last, total = match.groups()
    return (
        int(first) if first else UNKNOWN,
        int(last) if last else UNKNOWN,
        int(total) if total and total != "*" else UNKNOWN,
    )
