"""Cancel, SSE progress and the shared ``max_concurrent`` limit for every kind of job
that is not a local copy or an s3-upload (those have their own tests):
``local-upload``, ``huggingface`` and ``url`` imports (into local and S3 storage)
and ``s3-download``, against one real ``streamer serve``.

Each kind has a starter that launches a job whose big file stalls part way until
the test releases it: the import stubs' ``stall_after``, the fault proxy in front
of moto (the node's S3 endpoint) holding one ranged GET, or an upload body that
waits. "Mid-file" is then a state the test waits for, not a race it hopes to win.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.faultproxy import ProxyThread, RequestHead, start_in_thread
from tests.support.hubstub import FileServer, HubFile, HubStub
from tests.support.moto import MotoServer

from .node import Node
from .test_s3_api import s3_config

MiB = 1 << 20
PART = 5 * MiB  # the node's S3 part (and range) size
HELD_SIZE = 12 * MiB  # the file in flight: three S3 parts or ranges
STALL_AT = 7 * MiB  # where imports and uploads stall: one S3 part is uploaded by then
SMALL = b"a small file that lands at once\n" * 64


@dataclass
class World:
    node: Node
    hub: HubStub
    files: FileServer
    proxy: ProxyThread  # in front of moto: the node's S3 endpoint
    s3: Any  # boto3, straight to moto
    bucket: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer) -> Iterator[World]:
    hub = HubStub().start()
    files = FileServer().start()
    proxy = start_in_thread(moto_server.port)
    s3 = moto_server.boto("s3")
    bucket = f"kinds-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    config = {
        **s3_config(replace(moto_server, port=proxy.port)),
        "huggingface": {"endpoint": hub.url},
        "http": {"allow_private_networks": True},  # the stubs listen on 127.0.0.1
    }
    node = Node(tmp_path_factory.mktemp("kinds") / "home", config)
    try:
        with node.serving():
            yield World(node, hub, files, proxy, s3, bucket)
    finally:
        proxy.stop()
        files.stop()
        hub.stop()


# -- a job held mid-file -------------------------------------------------------


@dataclass
class Held:
    """A started job whose big file (``held``) stalls part way until ``release`` is set.

    ``done`` are the files that land before the stall (``in_job`` of them belong to
    the job); ``listing`` reads every name under the destination, hidden ones too.
    """

    job_id: str
    held: str
    content: bytes
    done: dict[str, bytes]
    in_job: int
    release: threading.Event
    listing: Callable[[], dict[str, bytes]]
    s3_prefix: str | None = None  # the destination prefix, for an S3 destination
    threads: list[threading.Thread] = field(default_factory=list)
    answers: list[int | str] = field(default_factory=list)  # an upload's HTTP answer

    def close(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(timeout=30)


Starter = Callable[[World, str, bool], Held]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_listing(root: Path) -> Callable[[], dict[str, bytes]]:
    def listing() -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

    return listing


def s3_listing(world: World, prefix: str) -> Callable[[], dict[str, bytes]]:
    def listing() -> dict[str, bytes]:
        found = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"{prefix}/")
        return {
            o["Key"][len(prefix) + 1 :]: world.s3.get_object(Bucket=world.bucket, Key=o["Key"])[
                "Body"
            ].read()
            for o in found.get("Contents", [])
        }

    return listing


def destination(
    world: World, tag: str, *, s3: bool
) -> tuple[dict[str, str], Callable[[], dict[str, bytes]], str | None]:
    """A fresh destination of a transfer: its body, its listing, its S3 prefix (if S3)."""
    if s3:
        body = {"type": "s3", "locationId": world.bucket, "path": tag}
        return body, s3_listing(world, tag), tag
    return (
        {"type": "local", "locationId": "local-0", "path": f"/{tag}"},
        local_listing(world.node.data / tag),
        None,
    )


def post_transfer(world: World, source: dict[str, Any], dest: dict[str, str]) -> str:
    body: dict[str, Any] = {
        "source": source,
        "destination": dest,
        "conflictResolution": "overwrite",
    }
    if source["type"] in ("s3", "local"):
        body["items"] = [{"path": "", "type": "directory"}]
    with world.node.client() as client:
        response = client.post("/api/transfer", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["jobId"])


def held_event(stall: bool) -> threading.Event:
    release = threading.Event()
    if not stall:
        release.set()
    return release


def start_upload(world: World, tag: str, stall: bool) -> Held:
    """``PUT /api/upload``: the body sends ``STALL_AT`` bytes, then waits. An upload
    has one file; what was at the destination before must stay."""
    root = world.node.data / tag
    root.mkdir()
    (root / "done.txt").write_bytes(SMALL)
    content, release = os.urandom(HELD_SIZE), held_event(stall)
    held = Held("", "held.bin", content, {"done.txt": SMALL}, 0, release, local_listing(root))

    def body() -> Iterator[bytes]:
        for offset in range(0, len(content), MiB):
            if offset == STALL_AT:
                release.wait(30)
            yield content[offset : offset + MiB]

    def put() -> None:
        try:
            with world.node.client() as client:
                answer = client.put(
                    f"/api/upload/local-0/{tag}/held.bin",
                    content=body(),
                    headers={"Content-Length": str(len(content))},
                )
            held.answers.append(answer.status_code)
            held.answers.append(answer.json().get("error", ""))
        except httpx.HTTPError as exc:
            held.answers.append(type(exc).__name__)

    before = {j["id"] for j in jobs(world.node)}
    thread = threading.Thread(target=put, daemon=True)
    thread.start()
    held.threads.append(thread)
    held.job_id = poll(
        lambda: next(
            (
                j["id"]
                for j in jobs(world.node)
                if j["id"] not in before and j["type"] == "local-upload"
            ),
            None,
        )
    )
    return held


def start_huggingface(world: World, tag: str, stall: bool, *, s3: bool = False) -> Held:
    """A Hub repository of a git file and an LFS file whose CDN download stalls."""
    content, release = os.urandom(HELD_SIZE), held_event(stall)
    repo = f"org/{tag}"
    world.hub.add(
        repo, {"main": {"small.json": HubFile(SMALL), "weights.bin": HubFile(content, lfs=True)}}
    )
    lfs = f"/lfs/{sha256(content)}"
    world.hub.cdn.held[lfs] = release
    world.hub.cdn.stall_after[lfs] = STALL_AT
    dest, listing, prefix = destination(world, tag, s3=s3)
    job_id = post_transfer(world, {"type": "huggingface", "repo": repo}, dest)
    return Held(job_id, "weights.bin", content, {"small.json": SMALL}, 1, release, listing, prefix)


def start_url(world: World, tag: str, stall: bool, *, s3: bool = False) -> Held:
    """Two URLs of the file server; the big one's GET stalls."""
    content, release = os.urandom(HELD_SIZE), held_event(stall)
    small, big = f"/{tag}/small.txt", f"/{tag}/big.bin"
    world.files.files.update({small: SMALL, big: content})
    world.files.held[big] = release
    world.files.stall_after[big] = STALL_AT
    dest, listing, prefix = destination(world, tag, s3=s3)
    urls = [f"{world.files.url}{small}", f"{world.files.url}{big}"]
    job_id = post_transfer(world, {"type": "url", "urls": urls}, dest)
    return Held(job_id, "big.bin", content, {"small.txt": SMALL}, 1, release, listing, prefix)


