"""Worker jobs in-process: claim order and atomicity, leases, retries, job tokens,
resumable result uploads.

Time is trio's MockClock: the service's wall clock is ``BASE + trio.current_time()``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
import trio
import trio.testing

from streamer._errors import Conflict, Unauthorized
from streamer._storage import LocalStorage
from streamer._storage.local import LocalWriter
from streamer._storage.registry import Locations
from streamer._worker.models import CreateJob, JobStatus
from streamer._worker.service import (
    ChecksumMismatch,
    LeaseLost,
    NotProcessing,
    UploadTooLong,
    WorkerJobs,
)
from streamer._worker.store import WorkerJobStore
from streamer._worker.tokens import JobTokenSigner

BASE = 1_700_000_000.0
KEY = b"k" * 32


def _clock() -> float:
    return BASE + trio.current_time()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    (path / "src.bin").write_bytes(b"source bytes")
    return path


@pytest.fixture
def jobs(tmp_path: Path, data_dir: Path) -> WorkerJobs:
    return WorkerJobs(
        WorkerJobStore(str(tmp_path / "state")),
        Locations([LocalStorage("local-0", data_dir)]),
        JobTokenSigner(KEY, clock=_clock),
        lease_seconds=30,
        max_attempts=2,
        token_ttl=3600,
        sweep_interval=5,
        clock=_clock,
    )


def _request(source: str = "src.bin", output: str = "out.bin") -> CreateJob:
    raw = {
        "source": {"locationId": "local-0", "path": source},
        "output": {"locationId": "local-0", "path": output},
    }
    return msgspec.convert(raw, CreateJob)


class _body:
    """An upload body; a plain iterator, so one left half-read needs no closing."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = list(pieces)

    def __aiter__(self) -> _body:
        return self

    async def __anext__(self) -> bytes:
        if not self._pieces:
            raise StopAsyncIteration
        return self._pieces.pop(0)


async def _claimed(jobs: WorkerJobs, worker: str = "w1") -> tuple[str, str]:
    claimed = await jobs.claim(worker)
    assert claimed is not None
    return claimed[0].id, claimed[1]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _overwrite_start(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"X")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_claims_take_the_oldest_pending_job_first(
    jobs: WorkerJobs, autojump_clock: trio.testing.MockClock
) -> None:
    made = []
    for _ in range(3):
        made.append((await jobs.create(_request())).id)
        await trio.sleep(1)
    got = [(await _claimed(jobs, f"w{i}"))[0] for i in range(3)]
    assert got == made
    assert await jobs.claim("w9") is None
    job = jobs.get(made[0])
    assert job.status is JobStatus.PROCESSING and job.worker_id == "w0" and job.attempts == 1
    assert job.lease_expires_at == pytest.approx(_clock() - 2 + 30)


async def test_concurrent_claims_never_share_a_job(jobs: WorkerJobs, tmp_path: Path) -> None:
    for _ in range(20):
        await jobs.create(_request())
    won: list[str] = []

    async def claimer(name: str) -> None:
        while (claimed := await jobs.claim(name)) is not None:
            won.append(claimed[0].id)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(claimer, f"w{i}")
    assert len(won) == 20 and len(set(won)) == 20


def test_claims_from_threads_on_separate_connections_are_atomic(
    jobs: WorkerJobs, tmp_path: Path
) -> None:
    trio.run(_create_many, jobs, 40)
    won: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        store = WorkerJobStore(str(tmp_path / "state"))  # its own sqlite connection
        try:
            for _ in range(100):  # bounded: there are 40 jobs
                job = store.claim(name, f"{name}-{len(won)}", now=BASE, lease_until=BASE + 30)
                if job is None:
                    return
                with lock:
                    won.append(job.id)
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(won) == 40 and len(set(won)) == 40


async def _create_many(jobs: WorkerJobs, n: int) -> None:
    for _ in range(n):
        await jobs.create(_request())


async def test_expired_lease_returns_the_job_then_fails_it(
    jobs: WorkerJobs, mock_clock: trio.testing.MockClock
) -> None:
    # The sweeper drops staged uploads in a worker thread: jump only once every task
    # has been blocked for a while, so a jump never overtakes a sweep in progress.
    mock_clock.autojump_threshold = 0.05
    job_id = (await jobs.create(_request())).id
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.run)
        await _claimed(jobs, "w1")
        await trio.sleep(29)
        assert jobs.get(job_id).status is JobStatus.PROCESSING
        await trio.sleep(7)  # past the lease, and a sweep (every 5 s) came by
        job = jobs.get(job_id)
        assert job.status is JobStatus.PENDING and job.attempts == 1 and job.worker_id is None
        await _claimed(jobs, "w2")
        await trio.sleep(36)
        job = jobs.get(job_id)
        assert job.status is JobStatus.FAILED and job.attempts == 2
        assert job.error == "lease expired after 2 attempts"
        assert await jobs.claim("w3") is None
        nursery.cancel_scope.cancel()


