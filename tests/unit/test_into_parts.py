"""Reading a file straight into an S3 writer's lent parts: memory stays at the writer's
bound whatever the file's size, and every byte handed over is hashed once, in order."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from streamer._concurrency import cleanup
from streamer._engine.intoparts import copy_into_parts
from streamer._errors import StorageError
from streamer._pipeline import Progress
from streamer._storage import LocalStorage
from streamer._storage.base import Conflict
from streamer._storage.s3writer import S3Writer

PART = 64 * 1024
IN_FLIGHT = 3


class FakeClient:
    """Just enough of an S3 client for multipart writes: parts are kept, slowly, and the
    buffers alive (lent or uploading) are tracked."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.parts: dict[int, bytes] = {}
        self.uploading: set[int] = set()
        self.buffers: set[int] = set()  # every buffer a part was sent from
        self.most = 0  # the most buffers uploading at once

    async def create_multipart_upload(self, bucket: str, key: str, **_: Any) -> str:
        return "upload-1"

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: memoryview,
        *,
        sha256: str | None = None,
    ) -> str:
        self.uploading.add(id(body.obj))
        self.buffers.add(id(body.obj))
        self.most = max(self.most, len(self.uploading))
        await trio.sleep(random.random() / 500)
        self.parts[number] = bytes(body)
        self.uploading.discard(id(body.obj))
        return f"etag-{number}"

    async def complete_multipart_upload(
        self, bucket: str, key: str, upload_id: str, etags: list[str], **_: Any
    ) -> str:
        assert etags == [f"etag-{n}" for n in sorted(self.parts)]
        self.completed = True
        return "etag"

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.aborted = True

    completed = aborted = False


def _writer(client: FakeClient, sha256: str) -> S3Writer:
    settings = SimpleNamespace(  # S3Settings refuses parts this small
        upload_part_size=lambda size: PART,
        upload_parts_in_flight=lambda part_size: IN_FLIGHT,
        max_parts=10_000,
    )
    storage = SimpleNamespace(client=client, bucket="b", settings=settings)
    return S3Writer(cast(Any, storage), "big.bin", Conflict.OVERWRITE, "t", sha256=sha256)


class Lending:
    """Wraps a writer's lending to count the buffers lent and not yet uploaded."""

    def __init__(self, writer: S3Writer, client: FakeClient) -> None:
        self._writer = writer
        self._client = client
        self.lent: int | None = None
        self.most = 0

    async def lend_part(self) -> memoryview:
        part = await self._writer.lend_part()
        self.lent = id(part.obj)
        alive = self._client.uploading | {self.lent}
        self.most = max(self.most, len(alive))
        return part

    def part_filled(self, count: int) -> None:
        self._writer.part_filled(count)


@pytest.mark.parametrize("size", [20 * PART, 20 * PART + 5], ids=["whole-parts", "ragged"])
async def test_buffers_lent_never_exceed_the_parts_in_flight(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "big.bin").write_bytes(data)
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        client = FakeClient(nursery)
        writer = _writer(client, hashlib.sha256(data).hexdigest())
        lending = Lending(writer, client)
        try:
            digest = await copy_into_parts(
                LocalStorage("l", tmp_path), "big.bin", size, lending, Progress(seen.append)
            )
            assert await writer.commit(sha256=digest, mtime_ns=None) == "big.bin"
        finally:
            await cleanup(writer.abort)
    assert client.completed and not client.aborted
    assert digest == hashlib.sha256(data).hexdigest()
    assert b"".join(client.parts[n] for n in sorted(client.parts)) == data
    assert len(client.parts) == -(-size // PART)
    assert lending.most == IN_FLIGHT and client.most <= IN_FLIGHT  # parallel, bounded
    assert len(client.buffers) <= IN_FLIGHT  # recycled: no new buffer per part
    assert seen == sorted(seen) and seen[-1] == size


async def test_a_file_that_grew_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(4 * PART + 1))
    async with trio.open_nursery() as nursery:
        client = FakeClient(nursery)
        writer = _writer(client, "0" * 64)
        try:
            with pytest.raises(StorageError) as caught:
                await copy_into_parts(
                    LocalStorage("l", tmp_path), "big.bin", 4 * PART, writer, Progress(print)
                )
        finally:
            await cleanup(writer.abort)
    assert caught.value.code == "SourceChanged"
    assert client.aborted and not client.completed