def start_s3_download(world: World, tag: str, stall: bool) -> Held:
    """Two objects; the second ranged GET of the big one stalls in the proxy (the
    first range has landed and counted by then)."""
    content, release = os.urandom(HELD_SIZE), held_event(stall)
    for name, data in (("small.txt", SMALL), ("big.bin", content)):
        world.s3.put_object(Bucket=world.bucket, Key=f"src-{tag}/{name}", Body=data)

    def second_range(head: RequestHead) -> bool:
        return (
            head.method == "GET"
            and f"src-{tag}/big.bin" in head.target
            and head.headers.get("range", "").startswith(f"bytes={PART}-")
        )

    if stall:
        world.proxy.proxy.stall_after(MiB, release=release, when=second_range)
    dest, listing, _ = destination(world, tag, s3=False)
    source = {"type": "s3", "locationId": world.bucket, "path": f"src-{tag}"}
    job_id = post_transfer(world, source, dest)
    return Held(job_id, "big.bin", content, {"small.txt": SMALL}, 1, release, listing)


def start_huggingface_into_s3(world: World, tag: str, stall: bool) -> Held:
    return start_huggingface(world, tag, stall, s3=True)


def start_url_into_s3(world: World, tag: str, stall: bool) -> Held:
    return start_url(world, tag, stall, s3=True)


KINDS: dict[str, Starter] = {
    "local-upload": start_upload,
    "huggingface": start_huggingface,
    "url": start_url,
    "s3-download": start_s3_download,
}
INTO_S3: dict[str, Starter] = {
    "huggingface-into-s3": start_huggingface_into_s3,
    "url-into-s3": start_url_into_s3,
}


@pytest.fixture
def start(world: World) -> Iterator[Callable[[Starter, bool], Held]]:
    """Start jobs with a starter; every stall is released and every thread joined after."""
    started: list[Held] = []

    def run(starter: Starter, stall: bool = True) -> Held:
        held = starter(world, f"k{uuid.uuid4().hex[:12]}", stall)
        started.append(held)
        return held

    yield run
    for held in started:
        held.close()
        with world.node.client() as client:
            client.post(f"/api/transfer/cancel/{held.job_id}")  # 409 once finished: fine
    world.proxy.proxy.clear_faults()


# -- helpers -------------------------------------------------------------------


