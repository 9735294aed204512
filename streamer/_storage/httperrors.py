"""HTTP failures as :class:`~streamer._errors.StorageError`s with clear codes.

Codes: the server's own ``X-Error-Code`` header when it sends one (the Hugging
Face Hub does: ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``...), else ``HTTP<status>`` (``HTTP404``, ``HTTP503``). Transport
failures are ``ConnectionError``, ``RequestTimeout`` and ``IncompleteBody``; a
download whose resource changed between two requests is ``SourceChanged``. A
connection the address guard refused stays a ``blocked_address``
(:class:`~streamer._storage.netguard.BlockedAddress`, never retried), its
message prefixed with the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._errors import SOURCE_CHANGED as SOURCE_CHANGED  # re-exported, as its callers raise it
from .._errors import SourceNotFound, StorageError
from .netguard import BlockedAddress

_RETRYABLE_CODES = frozenset({"ConnectionError", "RequestTimeout", "IncompleteBody"})
_NOT_FOUND_CODES = frozenset({"RepoNotFound", "RevisionNotFound", "EntryNotFound"})
_DENIED_CODES = frozenset({"GatedRepo", "DisabledRepo"})
_MAX_RETRY_AFTER = 300.0


class HttpError(StorageError):
    """An HTTP request failed. ``status`` is the HTTP status (0: no response);
    ``retry_after`` the seconds a 429/503 asked us to wait, when it said."""

    def __init__(
        self, message: str, *, code: str, status: int = 0, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (dropped connection, 5xx, 429)."""
        if self.code in _RETRYABLE_CODES:
            return True
        return self.status in (408, 429) or (self.status >= 500 and self.status != 501)


class HttpNotFound(HttpError, SourceNotFound):
    """404/410, or a Hub ``*NotFound`` code (the Hub answers 401 for a missing repo)."""

    status_code = 404


class HttpDenied(HttpError):
    """401/403 or a gated repository: the server refuses us these bytes."""

    status_code = 403


def http_error(
    message: str, *, code: str, status: int = 0, retry_after: float | None = None
) -> HttpError:
    """An :class:`HttpError` of the right class for ``code`` and ``status``."""
    cls: type[HttpError] = HttpError
    if code in _NOT_FOUND_CODES or status in (404, 410):
        cls = HttpNotFound
    elif code in _DENIED_CODES or status in (401, 403):
        cls = HttpDenied
    return cls(message, code=code, status=status, retry_after=retry_after)


def describe(url: str | httpx.URL) -> str:
    """``url`` fit for messages and logs: no user info, no query (signatures live there)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def from_response(method: str, url: str, response: httpx.Response, body: bytes) -> HttpError:
    """The error for an unwanted response (``body``: its first bytes, maybe empty)."""
    status = response.status_code
    code = response.headers.get("x-error-code") or f"HTTP{status}"
    detail = response.headers.get("x-error-message") or _detail(body)
    message = f"{method} {describe(url)}: HTTP {status}"
    if detail:
        message += f": {detail}"
    return http_error(message, code=code, status=status, retry_after=_retry_after(response))


def _detail(body: bytes) -> str:
    """A one-line explanation from an error body: JSON ``error``/``message``, or text."""
    text = body[:2048].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("error", "message"):
            if isinstance(parsed.get(key), str):
                text = parsed[key]
                break
    if text.lstrip().startswith("<"):
        return ""  # an HTML error page says nothing useful in one line
    line = " ".join(text.split())
    return line[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # absent, or an HTTP date: fall back to our own backoff
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


@contextmanager
def transport_errors(method: str, url: str) -> Iterator[None]:
    """Turn httpx's failures inside the block into :class:`HttpError`s."""
    what = f"{method} {describe(url)}"
    try:
        yield
    except httpx.TimeoutException as exc:
        raise HttpError(f"{what}: timed out ({type(exc).__name__})", code="RequestTimeout") from exc
    except httpx.UnsupportedProtocol as exc:
        raise HttpError(f"{what}: {exc}", code="UnsupportedProtocol") from exc
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        raise HttpError(f"{what}: {reason}", code="ConnectionError") from exc
    except httpx.TooManyRedirects as exc:
        raise HttpError(f"{what}: too many redirects", code="TooManyRedirects") from exc
    except httpx.InvalidURL as exc:
        raise HttpError(f"{what}: invalid URL ({exc})", code="InvalidURL") from exc
    except BlockedAddress as exc:
        raise BlockedAddress(f"{what}: {exc.message}") from None
