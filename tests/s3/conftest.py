"""S3 client and storage fixtures over the session's moto server (tests/support/moto.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from streamer._storage.s3 import S3Storage
from streamer._storage.s3client import S3Client
from streamer._storage.s3settings import MiB, S3Settings
from tests.support.faultproxy import FaultProxy, fault_proxy
from tests.support.moto import REGION, MotoServer

__all__ = ["PART", "MotoServer", "Proxied"]
PART = 5 * MiB  # S3's minimum part size: the smallest multipart objects


@dataclass
class Proxied:
    """A client and storage whose requests go through a fault proxy to moto."""

    proxy: FaultProxy
    client: S3Client
    storage: S3Storage


@pytest.fixture
async def proxied(
    moto_server: MotoServer, settings: S3Settings, bucket: str
) -> AsyncIterator[Proxied]:
    async with fault_proxy(moto_server.port) as proxy:
        through = replace(settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
        async with S3Client(through) as client:
            yield Proxied(proxy, client, S3Storage(bucket, client))


@pytest.fixture
def settings(moto_server: MotoServer) -> S3Settings:
    return S3Settings(
        endpoint_url=moto_server.endpoint,
        region=REGION,
        access_key_id=moto_server.access_key_id,
        secret_access_key=moto_server.secret_access_key,
        part_size=PART,
        copy_part_size=PART,
        parts_in_flight=2,
        backoff_base=0.005,
        backoff_max=0.05,
    )


@pytest.fixture
async def client(settings: S3Settings) -> AsyncIterator[S3Client]:
    async with S3Client(settings) as client:
        yield client


@pytest.fixture
def storage(bucket: str, client: S3Client) -> S3Storage:
    return S3Storage(bucket, client)
