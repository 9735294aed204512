"""The ``url`` import: plain HTTP(S) files as a read-only storage.

Each URL becomes one file named after the last segment of its path (see
:func:`url_names`); names depend on the URL list alone, so a resumed job maps
every URL to the same file. Sizes come from a HEAD (or a one-byte GET) when the
plan is made; a server that declares no length gives :data:`UNKNOWN_SIZE`, and
the copy runner then takes the size the download turns out to have.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit

import httpx

from .. import _paths
from .._concurrency import for_each
from .._errors import BadRequest, SourceNotFound, UnsupportedStorage
from .base import UNKNOWN_SIZE, Conflict, Entry, Writer
from .http import UNKNOWN, HttpClient
from .local import is_temp_name

PROBES_IN_FLIGHT = 8
FALLBACK_NAME = "download"
_UNSAFE = {ord(c): "_" for c in "/\\\x7f"} | {c: "_" for c in range(32)}


def url_name(url: str) -> str:
    """The file name for ``url``: its path's last non-empty segment, percent-decoded,
    with separators and control characters replaced, at most 255 bytes (the
    extension kept), ``download`` when nothing usable is left."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    name = unquote(segments[-1], errors="replace") if segments else ""
    name = name.translate(_UNSAFE).strip()
    if name in ("", ".", ".."):
        return FALLBACK_NAME
    if is_temp_name(name):  # would pass for a staging file of a local location
        name = f"_{name}"
    return _shorten(name)


def _shorten(name: str, limit: int = _paths.MAX_SEGMENT_BYTES) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, ext = _paths.split_name(name)
    if len(ext.encode()) > limit // 2:
        stem, ext = name, ""
    room = limit - len(ext.encode())
    return stem.encode()[:room].decode(errors="ignore") + ext


def url_names(urls: Sequence[str]) -> list[str]:
    """One distinct file name per URL, in order: repeats get `` (1)``, `` (2)``...
    as the ``rename`` conflict policy names them."""
    taken: set[str] = set()
    names: list[str] = []
    for url in urls:
        base = name = url_name(url)
        n = 0
        while name in taken:
            n += 1
            name = _shorten(_paths.renamed(base, n))
        taken.add(name)
        names.append(name)
    return names


class UrlImport:
    """The files behind a list of URLs, read-only; ``location_id`` is ``"url"``."""

    kind = "url"
    location_id = "url"

    def __init__(self, client: HttpClient, urls: Sequence[str]) -> None:
        """Raises a 400 for an invalid URL (``invalid_url``) or one whose host the
        client's guard refuses outright (``blocked_address``)."""
        for url in urls:
            _check_url(url)
            client.check_url(url)
        self._client = client
        self._urls = dict(zip(url_names(urls), urls, strict=True))
        self._entries: list[Entry] | None = None

    def url(self, path: str) -> str:
        """The URL behind the file name ``path``; :class:`SourceNotFound` if none."""
        url = self._urls.get(path)
        if url is None:
            raise SourceNotFound(f"{path!r} is not one of this import's files")
        return url

    async def walk(self, path: str) -> list[Entry]:
        """One entry per URL (all in the root), sized by asking each server.

        Raises the first failure (e.g. ``HTTP404``, a :class:`SourceNotFound`).
        """
        if path:
            raise SourceNotFound(f"a URL import has no directory {path!r}")
        if self._entries is None:
            found: dict[str, Entry] = {}

            async def probe(name: str) -> None:
                answer = await self._client.probe(self._urls[name])
                size = UNKNOWN_SIZE if answer.size == UNKNOWN else answer.size
                found[name] = Entry(name, size, _mtime_ns(answer.last_modified))

            await for_each(list(self._urls), PROBES_IN_FLIGHT, probe)
            self._entries = sorted(found.values(), key=lambda e: e.path)
        return list(self._entries)

    async def stat(self, path: str) -> Entry | None:
        if path not in self._urls:
            return None
        return next(e for e in await self.walk("") if e.path == path)

    async def read(self, path: str, *, chunk_size: int) -> AsyncGenerator[bytes]:
        """The bytes behind ``path``, resuming after dropped connections."""
        async with aclosing(self._client.stream(self.url(path), chunk_size=chunk_size)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def open_writer(self, path: str, *, conflict: Conflict, tag: str) -> Writer:
        raise UnsupportedStorage("a URL import is a source only")

    async def sweep(self, path: str, *, tag: str) -> None:
        """Nothing is ever staged here."""


def _check_url(url: str) -> None:
    """Refuse what no server should be asked for: blanks, bad ports, no host."""

    def bad(why: str) -> BadRequest:
        return BadRequest(f"invalid URL {url!r}: {why}", code="invalid_url")

    if any(c.isspace() or not c.isprintable() for c in url):
        raise bad("it contains blanks or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise bad(str(exc)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("expected http(s)://HOST/...")


def _mtime_ns(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1_000_000_000)
    except (TypeError, ValueError, OverflowError):
        return None
