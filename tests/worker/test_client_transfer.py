"""streamer.client.transfer in-process: retry schedule (MockClock), short bodies,
checksum mismatches, resumed uploads, deadlines; the server is an httpx.MockTransport."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio
from trio.testing import MockClock

from streamer.client import ApiError
from streamer.client._partfile import PartState, Segment
from streamer.client._upload import CHECKSUM_LAST_MIN, LAST_PART
from streamer.client.transfer import TransferError, TransferOptions, download, part_path, upload

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
DATA = os.urandom(300_000)
ETAG = '"v1"'
# No overall deadline: the mock clock would jump to it while a thread works.
OPTIONS = TransferOptions(timeout=None)


@pytest.fixture
def clock(mock_clock: MockClock) -> MockClock:
    """Virtual time that jumps once every task has waited 50 ms of real time: retry
    sleeps pass at once, while the file I/O threads of a transfer still get to run."""
    mock_clock.autojump_threshold = 0.05
    return mock_clock


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://node", transport=httpx.MockTransport(handler))


def serve(data: bytes, request: httpx.Request, *, checksum: str | None = None) -> httpx.Response:
    """The file (whole, or the asked range) as the worker routes serve it."""
    headers = {
        "ETag": ETAG,
        "Accept-Ranges": "bytes",
        "X-Checksum-Sha256": checksum or sha(data),
    }
    wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if wanted and request.headers.get("If-Range") in (None, ETAG):
        start = int(wanted[1])
        end = int(wanted[2]) + 1 if wanted[2] else len(data)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return httpx.Response(206, headers=headers, content=data[start:end])
    return httpx.Response(200, headers=headers, content=data)


class Recorder:
    """Request times (trio clock) and heads, for asserting the retry schedule."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.times.append(trio.current_time())
        self.requests.append(request)

    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.times)]


def assert_schedule(gaps: list[float], expected: list[float]) -> None:
    """Each retry waits 2 s / 4 s / 8 s plus at most 25 % jitter (plus at most one
    1 s tick of the part-state saver, should the clock jump to it during slow I/O)."""
    assert len(gaps) == len(expected)
    for gap, delay in zip(gaps, expected, strict=True):
        assert delay <= gap <= delay * 1.25 + 1.0


async def test_503_twice_is_retried_after_2_then_4_seconds(
    clock: MockClock, tmp_path: Path
) -> None:
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen(request)
        if len(seen.times) <= 2:
            return httpx.Response(503, json={"error": "busy", "message": "later"})
        return serve(DATA, request)

    async with client(handler) as http:
        result = await download(http, "/f", tmp_path / "f.bin", options=OPTIONS)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert result.retries == 2 and result.verified and result.sha256 == sha(DATA)
    assert_schedule(seen.gaps(), [2, 4])


async def test_a_fourth_failure_gives_up_and_removes_the_partial_file(
    clock: MockClock, tmp_path: Path
) -> None:
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen(request)
        if len(seen.times) == 1:  # the first answer brings 100 kB, then the link dies
            return httpx.Response(
                200,
                headers={"ETag": ETAG, "Content-Length": str(len(DATA))},
                content=DATA[:100_000],
            )
        return httpx.Response(503, json={"error": "busy", "message": "later"})

    target = tmp_path / "f.bin"
    async with client(handler) as http:
        with pytest.raises(ApiError) as failed:
            await download(http, "/f", target, options=OPTIONS)
    assert failed.value.status == 503
    # The cut after progress, then 503s: 3 retries (2 s, 4 s, 8 s) and no 4th.
    assert len(seen.times) == 4
    assert_schedule(seen.gaps(), [2, 4, 8])
    assert seen.requests[1].headers["Range"] == f"bytes=100000-{len(DATA) - 1}"
    assert seen.requests[1].headers["If-Range"] == ETAG
    assert names(tmp_path) == []  # neither the part file nor its state


