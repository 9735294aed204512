"""S3 failures as :class:`~streamer._errors.StorageError`s carrying S3's own codes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import httpx

from .._errors import SOURCE_CHANGED as SOURCE_CHANGED  # re-exported, as its callers raise it
from .._errors import SourceNotFound, StorageError, Translated

PRECONDITION_FAILED = "PreconditionFailed"

_RETRYABLE_CODES = frozenset(
    {
        "ConnectionError",
        "RequestTimeout",
        "IncompleteBody",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "ConditionalRequestConflict",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound"})
# What to call an error response that has no body to name it (HEAD requests).
_STATUS_CODES = {
    301: "PermanentRedirect",
    400: "BadRequest",
    403: "AccessDenied",
    404: "NotFound",
    409: "Conflict",
    412: PRECONDITION_FAILED,
    416: "InvalidRange",
    429: "SlowDown",
    500: "InternalError",
    501: "NotImplemented",
    503: "ServiceUnavailable",
}


class S3Error(StorageError):
    """An S3 request failed: ``code`` is S3's error code (``NoSuchKey``, ``SlowDown``...)
    and ``message`` S3's message; ``status`` is the HTTP status (0: no response).

    Transport failures use the codes ``ConnectionError``, ``RequestTimeout`` and
    ``IncompleteBody``; a read pinned to an ETag whose object changed raises
    code ``SourceChanged``.
    """

    def __init__(self, message: str, *, code: str, status: int = 0) -> None:
        super().__init__(message, code=code)
        self.status = status
        if status == 403:  # the node's credentials cannot reach it: say so, not "bad gateway"
            self.status_code = 403

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (throttling, 5xx, dropped connection)."""
        if self.code in _RETRYABLE_CODES or self.status == 429:
            return True
        return self.status >= 500 and self.status != 501


class S3NotFound(S3Error, SourceNotFound):
    """``NoSuchKey``, ``NoSuchBucket``, ``NoSuchUpload``: also a :class:`SourceNotFound`."""


def s3_error(message: str, *, code: str, status: int = 0) -> S3Error:
    """An :class:`S3Error` of the right class for ``code``."""
    cls = S3NotFound if code in _NOT_FOUND_CODES else S3Error
    return cls(message, code=code, status=status)


def code_for_status(status: int) -> str:
    """The error code for a response without an error document (HEAD)."""
    return _STATUS_CODES.get(status, f"HTTP{status}")


def transport_errors(describe: Callable[[], str]) -> Translated:
    """``with transport_errors(describe):`` turns httpx's transport failures inside the
    block into retryable :class:`S3Error` exceptions, ``describe()`` naming the request."""
    return Translated(httpx.TransportError, partial(_transport_error, describe))


def _transport_error(describe: Callable[[], str], exc: BaseException) -> S3Error:
    if isinstance(exc, httpx.TimeoutException):
        return S3Error(f"{describe()}: timed out ({type(exc).__name__})", code="RequestTimeout")
    return S3Error(f"{describe()}: {type(exc).__name__}: {exc}", code="ConnectionError")
