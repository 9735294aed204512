"""A Hugging Face job killed mid-transfer resumes, after a restart, from the commit it
was planned at, although its branch moved meanwhile (a real ``streamer serve``)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.node import Node, staging_files
from tests.support.hubstub import HubFile, HubStub

from .conftest import MODEL_MAIN, TOKEN, WEIGHTS, populate
from .test_imports_e2e import post

STALL_AT = 1_500_000  # bytes of the LFS file the CDN sends before stalling
HELD = "unet/config.json"  # a git file (no hash to check) whose resolve waits

#: The branch after it moved: every file changed, each of the same size.
MOVED = {
    "config.json": HubFile(b'{"model_type": "new!"}'),
    "README.md": HubFile(b"# b model\n"),
    "unet/model.safetensors": HubFile(os.urandom(len(WEIGHTS)), lfs=True),
    "unet/config.json": HubFile(b"[]"),
}


def test_kill_9_then_a_moved_branch_cannot_mix_commits_into_the_job(tmp_path: Path) -> None:
    assert {p: len(f.content) for p, f in MOVED.items()} == {
        p: len(f.content) for p, f in MODEL_MAIN.items()
    }
    hub = HubStub(token=TOKEN)
    commits = populate(hub)
    weights = f"/lfs/{MODEL_MAIN['unet/model.safetensors'].declared_sha256}"
    hub.cdn.stall_after[weights] = STALL_AT
    hub.on_resolve = lambda name: hub.cdn.release.wait(60) if name == HELD else None
    hub.start()
    node = Node(
        tmp_path / "home",
        config={
            "huggingface": {"endpoint": hub.url, "token": TOKEN},
            "http": {"allow_private_networks": True},  # the CDN is on 127.0.0.1
        },
    )
    try:
        node.start()
        status, created = post(node, {"type": "huggingface", "repo": "org/model"}, "/m")
        assert status == 200, created
        job_id = created["jobId"]
        # Two small files done, the LFS file half-way (its bytes are the only big ones):
        node.wait(
            job_id, until=lambda j: j["filesCompleted"] == 2 and j["bytesTransferred"] >= 1 << 20
        )
        node.kill()
        assert not (node.data / "m" / "unet" / "model.safetensors").exists()
        moved = hub.move("org/model", "main", MOVED)
        assert moved != commits["main"]
        hub.on_resolve = None
        hub.cdn.stall_after.clear()
        hub.cdn.release.set()
        seen = len(hub.requests())

        node.start()
        job = node.wait(job_id)
        assert job["status"] == "completed" and job["filesCompleted"] == 4, job
        assert job["errors"] == [] and job["source"]["commit"] == commits["main"]
        for name, file in MODEL_MAIN.items():
            assert (node.data / "m" / name).read_bytes() == file.content, name
        after = [r.target for r in hub.requests()[seen:]]
        assert after and all(f"/resolve/{commits['main']}/" in t for t in after), after
        assert staging_files(node.data) == []
        assert node.stop() == 0
    finally:
        hub.cdn.release.set()
        if node.alive:
            node.kill()
        hub.stop()
