"""S3 over https end to end: the session's moto behind a TLS terminator, so every
request streamer's client makes (HEAD, PUT, the multipart calls, ranged GETs in
place, listings, errors) goes through its TLS stream, verified by ``ca_bundle``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamer._errors import SourceNotFound
from streamer._storage.local import LocalStorage
from streamer._storage.s3 import S3Storage
from streamer._storage.s3client import S3Client
from streamer._storage.s3errors import S3Error
from streamer._storage.s3settings import S3Settings
from tests.support.certs import self_signed
from tests.support.moto import MotoServer
from tests.support.tlsproxy import tls_terminator

from .conftest import PART
from .helpers import download, keys, randbytes, sha, transfer


@pytest.fixture
async def tls_storage(
    moto_server: MotoServer, settings: S3Settings, bucket: str, tmp_path: Path
) -> AsyncIterator[S3Storage]:
    cert, key = self_signed(tmp_path)
    async with tls_terminator(moto_server.port, cert, key) as port:
        over_tls = replace(
            settings,
            endpoint_url=f"https://127.0.0.1:{port}",
            ca_bundle=str(cert),
            list_page_size=5,  # a listing of several pages
        )
        async with S3Client(over_tls) as client:
            yield S3Storage(bucket, client)


async def test_multipart_up_and_ranged_download_in_place(
    tls_storage: S3Storage, admin: Any, bucket: str, tmp_path: Path
) -> None:
    size = 3 * PART + 7  # several parts both ways, the last one ragged
    data = randbytes(size, seed=7)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.bin").write_bytes(data)
    local = LocalStorage("local", tmp_path)
    assert await transfer(local, "in/big.bin", tls_storage, "big.bin") == ("big.bin", sha(data))
    assert admin.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == size
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert await transfer(tls_storage, "big.bin", local, "out/big.bin") == (
        "out/big.bin",
        sha(data),
    )
    assert (tmp_path / "out" / "big.bin").read_bytes() == data


async def test_small_objects_listing_and_errors(
    tls_storage: S3Storage, admin: Any, bucket: str, tmp_path: Path
) -> None:
    bodies = {f"tree/f{i:02}.bin": os.urandom(100 * i) for i in range(12)}  # 0 bytes too
    for name, body in bodies.items():
        admin.put_object(Bucket=bucket, Key=name, Body=body)
    assert [entry.path for entry in await tls_storage.walk("tree")] == sorted(bodies)
    local = LocalStorage("local", tmp_path)
    for name, body in bodies.items():
        assert await transfer(tls_storage, name, local, f"out/{name}") == (
            f"out/{name}",
            sha(body),
        )
        assert (tmp_path / "out" / name).read_bytes() == body
    assert await tls_storage.stat("tree/missing.bin") is None  # a HEAD's 404
    with pytest.raises(S3Error) as caught:  # a GET's error body, parsed
        await download(tls_storage, "tree/missing.bin")
    assert caught.value.code == "NoSuchKey" and isinstance(caught.value, SourceNotFound)
    assert sorted(keys(admin, bucket)) == sorted(bodies)
