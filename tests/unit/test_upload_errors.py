"""``PUT /api/upload`` answers every failure with its own status, in process (the
paths a real node cannot reach on demand: no uploads wired, a location lost
between the request's check and the job's start)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from quart import Quart

from streamer._api import Services, create_app
from streamer._api.upload import Uploads, _recorded_failure
from streamer._auth import TokenAuth
from streamer._engine import Engine, Store
from streamer._engine.jobs import JobError
from streamer._engine.upload import UploadRunner
from streamer._storage import LocalStorage
from streamer._storage.registry import Locations

TOKEN = "t" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def serve(tmp_path: Path, *, runner_locations: Locations | None) -> AsyncIterator[Quart]:
    """An app over ``local-0``; its upload runner looks storages up in
    ``runner_locations`` (None: no uploads wired)."""
    (tmp_path / "data").mkdir()
    locations = Locations([LocalStorage("local-0", str(tmp_path / "data"))])
    runner = None if runner_locations is None else UploadRunner(runner_locations)
    engine = Engine(
        Store(str(tmp_path / "state")), {} if runner is None else {"local-upload": runner}
    )
    svc = Services(
        engine=engine,
        locations=locations,
        auth=TokenAuth([TOKEN]),
        uploads=None if runner is None else Uploads(runner),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield create_app(svc)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def unwired(tmp_path: Path) -> AsyncIterator[Quart]:
    async for app in serve(tmp_path, runner_locations=None):
        yield app


@pytest.fixture
async def lost_location(tmp_path: Path) -> AsyncIterator[Quart]:
    async for app in serve(tmp_path, runner_locations=Locations([])):
        yield app


async def test_a_node_without_uploads_answers_a_clear_4xx(unwired: Quart) -> None:
    answer = await unwired.test_client().put("/api/upload/local-0/a.bin", data=b"x", headers=AUTH)
    assert answer.status_code == 400
    assert (await answer.get_json())["error"] == "uploads_disabled"


async def test_a_job_failing_before_the_body_answers_with_its_own_status(
    lost_location: Quart, tmp_path: Path
) -> None:
    answer = await lost_location.test_client().put(
        "/api/upload/local-0/a.bin", data=b"x", headers=AUTH
    )
    body = await answer.get_json()
    assert (answer.status_code, body["error"]) == (400, "unknown_location"), body
    assert list((tmp_path / "data").iterdir()) == []


def test_an_error_recorded_without_its_exception_keeps_a_truthful_status() -> None:
    crash = _recorded_failure(JobError(None, "internal_error", "TypeError: boom"))
    assert (crash.status_code, crash.code) == (500, "internal_error")
    storage = _recorded_failure(JobError(None, "EIO", "disk on fire"))
    assert (storage.status_code, storage.code, storage.message) == (502, "EIO", "disk on fire")


async def test_a_node_without_node_transfers_answers_a_clear_4xx(unwired: Quart) -> None:
    answer = await unwired.test_client().delete(
        "/api/servers/0b6e1a2c-9f3e-4a56-8b7d-1c2d3e4f5a6b/transfer", headers=AUTH
    )
    assert answer.status_code == 400
    assert (await answer.get_json())["error"] == "node_transfers_disabled"