async def test_a_body_shorter_than_its_content_length_is_resumed(
    clock: MockClock, tmp_path: Path
) -> None:
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen(request)
        if len(seen.times) == 1:
            response = serve(DATA, request)
            return httpx.Response(200, headers=response.headers, content=DATA[:123_456])
        return serve(DATA, request)

    async with client(handler) as http:
        result = await download(http, "/f", tmp_path / "f.bin", options=OPTIONS)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert result.resumed == (123_456,) and result.retries == 1
    assert seen.requests[1].headers["Range"] == f"bytes=123456-{len(DATA) - 1}"


async def test_a_range_with_the_wrong_length_is_refused(clock: MockClock, tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "Range" not in request.headers:
            response = serve(DATA, request)
            return httpx.Response(200, headers=response.headers, content=DATA[:1000])
        return httpx.Response(
            206,
            headers={
                "ETag": ETAG,
                "Content-Range": f"bytes 1000-{len(DATA) - 1}/{len(DATA)}",
                "Content-Length": "5",
            },
            content=b"12345",
        )

    async with client(handler) as http:
        with pytest.raises(TransferError) as failed:
            await download(http, "/f", tmp_path / "f.bin", options=OPTIONS)
    assert failed.value.code == "length_mismatch"
    assert names(tmp_path) == []


async def test_a_checksum_mismatch_starts_over_then_fails(clock: MockClock, tmp_path: Path) -> None:
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen(request)
        return serve(DATA, request, checksum="0" * 64)

    async with client(handler) as http:
        with pytest.raises(TransferError) as failed:
            await download(http, "/f", tmp_path / "f.bin", options=OPTIONS)
    assert failed.value.code == "checksum_mismatch" and failed.value.retryable
    assert len(seen.requests) == 4 and all("Range" not in r.headers for r in seen.requests)
    assert_schedule(seen.gaps(), [2, 4, 8])
    assert names(tmp_path) == []


async def test_parallel_ranges_fill_the_file_in_place(clock: MockClock, tmp_path: Path) -> None:
    data = os.urandom(3 * 8 * (1 << 20) + 17)
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen(request)
        return serve(data, request)

    options = TransferOptions(timeout=None, parallel=3, parallel_min_size=1)
    async with client(handler) as http:
        result = await download(http, "/f", tmp_path / "f.bin", options=options)
    assert (tmp_path / "f.bin").read_bytes() == data and result.ranges == 3
    ranges = sorted(r.headers.get("Range", "") for r in seen.requests)
    assert ranges == ["", "bytes=16777216-25165840", "bytes=8388608-16777215"]


async def test_a_changed_resource_restarts_the_part(clock: MockClock, tmp_path: Path) -> None:
    """A part left by an earlier run whose ETag no longer matches is started over."""
    target = tmp_path / "f.bin"
    part = part_path(target)
    part.write_bytes(b"stale" * 1000)
    stale = PartState('"old"', None, len(DATA), [Segment(0, 5000, len(DATA))])
    part.with_name(part.name + ".json").write_bytes(stale.to_json())
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen(request)
        return serve(DATA, request)  # If-Range "old" ≠ "v1": the whole file

    async with client(handler) as http:
        result = await download(http, "/f", target, options=OPTIONS)
    assert target.read_bytes() == DATA and result.verified
    assert seen.requests[0].headers["If-Range"] == '"old"'
    assert names(tmp_path) == ["f.bin"]


class UploadServer:
    """A tus-style upload route: POST/PATCH append, HEAD tells the offset. The first
    ``cut_after`` bytes of the first POST arrive, then the connection dies."""

    def __init__(self, cut_after: int | None = None, failures: int = 0) -> None:
        self.stored = bytearray()
        self.cut_after = cut_after
        self.failures = failures
        self.log: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append((request.method, dict(request.headers)))
        if self.failures:
            self.failures -= 1
            return httpx.Response(503, json={"error": "busy", "message": "later"})
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Upload-Offset": str(len(self.stored))})
        if request.method == "PATCH" and int(request.headers["Upload-Offset"]) != len(self.stored):
            return httpx.Response(409, json={"error": "offset_mismatch", "message": "no"})
        if request.method == "POST":
            self.stored.clear()
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for piece in request.stream:
            room = None if self.cut_after is None else self.cut_after - len(self.stored)
            self.stored += piece[:room]
            if room is not None and len(piece) >= room:
                self.cut_after = None
                raise httpx.WriteError("connection reset by peer")
        total = int(request.headers["Upload-Length"])
        if len(self.stored) < total:
            return httpx.Response(200, headers={"Upload-Offset": str(len(self.stored))})
        assert sha(bytes(self.stored)) == request.headers["X-Checksum-Sha256"]
        return httpx.Response(201, json={"size": total, "sha256": sha(bytes(self.stored))})


async def test_a_cut_upload_resumes_with_head_and_patch(clock: MockClock, tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    source = tmp_path / "out.bin"
    source.write_bytes(data)
    server = UploadServer(cut_after=(2 << 20) + 100)
    async with client(server) as http:
        result = await upload(http, "/u", source, options=OPTIONS)
    assert bytes(server.stored) == data
    assert result.resumed == ((2 << 20) + 100,) and result.retries == 1
    assert [method for method, _ in server.log] == ["POST", "HEAD", "PATCH"]
    patch = server.log[2][1]
    assert patch["upload-offset"] == str((2 << 20) + 100)
    assert patch["content-length"] == str(len(data) - (2 << 20) - 100)


async def test_upload_retries_a_busy_server_then_gives_up(clock: MockClock, tmp_path: Path) -> None:
    source = tmp_path / "out.bin"
    source.write_bytes(DATA)
    server = UploadServer(failures=2)
    async with client(server) as http:
        result = await upload(
            http, "/u", source, options=TransferOptions(timeout=None, compress=True)
        )
    assert bytes(server.stored) == DATA and result.retries == 2
    # The fresh POST was compressed; the resume after the failures is a plain PATCH.
    assert server.log[0][1]["content-encoding"] == "zstd"
    assert [m for m, _ in server.log] == ["POST", "HEAD", "HEAD", "PATCH"]
    assert "content-encoding" not in server.log[-1][1]
    server = UploadServer(failures=10)
    async with client(server) as http:
        with pytest.raises(ApiError) as failed:
            await upload(http, "/u", source, options=OPTIONS)
    assert failed.value.status == 503 and len(server.log) == 4


async def test_checksum_last_hashes_while_sending_and_sends_it_with_the_last_mib(
    clock: MockClock, tmp_path: Path
) -> None:
    data = os.urandom(CHECKSUM_LAST_MIN + 5000)
    source = tmp_path / "out.bin"
    source.write_bytes(data)
    server = UploadServer()
    async with client(server) as http:
        result = await upload(http, "/u", source, options=OPTIONS, checksum_last=True)
    assert bytes(server.stored) == data and result.sha256 == sha(data)
    assert result.retries == 0 and result.resumed == ()
    (post, first), (patch, last) = server.log
    assert (post, patch) == ("POST", "PATCH")
    assert "x-checksum-sha256" not in first
    assert first["content-length"] == str(len(data) - LAST_PART)
    assert first["upload-length"] == str(len(data))
    assert last["x-checksum-sha256"] == sha(data)
    assert last["upload-offset"] == str(len(data) - LAST_PART)
    assert last["content-length"] == str(LAST_PART)
    # A small file is hashed first: one request, the checksum with it.
    (tmp_path / "small.bin").write_bytes(DATA)
    server = UploadServer()
    async with client(server) as http:
        await upload(http, "/u", tmp_path / "small.bin", options=OPTIONS, checksum_last=True)
    ((method, headers),) = server.log
    assert method == "POST" and headers["x-checksum-sha256"] == sha(DATA)


async def test_checksum_last_after_a_cut_resumes_with_the_whole_files_checksum(
    clock: MockClock, tmp_path: Path
) -> None:
    data = os.urandom(CHECKSUM_LAST_MIN + 5000)
    source = tmp_path / "out.bin"
    source.write_bytes(data)
    cut = (3 << 20) + 100
    server = UploadServer(cut_after=cut)
    async with client(server) as http:
        result = await upload(http, "/u", source, options=OPTIONS, checksum_last=True)
    assert bytes(server.stored) == data and result.resumed == (cut,)
    assert [method for method, _ in server.log] == ["POST", "HEAD", "PATCH"]
    assert server.log[2][1]["x-checksum-sha256"] == sha(data)
    assert server.log[2][1]["content-length"] == str(len(data) - cut)


async def _stall_past_the_deadline(
    mock_clock: MockClock, transfer: Callable[[], Awaitable[object]], stalled: trio.Event
) -> TransferError:
    """Run ``transfer`` (with a 60 s deadline) until its peer has ``stalled``, then
    move the clock past the deadline; what the transfer failed with."""
    failures: list[TransferError] = []

    async def run() -> None:
        with pytest.raises(TransferError) as failed:
            await transfer()
        failures.append(failed.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await stalled.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not failures  # still waiting on the peer: nothing times out early
        mock_clock.jump(59)
        await trio.testing.wait_all_tasks_blocked()
        assert not failures
        mock_clock.jump(2)
    (failure,) = failures
    assert failure.code == "timeout" and not failure.retryable
    assert "not done after 60 s" in str(failure)
    return failure


async def test_a_stalled_download_times_out_and_removes_its_part(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    target = tmp_path / "f.bin"
    landed = trio.Event()  # bytes are in the part file

    async def trickle() -> AsyncIterator[bytes]:
        yield DATA[:100_000]
        await trio.sleep_forever()  # the link stalls without closing

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"ETag": ETAG, "Content-Length": str(len(DATA)), "X-Checksum-Sha256": sha(DATA)}
        return httpx.Response(200, headers=headers, content=trickle())

    def progress(done: int, total: int | None) -> None:
        if done > 0 and part_path(target).stat().st_size > 0:
            landed.set()

    async def transfer() -> None:
        async with client(handler) as http:
            options = TransferOptions(timeout=60, chunk_size=64 << 10)  # written at 64 KiB
            await download(http, "/f", target, options=options, progress=progress)

    await _stall_past_the_deadline(mock_clock, transfer, landed)
    assert names(tmp_path) == []  # neither the part file nor its state


async def test_a_stalled_upload_times_out(mock_clock: MockClock, tmp_path: Path) -> None:
    source = tmp_path / "out.bin"
    source.write_bytes(DATA)
    stalled = trio.Event()
    received = bytearray()

    async def handler(request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for piece in request.stream:
            received.extend(piece)
            stalled.set()
            await trio.sleep_forever()  # the server stops reading
        raise AssertionError("the body ended")

    async def transfer() -> None:
        async with client(handler) as http:
            options = TransferOptions(timeout=60, chunk_size=64 << 10)
            await upload(http, "/u", source, options=options)

    await _stall_past_the_deadline(mock_clock, transfer, stalled)
    assert 0 < len(received) < len(DATA)
    assert source.read_bytes() == DATA  # the upload's own file is left alone


def test_a_saved_state_must_match_its_part_file() -> None:
    state = PartState('"e"', "ab" * 32, 100, [Segment(0, 40, 60), Segment(60, 70, 100)])
    assert PartState.from_json(state.to_json(), 100) == state
    assert PartState.from_json(state.to_json(), 50) is None  # the part lost bytes
    assert PartState.from_json(b"{not json", 100) is None
    holes = PartState('"e"', None, 100, [Segment(0, 10, 50), Segment(60, 60, 100)])
    assert PartState.from_json(holes.to_json(), 100) is None
    no_etag = PartState(None, None, 100, [Segment(0, 10, 100)])
    assert PartState.from_json(no_etag.to_json(), 100) is None
