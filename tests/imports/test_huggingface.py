"""The ``huggingface`` import against the Hub stub: listing, filters, errors, pinning, reads."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import msgspec
import pytest

from streamer._engine.transfer import HuggingFaceSource, TransferSpec, plan
from streamer._errors import BadRequest, InvalidPath, SourceNotFound, StorageError
from streamer._storage.base import Entry
from streamer._storage.http import HttpClient
from streamer._storage.httperrors import HttpDenied, HttpNotFound
from streamer._storage.huggingface import HubImporter, HubSettings, HuggingFaceRepo
from streamer._storage.local import LocalStorage
from streamer._storage.registry import Locations
from tests.support.hubstub import HubFile, HubStub

from .conftest import DATASET_MAIN, MODEL_MAIN, TOKEN, WEIGHTS, populate, sha256


def importer(hub: HubStub, client: HttpClient, token: str = TOKEN) -> HubImporter:
    return HubImporter(client, HubSettings(endpoint=hub.url, token=token))


def source(repo: str, **fields: object) -> HuggingFaceSource:
    return HuggingFaceSource(repo=repo, **fields)  # type: ignore[arg-type]


async def read(repo: HuggingFaceRepo, path: str) -> bytes:
    async with aclosing(repo.read(path, chunk_size=1 << 20)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_lists_every_file_with_lfs_hashes(hub: HubStub, client: HttpClient) -> None:
    commits = populate(hub)
    repo = importer(hub, client)(source("org/model"))
    entries = await repo.walk("")
    assert [e.path for e in entries] == sorted(MODEL_MAIN)
    by_path = {e.path: e for e in entries}
    assert by_path["unet/model.safetensors"] == Entry(
        "unet/model.safetensors", len(WEIGHTS), sha256=sha256(WEIGHTS)
    )
    assert by_path["config.json"] == Entry("config.json", len(MODEL_MAIN["config.json"].content))
    assert await repo.commit() == commits["main"]
    listing = hub.requests("GET")[0]
    assert listing.target == "/api/models/org/model/revision/main?blobs=true"
    assert listing.headers["authorization"] == f"Bearer {TOKEN}"
    assert await repo.stat("README.md") == by_path["README.md"]
    assert await repo.stat("nope") is None
    assert [e.path for e in await repo.walk("unet")] == [
        "unet/config.json",
        "unet/model.safetensors",
    ]


async def test_reads_by_commit_and_lfs_goes_through_the_cdn_without_the_token(
    hub: HubStub, client: HttpClient
) -> None:
    commits = populate(hub)
    repo = importer(hub, client)(source("org/model"))
    await repo.walk("")
    assert await read(repo, "unet/model.safetensors") == WEIGHTS
    assert await read(repo, "config.json") == MODEL_MAIN["config.json"].content
    resolves = [r for r in hub.requests("GET") if "/resolve/" in r.target]
    assert [r.target for r in resolves] == [
        f"/org/model/resolve/{commits['main']}/unet/model.safetensors",
        f"/org/model/resolve/{commits['main']}/config.json",
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in resolves)
    (cdn,) = hub.cdn.requests("GET")
    assert "authorization" not in cdn.headers


async def test_datasets_revisions_and_file_filters(hub: HubStub, client: HttpClient) -> None:
    commits = populate(hub)
    make = importer(hub, client)
    data = make(source("org/data", repo_type="dataset"))
    assert [e.path for e in await data.walk("")] == sorted(DATASET_MAIN)
    assert await read(data, "data/train.csv") == DATASET_MAIN["data/train.csv"].content
    assert hub.requests("GET")[0].target.startswith("/api/datasets/org/data/revision/main")
    assert hub.requests("GET")[-1].target.startswith("/datasets/org/data/resolve/")

    old = make(source("org/model", revision="v1", files=["unet/", "config.json"]))
    assert [e.path for e in await old.walk("")] == ["config.json", "unet/model.safetensors"]
    assert await old.commit() == commits["v1"]
    by_sha = make(source("org/model", revision=commits["v1"], files=["config.json"]))
    assert await by_sha.commit() == commits["v1"]  # a commit needs no resolving
    assert await read(by_sha, "config.json") == b'{"model_type": "old"}'


async def test_unknown_files_repos_and_revisions_are_404s(hub: HubStub, client: HttpClient) -> None:
    populate(hub)
    make = importer(hub, client)
    with pytest.raises(SourceNotFound) as missing:
        await make(source("org/model", files=["config.json", "nope.bin", "unet/x"])).walk("")
    assert missing.value.code == "EntryNotFound" and missing.value.status_code == 404
    assert "'nope.bin', 'unet/x'" in missing.value.message

    with pytest.raises(HttpNotFound) as repo:
        await make(source("org/absent")).walk("")
    assert repo.value.code == "RepoNotFound" and repo.value.status_code == 404
    assert "model repository 'org/absent' not found" in repo.value.message

    with pytest.raises(HttpNotFound) as revision:
        await make(source("org/model", revision="nope")).walk("")
    assert revision.value.code == "RevisionNotFound"
    assert "revision 'nope' not found" in revision.value.message
    assert client.retries == 0


async def test_private_and_gated_repos_need_the_token(hub: HubStub, client: HttpClient) -> None:
    populate(hub)
    assert [e.path for e in await importer(hub, client)(source("org/private")).walk("")] == [
        "secret.txt"
    ]
    anonymous = importer(hub, client, token="")
    with pytest.raises(HttpNotFound) as private:  # the Hub answers 401 RepoNotFound
        await anonymous(source("org/private")).walk("")
    assert "need huggingface.token" in private.value.message
    assert "authorization" not in hub.requests("GET")[-1].headers
    with pytest.raises(HttpDenied) as gated:
        await anonymous(source("org/gated")).walk("")
    assert gated.value.code == "GatedRepo" and gated.value.status_code == 403


async def test_a_hostile_listing_cannot_escape(hub: HubStub, client: HttpClient) -> None:
    for name in ("../evil.sh", "/etc/passwd", "a//b", "a/./b", "x\\y"):
        hub.add("org/evil", {"main": {"ok.txt": HubFile(b"ok"), name: HubFile(b"boom")}})
        with pytest.raises(StorageError) as caught:
            await importer(hub, client)(source("org/evil")).walk("")
        assert caught.value.code == "UnsafePath", name


async def test_bad_requests(hub: HubStub, client: HttpClient) -> None:
    make = importer(hub, client)
    with pytest.raises(InvalidPath):
        make(source("org/model", files=["../x"]))
    with pytest.raises(BadRequest):
        make(source("../x"))


async def test_a_run_downloads_the_commit_its_plan_recorded(
    tmp_path: Path, hub: HubStub, client: HttpClient
) -> None:
    """The plan records the listed commit in the job's source; a repo made from that
    source (as the runner makes it, in this daemon or after a restart: a fresh
    importer) lists and reads that commit although the branch moved."""
    commits = populate(hub)
    where = Locations(
        [LocalStorage("local-0", tmp_path)], importers={"huggingface": importer(hub, client)}
    )
    body = {
        "source": {"type": "huggingface", "repo": "org/model", "files": ["config.json"]},
        "destination": {"type": "local", "locationId": "local-0", "path": "m"},
    }
    planned = await plan(msgspec.convert(body, TransferSpec), where)
    recorded = planned.spec.to_json()["source"]
    assert recorded["commit"] == commits["main"] and recorded["revision"] == "main"
    hub.repos[("model", "org/model")].revisions["main"] = commits["v1"]  # the branch moves
    restarted = importer(hub, client)(msgspec.convert(recorded, HuggingFaceSource))
    assert await restarted.commit() == commits["main"]
    assert await read(restarted, "config.json") == MODEL_MAIN["config.json"].content
    assert [e.path for e in await restarted.walk("")] == ["config.json"]  # listed at the commit
    assert f"/revision/{commits['main']}" in hub.requests("GET")[-1].target
    # Without a recorded commit the branch is resolved anew.
    assert await importer(hub, client)(source("org/model")).commit() == commits["v1"]


def test_a_request_cannot_record_a_malformed_commit() -> None:
    with pytest.raises(msgspec.ValidationError, match="commit"):
        msgspec.convert({"repo": "org/model", "commit": "main"}, HuggingFaceSource)
