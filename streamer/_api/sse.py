"""Server-Sent Events: framing (sans-IO) and the per-job event stream.

A stream first sends the job's current state, then a ``progress`` event per
change (at most one per ``MIN_INTERVAL`` — changes in between are coalesced,
never queued), a heartbeat comment every ``HEARTBEAT`` seconds of silence, and a
final ``complete`` / ``error`` / ``cancelled`` event as soon as the job ends (never
held back by the interval), after which it ends. The
engine wakes the stream on change; nothing polls.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import trio

from .._engine import Job, JobStatus

MIN_INTERVAL = 0.1
HEARTBEAT = 15.0
HEARTBEAT_FRAME = b": heartbeat\n\n"

_FINAL_TYPES = {
    JobStatus.COMPLETED: "complete",
    JobStatus.FAILED: "error",
    JobStatus.CANCELLED: "cancelled",
}


def frame(data: dict[str, Any], *, event_id: int) -> bytes:
    """One SSE message: ``id:`` and a single ``data:`` line (JSON has no newlines)."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\ndata: {payload}\n\n".encode()


def job_event(job: Job) -> dict[str, Any]:
    """The event describing ``job`` now, typed by its status as seed 000 lists."""
    event: dict[str, Any] = {"type": _FINAL_TYPES.get(job.status, "progress"), "job": job.to_json()}
    current = job.current
    if current is not None and not job.status.finished:
        event["currentFile"] = {
            "path": current.source,
            "loaded": current.loaded,
            "total": current.size,
            "status": current.status.value,
        }
    if job.status is JobStatus.FAILED:
        errors = event["job"]["errors"]
        event["error"] = errors[0]["message"] if errors else "transfer failed"
    return event


async def job_stream(
    job: Job,
    closing: trio.Event,
    *,
    min_interval: float = MIN_INTERVAL,
    heartbeat: float = HEARTBEAT,
) -> AsyncGenerator[bytes, None]:
    """Yield SSE frames for ``job`` until it finishes or ``closing`` is set."""
    event_id = 0
    last_sent = -math.inf
    while True:
        changed = job.changed
        event_id += 1
        last_sent = trio.current_time()
        # Whether this event is the final one is decided with the event: the job may
        # finish while the frame is being sent, and then its final event is still due.
        final = job.status.finished
        yield frame(job_event(job), event_id=event_id)
        if final:
            return
        while True:
            outcome = await _wait_change(changed, closing, heartbeat)
            if outcome == "closing":
                return
            if outcome == "changed":
                break
            yield HEARTBEAT_FRAME
        await _coalesce(job, last_sent + min_interval)


class Subscribers:
    """Counts the streams being sent now (``streamer_sse_subscribers``)."""

    def __init__(self) -> None:
        self.count = 0

    async def track(self, stream: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
        """``stream``, counted from its first frame until it ends or is dropped."""
        self.count += 1
        try:
            async with aclosing(stream):
                async for piece in stream:
                    yield piece
        finally:
            self.count -= 1


async def _coalesce(job: Job, until: float) -> None:
    """Let changes gather until ``until``, or less once the job has finished: its final
    event is never held back (a client waiting for it learns at once)."""
    with trio.move_on_at(until):
        while not job.status.finished:
            await job.changed.wait()


async def _wait_change(changed: trio.Event, closing: trio.Event, heartbeat: float) -> str:
    """``"changed"``, ``"closing"`` or ``"timeout"``, whichever comes first."""
    if closing.is_set():
        return "closing"
    result = "timeout"
    with trio.move_on_after(heartbeat):
        async with trio.open_nursery() as nursery:

            async def wait(event: trio.Event, name: str) -> None:
                nonlocal result
                await event.wait()
                result = name
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait, changed, "changed")
            nursery.start_soon(wait, closing, "closing")
    return result
