"""What the S3 client sends and reads back: requests, whole replies, header helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from .s3body import Body

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Request:
    """One S3 request, as every attempt of it is signed and sent."""

    method: str
    bucket: str
    key: str = ""
    query: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Body = b""
    payload_sha256: str = EMPTY_SHA256

    def describe(self) -> str:
        return f"{self.method} s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class Reply:
    """A response read whole (its body capped, see :meth:`S3Client._call`)."""

    status: int
    headers: Mapping[str, str]  # names lower-case
    body: bytes


def meta_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata as ``x-amz-meta-*`` request headers."""
    return {f"x-amz-meta-{name}": value for name, value in metadata.items()}


def copy_source(bucket: str, key: str) -> str:
    """The ``x-amz-copy-source`` header naming ``bucket/key``."""
    return quote(f"{bucket}/{key}", safe="/~")
