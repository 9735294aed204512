"""The worker loop's time limits: the claim's (the server's ``worker.*_timeout``) rule
unless the worker's own flags say otherwise; a transfer or command past its limit
fails the job. In-process (MockClock); the node is an httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

from streamer._config import WorkerConfig
from streamer._worker.models import WorkLimits
from streamer.client._jobs import Claim, WorkerClient
from streamer.client._runner import DEFAULT_COMMAND_TIMEOUT, Worker, WorkerSettings
from streamer.client._wire import DEFAULT_TIMEOUT

DATA = os.urandom(300_000)
#: What the fake node's claim answer says (seconds).
CLAIMED = {"downloadTimeout": 40, "uploadTimeout": 50, "commandTimeout": 60}
JOB = {
    "id": "j1",
    "status": "processing",
    "source": {"locationId": "local-0", "path": "in.bin"},
    "output": {"locationId": "local-0", "path": "out.bin"},
    "attempts": 1,
    # A 15 min lease: heartbeats every 5 min, far from the limits under test.
    "updatedAt": "2026-01-01T00:00:00Z",
    "leaseExpiresAt": "2026-01-01T00:15:00Z",
}


class FakeNode:
    """One job to claim; ``stall`` is the transfer whose peer stops (``download`` or
    ``upload``; anything else: neither). Records the failure reports."""

    def __init__(self, stall: str) -> None:
        self.stall = stall
        self.claims = 0
        self.failures: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/worker/jobs/claim":
            self.claims += 1
            if self.claims > 1:
                return httpx.Response(204)
            return httpx.Response(200, json={"job": JOB, "token": "job-token", **CLAIMED})
        if path == "/api/worker/download-video":
            digest = hashlib.sha256(DATA).hexdigest()
            body = _stalled(DATA[:1000]) if self.stall == "download" else DATA
            headers = {"Content-Length": str(len(DATA)), "X-Checksum-Sha256": digest}
            return httpx.Response(200, headers=headers, content=body)
        if path == "/api/worker/upload-video":
            assert self.stall == "upload", "the upload should not have started"
            assert isinstance(request.stream, httpx.AsyncByteStream)
            async for _ in request.stream:
                await trio.sleep_forever()  # the node stops reading
        if path == "/api/worker/jobs/j1/fail":
            self.failures.append(json.loads(await request.aread()))
        return httpx.Response(200, json=JOB)  # heartbeats, fail, release, the job


async def _stalled(head: bytes) -> AsyncIterator[bytes]:
    yield head
    await trio.sleep_forever()


def _settings(tmp_path: Path, command: str = "cp {input} {output}") -> WorkerSettings:
    """One job, no flags for its time limits (replace them to set some)."""
    return WorkerSettings(command=command, cache_dir=tmp_path / "cache", max_jobs=1)


async def _run(node: FakeNode, settings: WorkerSettings) -> str:
    """One job through the worker loop; the message it was failed with."""
    cache = settings.cache_dir
    transport = httpx.MockTransport(node)
    async with httpx.AsyncClient(base_url="http://node", transport=transport) as http:
        stats = await Worker(WorkerClient(http, "w1"), settings).run()
    assert stats.failed == 1 and stats.completed == 0
    assert list(cache.iterdir()) == []  # the job's files, partial ones included, are gone
    (failure,) = node.failures
    assert isinstance(failure["message"], str)
    return failure["message"]


@pytest.fixture
def clock(mock_clock: MockClock) -> MockClock:
    mock_clock.autojump_threshold = 0.05  # limits pass at once; threads still run
    return mock_clock


@pytest.mark.parametrize(("flag", "seconds"), [(None, 40), (7.0, 7)])
async def test_a_stalled_download_fails_after_the_claims_limit_or_the_flags(
    clock: MockClock, tmp_path: Path, flag: float | None, seconds: int
) -> None:
    node = FakeNode("download")
    settings = dataclasses.replace(_settings(tmp_path), download_timeout=flag)
    message = await _run(node, settings)
    assert message.startswith("download failed: 0 timeout:")
    assert message.endswith(f"not done after {seconds} s")
    assert node.failures[0]["retry"] is True  # another attempt may have a faster link


@pytest.mark.parametrize(("flag", "seconds"), [(None, 50), (9.0, 9)])
async def test_a_stalled_upload_fails_after_the_claims_limit_or_the_flags(
    clock: MockClock, tmp_path: Path, flag: float | None, seconds: int
) -> None:
    node = FakeNode("upload")
    settings = dataclasses.replace(_settings(tmp_path), upload_timeout=flag)
    message = await _run(node, settings)
    assert message.startswith("upload failed: 0 timeout:")
    assert message.endswith(f"not done after {seconds} s")
    assert node.failures[0]["retry"] is True


@pytest.mark.parametrize(("flag", "seconds"), [(None, 60), (3.0, 3)])
async def test_a_slow_command_fails_after_the_claims_limit_or_the_flags(
    clock: MockClock, tmp_path: Path, flag: float | None, seconds: int
) -> None:
    node = FakeNode("")
    settings = dataclasses.replace(_settings(tmp_path, "sleep 600"), command_timeout=flag)
    message = await _run(node, settings)
    assert message.startswith(f"the command timed out after {seconds} s")
    assert node.failures[0]["retry"] is False


def test_a_claim_without_limits_or_with_bad_ones_leaves_them_to_the_worker() -> None:
    seed_004 = Claim.from_answer({"job": JOB, "token": "t"})
    assert (seed_004.download_timeout, seed_004.upload_timeout, seed_004.command_timeout) == (
        None,
        None,
        None,
    )
    odd = Claim.from_answer(
        {"job": JOB, "token": "t", "downloadTimeout": -1, "uploadTimeout": True,
         "commandTimeout": "60"}
    )  # fmt: skip
    assert (odd.download_timeout, odd.upload_timeout, odd.command_timeout) == (None, None, None)
    good = Claim.from_answer({"job": JOB, "token": "t", **CLAIMED})
    assert (good.download_timeout, good.upload_timeout, good.command_timeout) == (40, 50, 60)


def test_the_defaults_agree_between_the_node_and_the_worker() -> None:
    """30 min per transfer, 6 h per command: in the config, the claim, the worker."""
    config = WorkerConfig()
    assert WorkLimits() == WorkLimits(
        download=config.download_timeout,
        upload=config.upload_timeout,
        command=config.command_timeout,
    )
    assert config.download_timeout == config.upload_timeout == DEFAULT_TIMEOUT == 1800
    assert config.command_timeout == DEFAULT_COMMAND_TIMEOUT == 21600
