"""The default address policy through a real ``streamer serve``: imports reach only
public addresses; the configured Hub endpoint is trusted, its redirects are not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.node import Node, staging_files
from tests.support.hubstub import FileServer, HubStub

from .conftest import MODEL_MAIN, TOKEN, populate
from .test_imports_e2e import post


@dataclass
class Guarded:
    node: Node
    hub: HubStub
    files: FileServer
    commits: dict[str, str]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    hub = HubStub(token=TOKEN).start()
    commits = populate(hub)
    files = FileServer({"/a.bin": b"internal"}).start()
    node = Node(
        tmp_path_factory.mktemp("guard") / "home",
        config={"huggingface": {"endpoint": hub.url, "token": TOKEN}, "http": {"max_retries": 1}},
    )
    try:
        with node.serving():
            yield Guarded(node, hub, files, commits)
    finally:
        files.stop()
        hub.stop()


def jobs(node: Node) -> list[object]:
    with node.client() as client:
        return client.get("/api/transfer").json()["jobs"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "10.20.30.40",
        "192.168.1.1",
        "100.64.0.1",
        "0x7f000001",
        "localhost",
    ],
)
def test_blocked_hosts_are_refused_at_post_with_no_job(guarded: Guarded, host: str) -> None:
    before = len(jobs(guarded.node))
    url = f"http://{host}:{guarded.files.port}/a.bin"
    status, body = post(guarded.node, {"type": "url", "urls": [url]}, "/blocked")
    assert (status, body["error"]) == (400, "blocked_address"), body
    assert "http.allow_private_networks" in body["message"]
    assert len(jobs(guarded.node)) == before
    assert guarded.files.requests() == []
    assert not (guarded.node.data / "blocked").exists()


def test_a_redirect_from_the_trusted_hub_to_a_blocked_address_fails_at_post(
    guarded: Guarded,
) -> None:
    """The first hop (the Hub endpoint) is trusted; its redirect to the CDN on
    127.0.0.1 is not: the URL import's probe refuses it, no job is made."""
    commit = guarded.commits["main"]
    url = f"{guarded.hub.url}/org/model/resolve/{commit}/unet/model.safetensors"
    before = len(jobs(guarded.node))
    status, body = post(guarded.node, {"type": "url", "urls": [url]}, "/via-hub")
    assert (status, body["error"]) == (400, "blocked_address"), body
    assert f"127.0.0.1:{guarded.hub.cdn.port}" in body["message"]
    assert len(jobs(guarded.node)) == before
    assert guarded.hub.cdn.requests() == []


def test_hub_files_redirected_to_a_blocked_cdn_fail_in_the_job(guarded: Guarded) -> None:
    """Listing from the trusted endpoint works; the LFS file's redirect to the CDN
    (127.0.0.1) fails that file with ``blocked_address``; git files land."""
    source = {"type": "huggingface", "repo": "org/model"}
    status, created = post(guarded.node, source, "/model")
    assert status == 200, created
    job = guarded.node.wait(created["jobId"])
    assert job["filesCompleted"] == len(MODEL_MAIN) - 1 and job["filesFailed"] == 1, job
    (error,) = job["errors"]
    assert error["file"] == "unet/model.safetensors" and error["error"] == "blocked_address"
    assert f"127.0.0.1:{guarded.hub.cdn.port}" in error["message"]
    target = guarded.node.data / "model"
    assert not (target / "unet/model.safetensors").exists()
    assert (target / "config.json").read_bytes() == MODEL_MAIN["config.json"].content
    assert guarded.hub.cdn.requests() == []
    assert staging_files(guarded.node.data) == []
