"""Hugging Face and URL imports through a real ``streamer serve`` (stubs on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.node import Node, staging_files
from tests.support.faultproxy import ProxyThread, start_in_thread
from tests.support.hubstub import FileServer, HubStub

from .conftest import CORRUPT, DATASET_MAIN, MODEL_MAIN, MODEL_V1, TOKEN, populate

BIG = os.urandom((3 << 20) + 777)
STREAMED = os.urandom(200_000)


@dataclass
class World:
    node: Node
    hub: HubStub
    files: FileServer
    proxy: ProxyThread
    commits: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    hub = HubStub(token=TOKEN).start()
    commits = populate(hub)
    files = FileServer({"/dl/weights.bin": BIG, "/dl/stream.tar": STREAMED}).start()
    files.chunked.add("/dl/stream.tar")
    proxy = start_in_thread(files.port)
    node = Node(
        tmp_path_factory.mktemp("imports") / "home",
        config={
            "huggingface": {"endpoint": hub.url, "token": TOKEN},
            # the URL stubs listen on 127.0.0.1, which the default policy refuses
            "http": {"max_retries": 3, "allow_private_networks": True},
        },
    )
    try:
        with node.serving():
            yield World(node, hub, files, proxy, commits)
    finally:
        proxy.stop()
        files.stop()
        hub.stop()


def post(node: Node, source: dict[str, Any], destination: str) -> tuple[int, dict[str, Any]]:
    body = {
        "source": source,
        "destination": {"type": "local", "locationId": "local-0", "path": destination},
        "conflictResolution": "overwrite",
    }
    with node.client() as client:
        response = client.post("/api/transfer", json=body)
    return response.status_code, response.json()


def run(node: Node, source: dict[str, Any], destination: str) -> dict[str, Any]:
    status, created = post(node, source, destination)
    assert status == 200, created
    return node.wait(created["jobId"])


def files_of(node: Node, job_id: str) -> dict[str, dict[str, Any]]:
    with node.client() as client:
        listed = client.get(f"/api/transfer/{job_id}/files").json()["files"]
    return {f["path"]: f for f in listed}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_model_and_dataset_imports_land_identical_with_hashes(world: World) -> None:
    node, data = world.node, world.node.data
    model = {"type": "huggingface", "repo": "org/model", "files": ["unet", "config.json"]}
    job = run(node, model, "/models/m")
    assert job["type"] == "huggingface" and job["status"] == "completed", job
    assert job["source"]["repo"] == "org/model" and job["filesCompleted"] == 3
    for name in ("config.json", "unet/config.json", "unet/model.safetensors"):
        assert (data / "models/m" / name).read_bytes() == MODEL_MAIN[name].content
    assert not (data / "models/m/README.md").exists()
    listed = files_of(node, job["id"])
    assert {p: f["sha256"] for p, f in listed.items()} == {
        p: sha256(MODEL_MAIN[p].content) for p in listed
    }
    assert (
        job["bytesTransferred"]
        == job["totalBytes"]
        == sum(len(MODEL_MAIN[p].content) for p in listed)
    )

    dataset = {"type": "huggingface", "repo": "org/data", "repoType": "dataset"}
    job = run(node, dataset, "/datasets")
    assert job["status"] == "completed" and job["filesCompleted"] == len(DATASET_MAIN)
    for name, file in DATASET_MAIN.items():
        assert (data / "datasets" / name).read_bytes() == file.content

    old = {"type": "huggingface", "repo": "org/model", "revision": "v1"}
    job = run(node, old, "/models/old")
    assert job["status"] == "completed"
    for name, file in MODEL_V1.items():
        assert (data / "models/old" / name).read_bytes() == file.content
    resolved = [r.target for r in world.hub.requests("GET") if "/resolve/" in r.target]
    assert any(f"/resolve/{world.commits['v1']}/" in t for t in resolved)
    assert "authorization" not in world.hub.cdn.requests("GET")[0].headers
    assert staging_files(data) == []


def test_an_lfs_checksum_mismatch_fails_that_file_and_lands_nothing(world: World) -> None:
    job = run(world.node, {"type": "huggingface", "repo": "org/corrupt"}, "/corrupt")
    assert job["filesCompleted"] == 1 and job["filesFailed"] == 1
    assert job["status"] == "completed"  # partly: something landed (seed 001 semantics)
    (error,) = job["errors"]
    assert error["file"] == "bad.bin" and error["error"] == "ChecksumMismatch"
    assert "0" * 64 in error["message"]
    target = world.node.data / "corrupt"
    assert (target / "good.bin").read_bytes() == CORRUPT["good.bin"].content
    assert not (target / "bad.bin").exists()
    assert staging_files(world.node.data) == []


@pytest.mark.parametrize(
    ("source", "status", "code"),
    [
        ({"repo": "org/absent"}, 404, "RepoNotFound"),
        ({"repo": "org/model", "revision": "nope"}, 404, "RevisionNotFound"),
        ({"repo": "org/model", "files": ["missing.bin"]}, 404, "EntryNotFound"),
        ({"repo": "org/model", "files": ["../x"]}, 400, "invalid_path"),
        ({"repo": "org/model", "repoType": "kernel"}, 400, "invalid_body"),
    ],
)
def test_bad_hub_sources_are_clear_4xx_at_post(
    world: World, source: dict[str, Any], status: int, code: str
) -> None:
    got, body = post(world.node, {"type": "huggingface", **source}, "/x")
    assert (got, body["error"]) == (status, code), body
    assert body["message"]


def test_url_import_resumes_a_dropped_download(world: World) -> None:
    proxy = world.proxy
    base = f"http://127.0.0.1:{proxy.port}/dl"
    proxy.proxy.drop_after(1_500_000, when=lambda r: r.method == "GET" and "weights" in r.target)
    source = {"type": "url", "urls": [f"{base}/weights.bin", f"{base}/stream.tar"]}
    status, created = post(world.node, source, "/downloads")
    assert status == 200 and created["estimatedBytes"] == len(BIG)  # stream.tar: unknown yet
    job = world.node.wait(created["jobId"])
    assert job["type"] == "url" and job["status"] == "completed", job
    target = world.node.data / "downloads"
    assert sha256((target / "weights.bin").read_bytes()) == sha256(BIG)
    assert (target / "stream.tar").read_bytes() == STREAMED
    assert proxy.proxy.dropped == 1
    ranged = [r for r in world.files.requests("GET") if "range" in r.headers]
    assert any(r.headers["range"] != "bytes=0-0" for r in ranged)  # the resume
    assert job["bytesTransferred"] == job["totalBytes"] == len(BIG) + len(STREAMED)
    listed = files_of(world.node, job["id"])
    assert listed["stream.tar"]["size"] == len(STREAMED)
    assert listed["weights.bin"]["sha256"] == sha256(BIG)


def test_url_import_of_a_missing_file_is_a_404_at_post(world: World) -> None:
    source = {"type": "url", "urls": [f"{world.files.url}/dl/nothing-here.bin"]}
    status, body = post(world.node, source, "/downloads")
    assert (status, body["error"]) == (404, "HTTP404")