async def test_heartbeat_renews_the_lease(
    jobs: WorkerJobs, autojump_clock: trio.testing.MockClock
) -> None:
    await jobs.create(_request())
    job_id, token = await _claimed(jobs)
    claims = jobs.signer.verify(token, job_id)
    for _ in range(5):
        await trio.sleep(20)
        jobs.heartbeat(job_id, claims)
        await jobs.sweep()
    assert jobs.get(job_id).status is JobStatus.PROCESSING
    await trio.sleep(31)
    assert await jobs.sweep() == 1
    assert jobs.get(job_id).status is JobStatus.PENDING


async def test_release_does_not_count_and_fail_retries_while_attempts_remain(
    jobs: WorkerJobs,
) -> None:
    await jobs.create(_request())
    job_id, token = await _claimed(jobs)
    released = await jobs.release(job_id, jobs.signer.verify(token, job_id))
    assert released.status is JobStatus.PENDING and released.attempts == 0
    job_id, token = await _claimed(jobs)
    retried = await jobs.fail(job_id, jobs.signer.verify(token, job_id), "flaky", retry=True)
    assert retried.status is JobStatus.PENDING and retried.attempts == 1
    assert retried.error == "flaky"
    job_id, token = await _claimed(jobs)
    final = await jobs.fail(job_id, jobs.signer.verify(token, job_id), "again", retry=True)
    assert final.status is JobStatus.FAILED and final.attempts == 2  # max_attempts spent


async def test_fail_without_retry_fails_at_once(jobs: WorkerJobs) -> None:
    await jobs.create(_request())
    job_id, token = await _claimed(jobs)
    failed = await jobs.fail(job_id, jobs.signer.verify(token, job_id), "bad input", retry=False)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    with pytest.raises(NotProcessing):
        jobs.heartbeat(job_id, None)


async def test_a_stale_claim_is_refused_after_a_reclaim(
    jobs: WorkerJobs, autojump_clock: trio.testing.MockClock
) -> None:
    await jobs.create(_request())
    job_id, old = await _claimed(jobs, "w1")
    await trio.sleep(31)
    _, new = await _claimed(jobs, "w2")  # the claim sweeps the expired lease first
    with pytest.raises(LeaseLost):
        jobs.heartbeat(job_id, jobs.signer.verify(old, job_id))
    with pytest.raises(LeaseLost):
        await jobs.fail(job_id, jobs.signer.verify(old, job_id), "x", retry=False)
    assert jobs.heartbeat(job_id, jobs.signer.verify(new, job_id)).worker_id == "w2"
    # the same worker claiming again (a new attempt) cannot use its older token either
    await jobs.release(job_id, jobs.signer.verify(new, job_id))
    _, newest = await _claimed(jobs, "w2")
    with pytest.raises(LeaseLost):
        jobs.claimed(job_id, jobs.signer.verify(new, job_id))
    jobs.claimed(job_id, jobs.signer.verify(newest, job_id))


