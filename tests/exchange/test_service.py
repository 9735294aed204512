"""The exchange service in-process: staging at rest, ranges, resumable uploads, expiry.

Time is trio's MockClock: the service's wall clock is ``BASE + trio.current_time()``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from streamer._errors import ChecksumMismatch, Conflict, Unauthorized
from streamer._exchange.models import TransferRequest, TransferStatus
from streamer._exchange.service import Exchange, Gone, IncompleteUpload
from streamer._exchange.tokens import TokenSigner
from streamer._pipeline.aead import DecryptionError
from streamer._storage import LocalStorage
from streamer._storage.registry import Locations

BASE = 1_700_000_000.0
CHUNK = 4096


def _clock() -> float:
    return BASE + trio.current_time()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def exchange(tmp_path: Path, data_dir: Path) -> Exchange:
    ex = Exchange(
        str(tmp_path / "state" / "exchange"),
        master_key=os.urandom(32),
        signer=TokenSigner(os.urandom(32), clock=_clock),
        locations=Locations([LocalStorage("local-0", data_dir)]),
        default_ttl=60,
        max_ttl=600,
        sweep_interval=5,
        chunk_size=CHUNK,
        clock=_clock,
    )
    return ex


def _request(direction: str, path: str, **extra: object) -> TransferRequest:
    raw = {"worker_id": "w1", "direction": direction, "location_id": "local-0", "path": path}
    return msgspec.convert({**raw, **extra}, TransferRequest)


def _staged(exchange: Exchange, transfer_id: str) -> bool:
    return os.path.exists(exchange.staging_path(transfer_id))


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _flip_byte(path: str, at: int) -> None:
    raw = bytearray(Path(path).read_bytes())
    raw[at] ^= 1
    Path(path).write_bytes(bytes(raw))


async def _collect(source: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in source])


async def _pieces(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _cut(data: bytes, after: int) -> AsyncIterator[bytes]:
    yield data[:after]
    raise OSError("connection cut")


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 17])
async def test_stage_encrypts_at_rest_and_downloads_identical(
    exchange: Exchange, data_dir: Path, size: int
) -> None:
    data = os.urandom(size)
    (data_dir / "in.bin").write_bytes(data)
    transfer, token = await exchange.create(_request("upload", "in.bin"))
    assert transfer.sha256 == hashlib.sha256(data).hexdigest()
    assert transfer.file_size == size and transfer.status is TransferStatus.PENDING
    exchange.signer.verify(token, transfer.id, "download")
    staged = _read(exchange.staging_path(transfer.id))
    assert staged.startswith(b"STRM")
    for i in range(0, max(0, size - 32), 512):  # no 32-byte run of plaintext on disk
        assert data[i : i + 32] not in staged
    assert await _collect(exchange.download(transfer, 0, size)) == data
    assert exchange.get(transfer.id).status is TransferStatus.COMPLETED
    if size > 10:
        start, end = size // 3, size - 5
        got = await _collect(exchange.download(exchange.get(transfer.id), start, end))
        assert got == data[start:end]
        tail = await _collect(exchange.download(exchange.get(transfer.id), size - 7, size))
        assert tail == data[-7:]


async def test_a_declared_checksum_that_does_not_match_stages_nothing(
    exchange: Exchange, data_dir: Path
) -> None:
    (data_dir / "in.bin").write_bytes(b"abc" * 5000)
    with pytest.raises(ChecksumMismatch):
        await exchange.create(_request("upload", "in.bin", checksum="0" * 64))
    assert [p for p in os.listdir(exchange.directory) if ".enc" in p] == []


async def test_a_tampered_staging_file_fails_authentication(
    exchange: Exchange, data_dir: Path
) -> None:
    data = os.urandom(3 * CHUNK)
    (data_dir / "in.bin").write_bytes(data)
    transfer, _ = await exchange.create(_request("upload", "in.bin"))
    _flip_byte(exchange.staging_path(transfer.id), -CHUNK)
    with pytest.raises(DecryptionError):
        await _collect(exchange.download(transfer, 0, len(data)))


async def test_upload_lands_atomically_only_with_a_matching_checksum(
    exchange: Exchange, data_dir: Path
) -> None:
    data = os.urandom(5 * CHUNK + 3)
    good = hashlib.sha256(data).hexdigest()
    transfer, _ = await exchange.create(_request("download", "out/result.bin"))
    done = await exchange.receive(
        transfer, _pieces(data), offset=None, total=len(data), checksum=good
    )
    assert done.status is TransferStatus.COMPLETED and done.sha256 == good
    assert (data_dir / "out/result.bin").read_bytes() == data
    assert not _staged(exchange, transfer.id)

    bad, _ = await exchange.create(_request("download", "out/bad.bin", checksum="1" * 64))
    with pytest.raises(ChecksumMismatch):
        await exchange.receive(bad, _pieces(data), offset=None, total=None, checksum=None)
    assert exchange.get(bad.id).status is TransferStatus.FAILED
    assert sorted(os.listdir(data_dir / "out")) == ["result.bin"]
    assert not _staged(exchange, bad.id)


async def test_bytes_beyond_the_declared_size_are_refused_and_nothing_lands(
    exchange: Exchange, data_dir: Path
) -> None:
    data = os.urandom(2 * CHUNK)
    transfer, _ = await exchange.create(_request("download", "long.bin", file_size=len(data) - 1))
    with pytest.raises(IncompleteUpload) as refused:
        await exchange.receive(transfer, _pieces(data), offset=None, total=None, checksum=None)
    assert refused.value.code == "upload_too_long"
    assert exchange.get(transfer.id).status is not TransferStatus.COMPLETED
    assert not (data_dir / "long.bin").exists()
    assert not list(data_dir.rglob("*.part"))  # noqa: ASYNC240


async def test_a_cut_upload_resumes_from_its_last_whole_chunk(
    exchange: Exchange, data_dir: Path
) -> None:
    data = os.urandom(6 * CHUNK + 100)
    transfer, _ = await exchange.create(_request("download", "r.bin", file_size=len(data)))
    with pytest.raises(OSError, match="cut"):
        await exchange.receive(
            transfer, _cut(data, 2 * CHUNK + 50), offset=None, total=None, checksum=None
        )
    transfer = exchange.get(transfer.id)
    assert await exchange.received(transfer) == 2 * CHUNK == transfer.bytes_transferred
    assert not list(data_dir.rglob("*.part"))  # noqa: ASYNC240 - no plaintext left beside the destination
    assert transfer.status is TransferStatus.IN_PROGRESS
    with pytest.raises(Conflict, match="Upload-Offset"):
        await exchange.receive(transfer, _pieces(data), offset=0, total=None, checksum=None)
    done = await exchange.receive(
        transfer,
        _pieces(data[2 * CHUNK :]),
        offset=2 * CHUNK,
        total=None,
        checksum=hashlib.sha256(data).hexdigest(),
    )
    assert done.status is TransferStatus.COMPLETED
    assert (data_dir / "r.bin").read_bytes() == data


async def test_expired_transfers_are_swept(
    exchange: Exchange, data_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange.max_ttl = 10**6
    (data_dir / "in.bin").write_bytes(b"x" * 10_000)
    short, token = await exchange.create(_request("upload", "in.bin", expires_in=8))
    long, _ = await exchange.create(_request("upload", "in.bin", expires_in=10**6))
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        await trio.sleep(7)
        assert (await exchange.live(short.id)).status is TransferStatus.PENDING
        await trio.sleep(4)  # past expiry: the sweep due at t=10 takes it
        for _ in range(500):  # (sweeps hop to threads, which let the mock clock run on)
            if exchange.get(short.id).status is TransferStatus.EXPIRED:
                break
            await trio.to_thread.run_sync(time.sleep, 0.01)
        assert exchange.get(short.id).status is TransferStatus.EXPIRED
        assert exchange.get(long.id).status is TransferStatus.PENDING
        nursery.cancel_scope.cancel()
    assert not _staged(exchange, short.id)
    assert _staged(exchange, long.id)
    with pytest.raises(Gone):
        await exchange.live(short.id)
    with pytest.raises(Unauthorized, match="expired"):
        exchange.signer.verify(token, short.id, "download")


async def test_expiry_is_enforced_between_sweeps(
    exchange: Exchange, data_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange.sweep_interval = 10_000
    (data_dir / "in.bin").write_bytes(b"x" * 100)
    transfer, _ = await exchange.create(_request("upload", "in.bin", expires_in=3))
    await trio.sleep(3)
    with pytest.raises(Gone):
        await exchange.live(transfer.id)
    assert exchange.get(transfer.id).status is TransferStatus.EXPIRED
    assert not _staged(exchange, transfer.id)


async def test_delete_removes_staging_and_record(exchange: Exchange, data_dir: Path) -> None:
    (data_dir / "in.bin").write_bytes(b"x" * 100)
    transfer, _ = await exchange.create(_request("upload", "in.bin"))
    await exchange.delete(transfer.id)
    assert not os.listdir(exchange.directory) or not any(
        ".enc" in p for p in os.listdir(exchange.directory)
    )
    assert exchange.store.get(transfer.id) is None


async def test_an_upload_in_flight_is_neither_deleted_nor_swept(
    exchange: Exchange, data_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = os.urandom(3 * CHUNK)
    transfer, _ = await exchange.create(_request("download", "busy.bin", expires_in=5))
    release = trio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield data[:CHUNK]
        await release.wait()
        yield data[CHUNK:]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: exchange.receive(transfer, slow_body(), offset=None, total=None, checksum=None)
        )
        await trio.sleep(10)  # past expiry, mid-upload
        with pytest.raises(Conflict, match="receiving"):
            await exchange.delete(transfer.id)
        with pytest.raises(Conflict, match="another request"):
            await exchange.receive(transfer, _pieces(data), offset=None, total=None, checksum=None)
        assert await exchange.sweep() == 0
        release.set()
    assert exchange.get(transfer.id).status is TransferStatus.COMPLETED
    assert (data_dir / "busy.bin").read_bytes() == data
    assert await exchange.sweep() == 0  # a completed upload has no staging: it stays completed
    assert exchange.get(transfer.id).status is TransferStatus.COMPLETED
