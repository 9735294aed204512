"""S3Storage through the fault proxy: throttling, dropped connections, missing features."""

from __future__ import annotations

from typing import Any

import pytest

from streamer._storage.base import Conflict
from streamer._storage.s3 import S3Storage
from streamer._storage.s3errors import S3Error
from streamer._storage.s3settings import S3Settings
from tests.support.faultproxy import RequestHead, s3_error_body

from .conftest import PART, Proxied
from .helpers import download, keys, randbytes, sha, upload, uploads


def range_start(request: RequestHead) -> int:
    return int(request.headers["range"].removeprefix("bytes=").partition("-")[0])


def is_get(request: RequestHead) -> bool:
    return request.method == "GET" and "list-type" not in request.target


async def test_slow_down_twice_then_success(proxied: Proxied) -> None:
    proxied.proxy.fail_next(2)  # 503 SlowDown
    assert await upload(proxied.storage, "a.txt", b"hello") == "a.txt"
    assert proxied.client.retries == 2
    assert (proxied.proxy.failed, proxied.proxy.forwarded) == (2, 1)

    proxied.proxy.fail_next(1, status=500, body=s3_error_body("InternalError", "oops"))
    assert await download(proxied.storage, "a.txt") == b"hello"
    assert proxied.client.retries == 3


async def test_retries_give_up_after_max_retries(proxied: Proxied, settings: S3Settings) -> None:
    proxied.proxy.fail_next(100)
    with pytest.raises(S3Error) as caught:
        await proxied.storage.walk("")
    assert (caught.value.code, caught.value.status) == ("SlowDown", 503)
    assert proxied.client.retries == settings.max_retries
    assert proxied.proxy.failed == settings.max_retries + 1


async def test_client_errors_are_not_retried(proxied: Proxied) -> None:
    proxied.proxy.fail_next(1, status=403, body=s3_error_body("AccessDenied", "Access Denied"))
    with pytest.raises(S3Error) as caught:
        await proxied.storage.walk("")
    assert (caught.value.code, caught.value.message) == ("AccessDenied", "Access Denied")
    assert proxied.client.retries == 0


@pytest.mark.parametrize("size", [300_000, 3 * PART + 123], ids=["one-get", "parallel-parts"])
async def test_dropped_get_resumes_where_it_broke(
    proxied: Proxied, storage: S3Storage, size: int
) -> None:
    data = randbytes(size)
    await upload(storage, "obj.bin", data)  # directly, not through the proxy
    proxied.proxy.drop_after(100_000, times=2, when=is_get)

    assert sha(await download(proxied.storage, "obj.bin")) == sha(data)

    assert proxied.proxy.dropped == 2
    assert proxied.client.retries == 2
    gets = [r for r in proxied.proxy.log if is_get(r)]
    resumed = [r for r in gets if range_start(r) % PART != 0]
    assert len(resumed) == 2
    assert all(r.headers.get("if-match") for r in resumed)  # pinned to the version being read


async def test_object_replaced_before_a_resume_raises_source_changed(
    proxied: Proxied, storage: S3Storage, admin: Any, bucket: str
) -> None:
    await upload(storage, "obj.bin", randbytes(300_000))

    def replace_before_resume(request: RequestHead) -> bool:
        if "if-match" in request.headers:  # the resumed GET, about to be forwarded
            admin.put_object(Bucket=bucket, Key="obj.bin", Body=b"new")
        return False  # never fail it

    proxied.proxy.fail_next(1, when=replace_before_resume)
    proxied.proxy.drop_after(100_000, when=is_get)
    with pytest.raises(S3Error) as caught:
        await download(proxied.storage, "obj.bin")
    assert caught.value.code == "SourceChanged"


@pytest.mark.parametrize("size", [10, PART + 1], ids=["single-put", "multipart"])
async def test_servers_without_conditional_writes_get_head_then_write(
    proxied: Proxied, admin: Any, bucket: str, size: int
) -> None:
    proxied.proxy.fail_next(
        100,
        status=501,
        body=s3_error_body(
            "NotImplemented", "A header you provided implies unimplemented functionality"
        ),
        when=lambda request: "if-none-match" in request.headers,
    )
    storage = proxied.storage
    data = randbytes(size)
    assert await upload(storage, "f.bin", data, conflict=Conflict.SKIP) == "f.bin"
    assert storage.conditional_writes is False
    assert await upload(storage, "f.bin", randbytes(size, seed=1), conflict=Conflict.SKIP) is None
    assert await upload(storage, "f.bin", data, conflict=Conflict.RENAME) == "f (1).bin"
    assert proxied.proxy.failed == 1  # asked once, then remembered
    assert proxied.client.retries == 0
    assert keys(admin, bucket) == ["f (1).bin", "f.bin"]
    assert uploads(admin, bucket) == []


async def test_failed_part_upload_aborts_everything(
    proxied: Proxied, admin: Any, bucket: str
) -> None:
    proxied.proxy.fail_next(
        1,
        status=400,
        body=s3_error_body("InvalidPart", "One or more of the specified parts could not be found."),
        when=lambda request: request.method == "PUT" and "partNumber=2&" in request.target,
    )
    with pytest.raises(S3Error) as caught:
        await upload(proxied.storage, "big.bin", randbytes(3 * PART))
    assert caught.value.code == "InvalidPart"
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == []
