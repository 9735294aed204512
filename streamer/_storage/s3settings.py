"""Configuration of one S3 endpoint, and S3's size limits."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from .._errors import ConfigError

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_COPY_OBJECT = 5 * GiB  # S3's limit for a single CopyObject


@dataclass(frozen=True, slots=True)
class Credentials:
    """The keys S3 requests are signed with (:mod:`.s3signer`); streamer resolves
    them itself (:meth:`S3Settings.credentials`), from its config or the standard
    AWS environment variables."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach one S3 endpoint and how hard to push it.

    ``endpoint_url`` empty means AWS (``https://s3.{region}.amazonaws.com``).
    Credentials left ``None`` come from ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` when a client is made.
    ``part_size`` is the size of multipart parts and of ranged GETs; a read or
    a write holds at most ``parts_in_flight`` of them in memory, and moves that
    many in parallel. ``copy_part_size`` is the part size of server-side
    multipart copies (UploadPartCopy), used for objects over ``copy_object_max``
    bytes (at most S3's 5 GiB CopyObject limit); smaller ones take one CopyObject.
    ``sign_payload`` off sends object and part bodies as ``UNSIGNED-PAYLOAD``
    (see :mod:`streamer._storage.s3client`); ``None`` (the default) signs them over
    ``http`` only, as botocore does (:attr:`signs_payload`). ``ca_bundle`` names a PEM file of the
    certificate authorities an ``https`` endpoint must chain to (a private CA, a
    self-signed MinIO); ``None`` takes ``AWS_CA_BUNDLE`` from the environment, as the
    AWS CLI does, else the usual public ones.
    Retries back off from ``backoff_base`` seconds, doubling up to ``backoff_max``.
    ``max_parts`` is S3's limit of parts per multipart upload (10,000; lower in tests).
    """

    endpoint_url: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: Literal["path", "virtual"] = "path"
    part_size: int = 16 * MiB
    parts_in_flight: int = 4
    max_retries: int = 5
    backoff_base: float = 0.25
    backoff_max: float = 20.0
    copy_part_size: int = 512 * MiB
    copy_object_max: int = MAX_COPY_OBJECT
    list_page_size: int = 1000
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_connections: int = 64
    sign_payload: bool | None = None
    ca_bundle: str | None = None
    max_parts: int = MAX_PARTS

    def __post_init__(self) -> None:
        for name in ("part_size", "copy_part_size"):
            value = getattr(self, name)
            if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
                raise ConfigError(f"s3 {name} must be between 5 MiB and 5 GiB, not {value}")
        if self.addressing_style not in ("path", "virtual"):
            raise ConfigError(
                f"s3 addressing_style must be 'path' or 'virtual', not {self.addressing_style!r}"
            )
        for name in ("parts_in_flight", "list_page_size", "max_connections", "max_parts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"s3 {name} must be at least 1")
        if not 0 <= self.copy_object_max <= MAX_COPY_OBJECT:
            raise ConfigError(
                f"s3 copy_object_max must be between 0 and 5 GiB, not {self.copy_object_max}"
            )
        if self.max_retries < 0:
            raise ConfigError("s3 max_retries must not be negative")

    def upload_part_size(self, size: int | None) -> int:
        """The part size of a multipart upload of ``size`` bytes (``None``: not known
        yet): ``part_size``, or, for an object that would need more than
        ``max_parts`` of them (over 156 GiB at 16 MiB), the smallest whole number of
        MiB that fits it in ``max_parts``, as the AWS CLI and rclone raise theirs."""
        if size is None or size <= self.part_size * self.max_parts:
            return self.part_size
        return min(MAX_PART_SIZE, -(-size // (self.max_parts * MiB)) * MiB)

    def upload_parts_in_flight(self, part_size: int) -> int:
        """How many parts of ``part_size`` bytes an upload holds at once:
        ``parts_in_flight``, fewer for raised parts, so that its memory stays within
        ``parts_in_flight * self.part_size``, but never fewer than two (or the
        configured one): with one, a part could not be read while the last uploads."""
        fitting = self.parts_in_flight * self.part_size // part_size
        return max(min(2, self.parts_in_flight), fitting)

    @property
    def signs_payload(self) -> bool:
        """Whether upload bodies are signed by their SHA-256: ``sign_payload``, else
        only over ``http`` (over https TLS's AEAD already guards every byte)."""
        if self.sign_payload is not None:
            return self.sign_payload
        return urlsplit(self.endpoint).scheme != "https"

    @property
    def endpoint(self) -> str:
        """The endpoint URL without a trailing slash."""
        return self.endpoint_url.rstrip("/") or f"https://s3.{self.region}.amazonaws.com"

    def tls_context(self) -> ssl.SSLContext | None:
        """The context an ``https`` endpoint's certificate is checked with when a CA
        bundle is named (setting, else ``AWS_CA_BUNDLE``); ``None`` otherwise, and for
        ``http``: the pool's own default (the public CAs, loaded at its first TLS
        connection). ConfigError if the bundle named cannot be loaded."""
        bundle = self.ca_bundle or os.environ.get("AWS_CA_BUNDLE")
        if not bundle or urlsplit(self.endpoint).scheme != "https":
            return None
        try:
            return ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"s3 ca_bundle {bundle!r} cannot be loaded: {exc}") from None

    def credentials(self) -> Credentials:
        """The configured keys, else the ``AWS_*`` environment variables; ConfigError if neither."""
        if self.access_key_id and self.secret_access_key:
            return Credentials(self.access_key_id, self.secret_access_key, self.session_token)
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            raise ConfigError(
                "s3 credentials missing: set access_key_id and secret_access_key "
                "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
