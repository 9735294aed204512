"""S3 locations from config: settings for the client and the bucket → storage factory."""

from __future__ import annotations

import re
from collections.abc import Callable

from .._config import S3Config
from .._errors import InvalidPath, UnknownLocation
from .base import Storage
from .s3 import S3Storage
from .s3client import S3Client
from .s3settings import MiB, S3Settings

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def settings_from(config: S3Config) -> S3Settings:
    """Client settings for the ``s3`` config section (credentials may come from the env)."""
    return S3Settings(
        endpoint_url=config.endpoint_url,
        region=config.region,
        access_key_id=config.access_key_id or None,
        secret_access_key=config.secret_access_key or None,
        addressing_style=config.addressing_style,
        part_size=config.part_size_mib * MiB,
        parts_in_flight=config.parts_in_flight,
        max_retries=config.max_retries,
        sign_payload=None if config.sign_payload == "auto" else config.sign_payload,
        ca_bundle=config.ca_bundle or None,
    )


def bucket_storages(client: S3Client, allowed: list[str]) -> Callable[[str], Storage]:
    """A factory of bucket storages; names outside ``allowed`` (when set) are refused."""

    def storage_for(bucket: str) -> Storage:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise InvalidPath(f"{bucket!r} is not a valid S3 bucket name", code="invalid_bucket")
        if allowed and bucket not in allowed:
            raise UnknownLocation(
                f"bucket {bucket!r} is not served by this node (s3.buckets: {', '.join(allowed)})"
            )
        return S3Storage(bucket, client)

    return storage_for
