"""SSE framing and the job stream's rules (time via MockClock)."""

from __future__ import annotations

import json

import pytest
import trio

from streamer._api.sse import HEARTBEAT_FRAME, frame, job_stream
from streamer._engine import FileStatus, FileTask, Job, JobStatus


def parse(raw: bytes) -> dict[str, object]:
    lines = raw.decode().strip().split("\n")
    assert lines[0].startswith("id: ") and lines[1].startswith("data: ")
    return json.loads(lines[1][len("data: ") :])  # type: ignore[no-any-return]


def test_frame_shape() -> None:
    assert frame({"a": "é\n"}, event_id=7) == 'id: 7\ndata: {"a":"é\\n"}\n\n'.encode()


async def collect(job: Job, closing: trio.Event, into: list[bytes]) -> None:
    async for chunk in job_stream(job, closing):
        into.append(chunk)


async def test_progress_is_coalesced_to_ten_per_second_then_final(autojump_clock: object) -> None:
    file = FileTask(0, "m/w.bin", "d/w.bin", 1000)
    job = Job(id="j", kind="cross-storage", spec={}, files=[file])
    job.recount()
    frames: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, job, trio.Event(), frames)
        await trio.sleep(0.01)
        job.status, file.status = JobStatus.IN_PROGRESS, FileStatus.TRANSFERRING
        job.current = file
        for loaded in range(1, 1001):  # 1000 changes over one second
            file.loaded = job.bytes_transferred = loaded
            job.touch()
            await trio.sleep(0.001)
        job.status, job.current = JobStatus.COMPLETED, None
        job.touch()
    events = [parse(f) for f in frames]
    assert events[0]["type"] == "progress"
    assert 8 <= len(events) <= 14  # ~10/s plus first and final
    assert events[-1]["type"] == "complete"
    progress = [e for e in events if e["type"] == "progress" and "currentFile" in e]
    assert progress[-1]["currentFile"]["path"] == "m/w.bin"  # type: ignore[index]
    ids = [int(f.decode().split("\n")[0][4:]) for f in frames]
    assert ids == list(range(1, len(frames) + 1))


async def test_the_final_event_is_not_held_back_by_the_interval(autojump_clock: object) -> None:
    job = Job(id="j", kind="cross-storage", spec={}, status=JobStatus.IN_PROGRESS)
    frames: list[bytes] = []
    sent_at: list[float] = []

    async def collect_timed() -> None:
        async for piece in job_stream(job, trio.Event()):
            frames.append(piece)
            sent_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_timed)
        await trio.sleep(1)
        job.touch()  # a progress event, then the interval starts
        await trio.sleep(0.01)
        job.status = JobStatus.COMPLETED
        job.touch()
        finished_at = trio.current_time()
    events = [parse(f)["type"] for f in frames]
    assert events == ["progress", "progress", "complete"]
    assert sent_at[-1] == finished_at  # not at the interval's end, 0.09 s later


async def test_a_job_that_ends_while_an_event_is_sent_still_gets_its_final_event() -> None:
    job = Job(id="j", kind="cross-storage", spec={}, status=JobStatus.IN_PROGRESS)
    stream = job_stream(job, trio.Event(), min_interval=0)
    first = await stream.__anext__()  # a progress event; the client is reading it...
    job.status = JobStatus.COMPLETED  # ...when the job ends
    job.touch()
    second = await stream.__anext__()
    assert [parse(first)["type"], parse(second)["type"]] == ["progress", "complete"]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_heartbeat_while_idle_and_end_on_shutdown(autojump_clock: object) -> None:
    job = Job(id="j", kind="cross-storage", spec={}, status=JobStatus.IN_PROGRESS)
    closing = trio.Event()
    frames: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, job, closing, frames)
        await trio.sleep(31)
        closing.set()
    assert frames[1:] == [HEARTBEAT_FRAME, HEARTBEAT_FRAME]


async def test_finished_job_gets_its_final_event_and_the_stream_ends() -> None:
    job = Job(id="j", kind="cross-storage", spec={}, status=JobStatus.CANCELLED)
    frames: list[bytes] = []
    with trio.fail_after(1):
        await collect(job, trio.Event(), frames)
    assert [parse(f)["type"] for f in frames] == ["cancelled"]
