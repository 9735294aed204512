"""Imports through the engine and the copy runner, in process: unknown sizes, checksums."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamer._engine import JobStatus
from streamer._storage import LocalStorage
from streamer._storage.http import HttpClient
from streamer._storage.huggingface import HubImporter, HubSettings
from streamer._storage.registry import Locations
from streamer._storage.urlimport import UrlImport
from tests.support.engine import run_job
from tests.support.hubstub import FileServer, HubStub

from .conftest import CORRUPT, TOKEN, populate


def locations(tmp_path: Path, client: HttpClient, hub: HubStub) -> Locations:
    def url_import(source: Any) -> UrlImport:
        return UrlImport(client, source.urls)

    return Locations(
        [LocalStorage("local-0", tmp_path / "data")],
        importers={
            "url": url_import,
            "huggingface": HubImporter(client, HubSettings(hub.url, TOKEN)),
        },
    )


async def test_unknown_sizes_are_learned_and_persisted(
    tmp_path: Path, files: FileServer, hub: HubStub, client: HttpClient
) -> None:
    (tmp_path / "data").mkdir()
    files.files.update({"/live.log": b"x" * 300_000, "/fixed.bin": b"y" * 1000})
    files.chunked.add("/live.log")
    body = {
        "source": {"type": "url", "urls": [f"{files.url}/live.log", f"{files.url}/fixed.bin"]},
        "destination": {"type": "local", "locationId": "local-0", "path": "in"},
    }
    job, store = await run_job(tmp_path, locations(tmp_path, client, hub), body)
    assert job.status is JobStatus.COMPLETED
    assert (job.total_bytes, job.bytes_transferred) == (301_000, 301_000)
    assert (tmp_path / "data/in/live.log").read_bytes() == b"x" * 300_000
    try:
        saved = store.load_job(job.id, with_files=True)
    finally:
        store.close()
    assert saved is not None
    assert {f.source: f.size for f in saved.files} == {"live.log": 300_000, "fixed.bin": 1000}


async def test_a_declared_sha256_that_does_not_match_commits_nothing(
    tmp_path: Path, files: FileServer, hub: HubStub, client: HttpClient
) -> None:
    (tmp_path / "data").mkdir()
    populate(hub)
    body = {
        "source": {"type": "huggingface", "repo": "org/corrupt"},
        "destination": {"type": "local", "locationId": "local-0", "path": ""},
        "conflictResolution": "overwrite",
    }
    job, store = await run_job(tmp_path, locations(tmp_path, client, hub), body)
    store.close()
    assert (job.files_completed, job.files_failed) == (1, 1)
    bad = next(f for f in job.files if f.source == "bad.bin")
    assert bad.error == "ChecksumMismatch" and bad.sha256 is None
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["good.bin"]
    assert (tmp_path / "data/good.bin").read_bytes() == CORRUPT["good.bin"].content
