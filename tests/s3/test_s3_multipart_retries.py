"""The two multipart requests that are not idempotent, through the fault proxy:
a CreateMultipartUpload whose answer is lost (or cancelled) leaves no upload
behind, and a CompleteMultipartUpload retried after its answer was lost
finds its object published."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from streamer._concurrency import cleanup
from streamer._engine import FileStatus, JobStatus
from streamer._storage import LocalStorage
from streamer._storage.base import Conflict
from streamer._storage.registry import Locations
from streamer._storage.s3errors import S3Error
from tests.support.engine import run_job
from tests.support.faultproxy import Match, RequestHead, s3_error_body

from .conftest import PART, Proxied
from .helpers import download, keys, randbytes, sha, upload, uploads


def is_create(request: RequestHead) -> bool:
    return request.method == "POST" and "?uploads" in request.target


def is_complete(request: RequestHead) -> bool:
    return request.method == "POST" and "uploadId=" in request.target


@pytest.mark.parametrize("announce", [False, True], ids=["staged", "direct"])
async def test_a_create_whose_answer_is_lost_leaves_no_orphan_upload(
    proxied: Proxied, admin: Any, bucket: str, announce: bool
) -> None:
    proxied.proxy.drop_after(0, when=is_create)  # created on the server, answer lost
    data = randbytes(3 * PART + 5)
    assert await upload(proxied.storage, "big.bin", data, announce=announce) == "big.bin"
    assert proxied.proxy.dropped == 1
    assert proxied.client.orphans_aborted == 1
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == ["big.bin"]
    head = admin.head_object(Bucket=bucket, Key="big.bin")
    assert head["Metadata"]["sha256"] == sha(data)
    assert await download(proxied.storage, "big.bin") == data


def nth_complete(n: int) -> Match:
    """Matches the ``n``-th CompleteMultipartUpload request from now (1-based)."""
    seen = 0

    def match(request: RequestHead) -> bool:
        nonlocal seen
        seen += is_complete(request)
        return is_complete(request) and seen == n

    return match


NO_SUCH_UPLOAD = s3_error_body("NoSuchUpload", "The specified upload does not exist.")


@pytest.mark.parametrize("announce", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("retry_answer", ["server's", "NoSuchUpload"])
async def test_a_complete_retried_after_its_answer_was_lost_finds_its_object(
    proxied: Proxied, admin: Any, bucket: str, announce: bool, retry_answer: str
) -> None:
    proxied.proxy.drop_after(0, when=is_complete)  # completed on the server, answer lost
    if retry_answer == "NoSuchUpload":  # what S3 may answer once the upload is completed
        proxied.proxy.fail_next(status=404, body=NO_SUCH_UPLOAD, when=nth_complete(2))
    data = randbytes(2 * PART + 5)
    assert await upload(proxied.storage, "big.bin", data, announce=announce) == "big.bin"
    assert proxied.proxy.dropped == 1 and proxied.client.retries >= 1
    assert proxied.proxy.failed == (retry_answer == "NoSuchUpload")
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == ["big.bin"]
    assert admin.head_object(Bucket=bucket, Key="big.bin")["Metadata"]["sha256"] == sha(data)
    assert await download(proxied.storage, "big.bin") == data


async def test_a_retried_complete_whose_upload_is_gone_without_its_object_fails(
    proxied: Proxied, admin: Any, bucket: str
) -> None:
    admin.put_object(Bucket=bucket, Key="big.bin", Body=b"someone else's")
    proxied.proxy.fail_next(when=is_complete)  # 503, never forwarded
    proxied.proxy.fail_next(status=404, body=NO_SUCH_UPLOAD, when=is_complete)  # the retry
    with pytest.raises(S3Error) as caught:
        await upload(proxied.storage, "big.bin", randbytes(2 * PART + 5), announce=True)
    assert caught.value.code == "NoSuchUpload"
    assert uploads(admin, bucket) == []
    assert admin.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == b"someone else's"


async def test_a_cancel_during_create_leaves_no_upload(
    proxied: Proxied, admin: Any, bucket: str
) -> None:
    release = threading.Event()
    proxied.proxy.stall_after(0, release=release, when=is_create)  # created, answer held
    writer = await proxied.storage.open_writer(
        "big.bin", conflict=Conflict.OVERWRITE, tag=uuid.uuid4().hex, sha256="0" * 64
    )
    try:
        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    await writer.write(randbytes(PART + 1))  # ships part 1: creates the upload

                nursery.start_soon(write)
                while proxied.proxy.stalled == 0:  # noqa: ASYNC110 (a counter, no event)
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
    finally:
        release.set()
        await cleanup(writer.abort)
    assert proxied.client.orphans_aborted == 1
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == []


async def test_an_upload_job_whose_create_answer_is_lost_completes_without_orphans(
    proxied: Proxied, admin: Any, bucket: str, tmp_path: Path
) -> None:
    data = randbytes(3 * PART + 5)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/big.bin").write_bytes(data)
    where = Locations(
        [LocalStorage("local-0", tmp_path / "data")], buckets=lambda _: proxied.storage
    )
    body = {
        "source": {"type": "local", "locationId": "local-0", "path": "/"},
        "destination": {"type": "s3", "locationId": bucket, "path": "up"},
        "items": [{"path": "big.bin", "type": "file"}],
    }
    proxied.proxy.drop_after(0, when=is_create)
    job, store = await run_job(tmp_path, where, body)
    store.close()
    assert job.status is JobStatus.COMPLETED, job.errors
    assert job.files[0].status is FileStatus.COMPLETED and job.files[0].sha256 == sha(data)
    assert proxied.proxy.dropped == 1 and proxied.client.orphans_aborted == 1
    assert uploads(admin, bucket) == []
    assert keys(admin, bucket) == ["up/big.bin"]
    assert admin.get_object(Bucket=bucket, Key="up/big.bin")["Body"].read() == data


def is_upload_listing(request: RequestHead) -> bool:
    query = request.target.partition("?")[2]
    return request.method == "GET" and "uploads" in {p.partition("=")[0] for p in query.split("&")}


async def test_a_listing_answered_no_such_upload_means_none_in_progress(
    proxied: Proxied, admin: Any, bucket: str
) -> None:
    """``rclone serve s3`` answers ListMultipartUploads with NoSuchUpload when none are
    in progress; a direct multipart upload (which lists before it creates) still lands."""
    proxied.proxy.fail_next(100, status=404, body=NO_SUCH_UPLOAD, when=is_upload_listing)
    data = randbytes(2 * PART + 5)
    assert await upload(proxied.storage, "big.bin", data, announce=True) == "big.bin"
    assert proxied.proxy.failed >= 1 and any(is_upload_listing(r) for r in proxied.proxy.log)
    assert await proxied.client.list_multipart_uploads(bucket, "") == []
    assert uploads(admin, bucket) == []
    assert admin.head_object(Bucket=bucket, Key="big.bin")["Metadata"]["sha256"] == sha(data)
