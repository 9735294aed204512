"""Run one transfer job through a real engine and copy runner, in process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import trio

from streamer._engine import Engine, Job, Store
from streamer._engine.copy import CopyRunner
from streamer._engine.jobs import new_job_id
from streamer._engine.transfer import TransferSpec, kind_of, plan
from streamer._storage.registry import Locations


async def run_job(
    tmp_path: Path, where: Locations, body: dict[str, Any], **runner: Any
) -> tuple[Job, Store]:
    """Plan ``body`` (a ``POST /api/transfer`` body) over ``where`` and run it to its end
    (``runner``: :class:`CopyRunner` options, e.g. ``in_place_file``).

    Returns the job as the engine left it (files included) and the store it
    persisted to (state under ``tmp_path / "state"``; the caller closes it).
    """
    spec = msgspec.convert(body, TransferSpec)
    planned = await plan(spec, where)
    job = Job(id=new_job_id(), kind=kind_of(spec), spec=planned.spec.to_json(), files=planned.files)
    store = Store(str(tmp_path / "state"))
    engine = Engine(store, {job.kind: CopyRunner(where, **runner)})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        engine.submit(job)
        while not (running := engine.get(job.id)).status.finished:
            await running.changed.wait()
        nursery.cancel_scope.cancel()
    return job, store
