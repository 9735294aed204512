"""The one error tree of streamer.

Every failure that crosses a module boundary is a :class:`StreamerError`. Each
subclass carries an HTTP ``status_code`` and a machine ``code``; the HTTP edge
turns any of them into ``{"error": code, "message": text}`` with that status, and
the engine records them on a job as ``{"file", "error", "message"}``. Nothing
else in streamer catches exceptions broadly.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType


class StreamerError(Exception):
    """Root of every error streamer raises on purpose.

    ``code`` is a stable, machine-readable identifier (``snake_case`` for API
    errors, the storage's own code such as ``NoSuchKey`` for storage errors).
    """

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, str]:
        """The API's error body."""
        return {"error": self.code, "message": self.message}


# -- client errors (4xx) ---------------------------------------------------


class BadRequest(StreamerError):
    """The request is malformed or names something it may not."""

    status_code = 400
    code = "bad_request"


class InvalidBody(BadRequest):
    """The body is not JSON or does not match the endpoint's schema."""

    code = "invalid_body"


class InvalidPath(BadRequest):
    """A client path is absolute, contains ``..`` or NUL, or escapes its root."""

    code = "invalid_path"


class UnknownLocation(BadRequest):
    """A ``locationId`` names no configured location."""

    code = "unknown_location"


class UnsupportedStorage(BadRequest):
    """A storage type this node cannot serve (not configured or not built)."""

    code = "unsupported_storage"


class Unauthorized(StreamerError):
    """Missing, wrong or expired credentials."""

    status_code = 401
    code = "unauthorized"


class NotFound(StreamerError):
    """The named job, file or resource does not exist."""

    status_code = 404
    code = "not_found"


class Conflict(StreamerError):
    """The request clashes with the current state (e.g. cleanup of a running job)."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(StreamerError):
    status_code = 413
    code = "payload_too_large"


# -- transfer errors (recorded on jobs; 5xx if they ever reach HTTP) --------


class StorageError(StreamerError):
    """A storage backend failed; ``code`` is the backend's own error code."""

    status_code = 502
    code = "StorageError"


#: The :class:`StorageError` code of a source that changed while being copied (its
#: size, version or bytes no longer those planned), whatever the storage.
SOURCE_CHANGED = "SourceChanged"


class PathBlocked(StorageError):
    """Something at the destination is in the way: a file where a directory must
    go, a directory where a file must land, no free name left. The client's to
    resolve, hence a 409; ``code`` names the errno (``EEXIST``, ``EISDIR``, ...)."""

    status_code = 409
    code = "EEXIST"


class SourceNotFound(StorageError):
    status_code = 404
    code = "NotFound"


class ChecksumMismatch(StreamerError):
    """Bytes did not hash to what was declared; nothing was committed."""

    status_code = 422
    code = "ChecksumMismatch"


class ConfigError(StreamerError):
    """The configuration is invalid; the message names the key."""

    code = "config_error"


class Translated:
    """``with Translated(kinds, into):`` raises ``into(exc)``, chained to ``exc``, in
    place of an exception of ``kinds`` leaving the block; anything else passes.

    How a layer hands its failures up in the next layer's terms (the S3 client's
    transport errors as ``S3Error``, the wire's as httpx's). A class, not a
    ``@contextmanager`` generator: the HTTP layers enter a few per request, and a
    generator's setup cost ~1.5 µs of a small GET's ~200.
    """

    __slots__ = ("_into", "_kinds")

    def __init__(
        self,
        kinds: type[BaseException] | tuple[type[BaseException], ...],
        into: Callable[[BaseException], BaseException],
    ) -> None:
        self._kinds = kinds
        self._into = into

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, self._kinds):
            raise self._into(exc) from exc