def jobs(node: Node) -> list[dict[str, Any]]:
    with node.client() as client:
        return client.get("/api/transfer").json()["jobs"]  # type: ignore[no-any-return]


def poll(get: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := get()) is not None:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def multipart_uploads(world: World, prefix: str) -> list[Any]:
    found = world.s3.list_multipart_uploads(Bucket=world.bucket, Prefix=f"{prefix}/")
    return found.get("Uploads", [])  # type: ignore[no-any-return]


def wait_mid_file(world: World, held: Held) -> dict[str, Any]:
    """Wait until the finished files landed and the held file is part way (for an S3
    destination: its multipart upload has begun)."""
    done_bytes = sum(len(data) for data in list(held.done.values())[: held.in_job])
    job = world.node.wait(
        held.job_id,
        until=lambda j: j["filesCompleted"] == held.in_job and j["bytesTransferred"] > done_bytes,
        timeout=10,
    )
    assert job["status"] == "in_progress" and job["bytesTransferred"] < job["totalBytes"], job
    if held.s3_prefix is not None:
        poll(lambda: multipart_uploads(world, held.s3_prefix or "") or None)
    return job


def set_max_concurrent(node: Node, value: int) -> int:
    with node.client() as client:
        before = client.get("/api/settings/max-concurrent-transfers").json()
        answer = client.put(
            "/api/settings/max-concurrent-transfers", json={"maxConcurrentTransfers": value}
        )
    assert answer.status_code == 200, answer.text
    return int(before["maxConcurrentTransfers"])


# -- the tests ------------------------------------------------------------------


@pytest.mark.parametrize("starter", [*KINDS.values(), *INTO_S3.values()], ids=[*KINDS, *INTO_S3])
def test_cancel_mid_file_lands_nothing_half_written_and_keeps_finished_files(
    world: World, start: Callable[[Starter, bool], Held], starter: Starter
) -> None:
    held = start(starter, True)
    wait_mid_file(world, held)
    with world.node.client() as client:
        assert client.post(f"/api/transfer/cancel/{held.job_id}").status_code == 200
        job = world.node.wait(held.job_id, timeout=10)
        listed = client.get(f"/api/transfer/{held.job_id}/files").json()["files"]
    assert job["status"] == "cancelled", job
    held_file = next(f for f in listed if f["path"].endswith(held.held))
    assert held_file["status"] == "cancelled"
    assert [f["status"] for f in listed if f is not held_file] == ["completed"] * held.in_job
    assert held.listing() == held.done  # no held file, no staging or temp name
    if held.s3_prefix is not None:
        assert multipart_uploads(world, held.s3_prefix) == []
    if held.threads:  # an upload: its request answers that it was cancelled
        held.release.set()
        held.threads[0].join(timeout=10)
        assert held.answers == [409, "cancelled"]


@pytest.mark.parametrize("starter", KINDS.values(), ids=KINDS)
def test_sse_reports_growing_progress_then_complete(
    world: World, start: Callable[[Starter, bool], Held], starter: Starter
) -> None:
    held = start(starter, True)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    for event in world.node.events(held.job_id):
        events.append(event)
        job = event["job"]
        if event["type"] == "progress" and 0 < job["bytesTransferred"] < job["totalBytes"]:
            held.release.set()  # seen mid-file: let it finish
        assert time.monotonic() < deadline, events[-3:]
    assert events[-1]["type"] == "complete" and events[-1]["job"]["status"] == "completed"
    total = events[-1]["job"]["totalBytes"]
    assert events[-1]["job"]["bytesTransferred"] == total > 0
    progress = [e["job"]["bytesTransferred"] for e in events[:-1]]
    assert all(e["type"] == "progress" for e in events[:-1])
    assert any(0 < loaded < total for loaded in progress), progress
    assert progress == sorted(progress)  # never goes back
    assert held.listing() == {**held.done, held.held: held.content}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("local-upload", "huggingface"),
        ("huggingface", "url"),
        ("url", "s3-download"),
        ("s3-download", "local-upload"),
    ],
)
def test_max_concurrent_is_shared_across_kinds(
    world: World, start: Callable[[Starter, bool], Held], first: str, second: str
) -> None:
    before = set_max_concurrent(world.node, 1)
    try:
        running = start(KINDS[first], True)
        wait_mid_file(world, running)
        queued = start(KINDS[second], False)  # would run straight through if let
        time.sleep(0.5)
        job = world.node.job(queued.job_id)
        assert (job["status"], job["bytesTransferred"]) == ("pending", 0), job
        assert world.node.job(running.job_id)["status"] == "in_progress"
        running.release.set()
        ran = world.node.wait(running.job_id, timeout=10)
        waited = world.node.wait(queued.job_id, timeout=10)
        assert ran["status"] == waited["status"] == "completed", (ran, waited)
        assert waited["startTime"] >= ran["endTime"]
        assert queued.listing() == {**queued.done, queued.held: queued.content}
    finally:
        set_max_concurrent(world.node, before)
