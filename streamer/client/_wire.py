"""What the resumable download and upload share: options, errors, results, helpers."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from .._pipeline.throttle import TokenBucket
from .._retry import Backoff
from .http import ApiError

MIB = 1 << 20
DEFAULT_TIMEOUT = 1800.0  # seconds for one whole transfer, retries included

#: ``progress(done, total)``: bytes in place (downloads) or sent (uploads) so far, and
#: the file's size when known. Called on the event loop for every chunk: keep it cheap.
ProgressCallback = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class TransferOptions:
    """How downloads and uploads behave; the defaults follow seed 004.

    ``retries`` retries after ``backoff_base * 2**n`` seconds (2, 4, 8) plus up to
    ``backoff_jitter`` of that; progress between failures restores the budget.
    ``timeout`` bounds one whole transfer (None: unbounded). ``bandwidth`` is a
    token bucket shared by every transfer given the same one (None: unlimited).
    ``compress`` asks for zstd on the wire (whole-file downloads, fresh uploads).
    Downloads of at least ``parallel_min_size`` bytes from a server that takes
    ranges use ``parallel`` ranges at once. ``durable`` fsyncs a download before
    it is renamed into place.
    """

    retries: int = 3
    backoff_base: float = 2.0
    backoff_cap: float = 60.0
    backoff_jitter: float = 0.25
    timeout: float | None = DEFAULT_TIMEOUT
    bandwidth: TokenBucket | None = field(default=None, compare=False)
    compress: bool = False
    parallel: int = 4
    parallel_min_size: int = 64 * MIB
    chunk_size: int = MIB
    durable: bool = False

    def backoff(self) -> Backoff:
        return Backoff(
            self.backoff_base, self.backoff_cap, self.retries, added_jitter=self.backoff_jitter
        )


class TransferError(ApiError):
    """A download or upload failed: ``code`` says why, ``status`` is the HTTP status
    (0 when no answer was involved); ``retryable`` whether trying again may help."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int = 0,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, retry_after)
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        return self._retryable


@dataclass(frozen=True)
class DownloadResult:
    """A finished download: where, how big, its sha256 (verified against the server's
    ``X-Checksum-Sha256`` when it sent one), ``retries`` taken, the byte offsets
    that requests ``resumed`` from, and how many ``ranges`` filled it."""

    path: Path
    size: int
    sha256: str
    verified: bool
    retries: int
    resumed: tuple[int, ...]
    ranges: int


@dataclass(frozen=True)
class UploadResult:
    """A finished upload: size and sha256 sent (the server verified the sha256),
    ``retries`` taken, the offsets it ``resumed`` from, and the server's ``answer``."""

    size: int
    sha256: str
    retries: int
    resumed: tuple[int, ...]
    answer: dict[str, Any]


@contextlib.contextmanager
def wire_errors(what: str) -> Iterator[None]:
    """httpx request failures (cut connections, timeouts, corrupt encodings) as
    retryable :class:`TransferError`\\ s."""
    try:
        yield
    except httpx.RequestError as exc:
        raise TransferError(
            f"{what}: {type(exc).__name__}: {exc}", code="connection_error", retryable=True
        ) from exc


@contextlib.contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Fail with a ``timeout`` :class:`TransferError` after ``seconds``."""
    if seconds is None:
        yield
        return
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise TransferError(f"{what}: not done after {seconds:g} s", code="timeout") from None


def sha256_file(path: Path, chunk: int = 4 * MIB) -> str:
    """The sha256 of a file, read ``chunk`` bytes at a time (run it in a thread)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            digest.update(data)
    return digest.hexdigest()


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+)", re.IGNORECASE)


def content_range(response: httpx.Response) -> tuple[int | None, int | None, int]:
    """``(first, last, total)`` of the response's ``Content-Range`` (first/last None
    for ``bytes */total``)."""
    value = response.headers.get("content-range", "")
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise TransferError(
            f"unparseable Content-Range {value!r}",
            code="invalid_range",
            status=response.status_code,
        )
    first, last, total = match.groups()
    return (int(first) if first else None, int(last) if last else None, int(total))


def content_length(response: httpx.Response) -> int | None:
    """The body's length when the response declares it for the bytes as sent."""
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def encoded(response: httpx.Response) -> bool:
    """Whether the body is compressed on the wire (``Content-Encoding``)."""
    value: str = response.headers.get("content-encoding", "identity")
    return value.strip().lower() != "identity"