def _forge(claims: dict[str, Any], key: bytes = KEY, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


async def test_job_tokens_are_refused_for_another_job_scope_expiry_or_algorithm(
    jobs: WorkerJobs, autojump_clock: trio.testing.MockClock
) -> None:
    await jobs.create(_request())
    job_id, token = await _claimed(jobs)
    signer = jobs.signer
    with pytest.raises(Unauthorized, match="another job"):
        signer.verify(token, "other-job")
    now = int(_clock())
    claims = {
        "sub": job_id,
        "worker_id": "w1",
        "attempt": 1,
        "scope": "worker-job",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }
    assert signer.verify(_forge(claims), job_id).attempt == 1
    with pytest.raises(Unauthorized, match="scope"):
        signer.verify(_forge({**claims, "scope": "download"}), job_id)
    with pytest.raises(Unauthorized, match="signature"):
        signer.verify(_forge(claims, key=b"o" * 32), job_id)
    with pytest.raises(Unauthorized, match="HS512"):
        signer.verify(_forge(claims, key=KEY * 2, alg="HS512"), job_id)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    with pytest.raises(Unauthorized, match="'none'"):
        signer.verify(f"{header.decode()}.{payload.decode()}.", job_id)
    with pytest.raises(Unauthorized, match="malformed"):
        signer.verify(_forge({**claims, "attempt": "1"}), job_id)
    with pytest.raises(Unauthorized):
        signer.verify(None, job_id)
    await trio.sleep(3601)
    with pytest.raises(Unauthorized) as expired:
        signer.verify(token, job_id)
    assert expired.value.code == "token_expired"


async def test_resumed_upload_rehashes_the_prefix_and_lands_once_complete(
    jobs: WorkerJobs, data_dir: Path
) -> None:
    await jobs.create(_request(output="dir/result.bin"))
    job_id, _ = await _claimed(jobs)
    data = os.urandom(300_000)
    job = jobs.get(job_id)

    async def cut(*pieces: bytes) -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
        raise trio.BrokenResourceError("connection cut")

    with pytest.raises(trio.BrokenResourceError):
        await jobs.receive(
            job, cut(data[:100_000]), offset=None, total=len(data), checksum=_sha(data)
        )
    assert await jobs.upload_offset(jobs.get(job_id)) == 100_000
    assert not (data_dir / "dir" / "result.bin").exists()
    with pytest.raises(Conflict) as mismatch:
        await jobs.receive(job, _body(data), offset=0, total=None, checksum=None)
    assert mismatch.value.code == "offset_mismatch"
    part = await jobs.receive(
        job, _body(data[100_000:200_000]), offset=100_000, total=None, checksum=None
    )
    assert not part.complete and part.offset == 200_000
    done = await jobs.receive(job, _body(data[200_000:]), offset=200_000, total=None, checksum=None)
    assert done.complete and done.job.status is JobStatus.COMPLETED
    assert done.job.result_sha256 == _sha(data) and done.job.result_size == len(data)
    assert (data_dir / "dir" / "result.bin").read_bytes() == data
    assert [p.name for p in (data_dir / "dir").iterdir()] == ["result.bin"]


async def test_tampered_prefix_fails_the_checksum_and_nothing_lands(
    jobs: WorkerJobs, data_dir: Path
) -> None:
    await jobs.create(_request(output="result.bin"))
    job_id, _ = await _claimed(jobs)
    data = os.urandom(50_000)
    job = jobs.get(job_id)
    first = await jobs.receive(
        job, _body(data[:20_000]), offset=None, total=len(data), checksum=_sha(data)
    )
    assert not first.complete
    (staged,) = [n for n in _names(data_dir) if n.startswith(".streamer-")]
    _overwrite_start(data_dir / staged)  # the bytes on disk are what is hashed, not memory
    with pytest.raises(ChecksumMismatch):
        await jobs.receive(job, _body(data[20_000:]), offset=20_000, total=None, checksum=None)
    assert _names(data_dir) == ["src.bin"]
    assert jobs.get(job_id).status is JobStatus.PROCESSING


async def test_a_cleanly_ended_part_is_not_read_again_when_the_rest_comes(
    jobs: WorkerJobs, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first request that ended cleanly leaves its running hash for the next one:
    no second pass over the staged bytes, and the stamp it puts on the staged file
    does not reach the result."""
    await jobs.create(_request(output="result.bin"))
    job_id, _ = await _claimed(jobs)
    data = os.urandom(3 << 20)
    job = jobs.get(job_id)
    first = await jobs.receive(
        job, _body(data[:-1000]), offset=None, total=len(data), checksum=None
    )
    assert not first.complete and first.offset == len(data) - 1000

    async def no_second_pass(*_: object) -> None:
        raise AssertionError("the staged bytes were read again")

    monkeypatch.setattr(LocalWriter, "hash_staged", no_second_pass)
    done = await jobs.receive(
        job, _body(data[-1000:]), offset=len(data) - 1000, total=None, checksum=_sha(data)
    )
    assert done.complete and done.job.result_sha256 == _sha(data)
    result = data_dir / "result.bin"
    assert result.read_bytes() == data
    assert abs(result.stat().st_mtime - time.time()) < 60


async def test_bytes_beyond_the_length_are_refused_and_the_prefix_kept(jobs: WorkerJobs) -> None:
    await jobs.create(_request())
    job_id, _ = await _claimed(jobs)
    job = jobs.get(job_id)
    with pytest.raises(UploadTooLong):
        await jobs.receive(job, _body(b"a" * 6, b"b" * 6), offset=None, total=10, checksum=None)
    assert await jobs.upload_offset(jobs.get(job_id)) == 6


async def test_fail_removes_the_staged_upload(jobs: WorkerJobs, data_dir: Path) -> None:
    await jobs.create(_request())
    job_id, token = await _claimed(jobs)
    await jobs.receive(jobs.get(job_id), _body(b"x" * 10), offset=None, total=99, checksum=None)
    assert any(n.startswith(".streamer-") for n in _names(data_dir))
    await jobs.fail(job_id, jobs.signer.verify(token, job_id), "gave up", retry=True)
    assert _names(data_dir) == ["src.bin"]


async def test_source_hash_is_cached_and_redone_when_the_file_changes(
    jobs: WorkerJobs, data_dir: Path
) -> None:
    job = await jobs.create(_request())
    size, digest = await jobs.source(job)
    assert (size, digest) == (12, _sha(b"source bytes"))
    assert jobs.get(job.id).source_sha256 == digest
    (data_dir / "src.bin").write_bytes(b"changed, and longer")
    assert await jobs.source(job) == (19, _sha(b"changed, and longer"))
