"""``/api/worker`` (seed 004) against a real ``streamer serve`` process."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from tests.e2e.node import Node, staging_files
from tests.support.faultproxy import start_in_thread

MIB = 1 << 20
WORKER_TOKEN = "worker-token-0123456789abcdef"
IDENTITY = {"Accept-Encoding": "identity"}  # httpx asks for zstd when it can decode it


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    server = Node(
        tmp_path / "home", config={"worker": {"tokens": [WORKER_TOKEN], "sweep_interval": 0.2}}
    ).start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(node: Node, source: str, output: str, **extra: Any) -> dict[str, Any]:
    with node.client() as client:
        answer = client.post(
            "/api/worker/jobs",
            json={
                "source": {"locationId": "local-0", "path": source},
                "output": {"locationId": "local-0", "path": output},
                **extra,
            },
        )
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def claim(node: Node, worker_id: str = "w1") -> tuple[dict[str, Any], str]:
    with node.client(WORKER_TOKEN) as client:
        answer = client.post("/api/worker/jobs/claim", json={"workerId": worker_id})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["job"], body["token"]


def job_of(node: Node, job_id: str) -> dict[str, Any]:
    with node.client(WORKER_TOKEN) as client:
        answer = client.get(f"/api/worker/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def worker(node: Node, token: str) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=30, headers={**bearer(token), **IDENTITY})


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_full_cycle_download_and_upload(node: Node) -> None:
    data = os.urandom(3 * MIB + 123)
    (node.data / "in").mkdir()
    (node.data / "in" / "movie.mp4").write_bytes(data)
    made = create(node, "in/movie.mp4", "out/movie.mkv", metadata={"preset": "fast"})
    assert made["status"] == "pending" and made["metadata"] == {"preset": "fast"}
    assert made["source"]["locationId"] == "local-0" and made["attempts"] == 0
    wait_for(lambda: job_of(node, made["id"])["source"]["sha256"] == sha(data))

    job, token = claim(node)
    assert job["id"] == made["id"] and job["status"] == "processing"
    assert job["workerId"] == "w1" and job["attempts"] == 1 and job["leaseExpiresAt"]
    jid = job["id"]
    with worker(node, token) as w:
        url = f"/api/worker/download-video?job_id={jid}"
        whole = w.get(url)
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["Content-Length"] == str(len(data))
        assert whole.headers["Content-Type"] == "video/mp4"
        assert whole.headers["Content-Disposition"] == 'attachment; filename="movie.mp4"'
        assert whole.headers["X-Checksum-Sha256"] == sha(data)
        assert whole.headers["Accept-Ranges"] == "bytes"
        etag = whole.headers["ETag"]
        head = w.head(url)
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))

        part = w.get(url, headers={"Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == data[1000:]
        assert part.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        assert w.get(url, headers={"Range": "bytes=1000-", "If-Range": etag}).status_code == 206
        stale = w.get(url, headers={"Range": "bytes=1000-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == data
        outside = w.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert outside.status_code == 416

        with w.stream("GET", url, headers={"Accept-Encoding": "zstd"}) as packed:
            assert packed.headers["Content-Encoding"] == "zstd"
            wire = b"".join(packed.iter_raw())
        assert zstandard.ZstdDecompressor().decompressobj().decompress(wire) == data

        assert w.post(f"/api/worker/jobs/{jid}/heartbeat").json()["status"] == "processing"

        result = os.urandom(2 * MIB + 5)
        done = w.post(
            f"/api/worker/upload-video?job_id={jid}",
            content=result,
            headers={"X-Checksum-Sha256": sha(result)},
        )
    assert done.status_code == 201, done.text
    assert done.json() == {
        "size": len(result),
        "sha256": sha(result),
        "jobId": jid,
        "status": "completed",
    }
    assert (node.data / "out" / "movie.mkv").read_bytes() == result
    final = job_of(node, jid)
    assert final["status"] == "completed" and final["leaseExpiresAt"] is None
    assert final["result"] == {"size": len(result), "sha256": sha(result)}
    assert not staging_files(node.data)
    with worker(node, token) as w:  # the job is done: its token opens nothing any more
        again = w.get(f"/api/worker/download-video?job_id={jid}")
    assert again.status_code == 400 and again.json()["error"] == "job_not_processing"


@pytest.mark.parametrize("field", ["video", "file"])
def test_multipart_upload_with_seed_field_names(node: Node, field: str) -> None:
    (node.data / "src.bin").write_bytes(b"source")
    job = create(node, "src.bin", f"{field}.out")
    _, token = claim(node)
    result = os.urandom(MIB + 3)
    with worker(node, token) as w:
        done = w.post(
            "/api/worker/upload-video",
            params={"job_id": job["id"]},
            files={field: ("converted.mp4", result, "video/mp4")},
            data={"note": "ignored"},
        )
    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == sha(result)
    assert (node.data / f"{field}.out").read_bytes() == result
    assert job_of(node, job["id"])["status"] == "completed"


def test_zstd_upload(node: Node) -> None:
    (node.data / "src.bin").write_bytes(b"source")
    job = create(node, "src.bin", "z.out")
    _, token = claim(node)
    result = b"abc" * 300_000
    with worker(node, token) as w:
        done = w.post(
            f"/api/worker/upload-video?job_id={job['id']}",
            content=zstandard.ZstdCompressor().compress(result),
            headers={"Content-Encoding": "zstd", "X-Checksum-Sha256": sha(result)},
        )
    assert done.status_code == 201, done.text
    assert (node.data / "z.out").read_bytes() == result


def test_bad_checksum_writes_nothing(node: Node) -> None:
    (node.data / "src.bin").write_bytes(b"source")
    job = create(node, "src.bin", "out/result.bin")
    _, token = claim(node)
    with worker(node, token) as w:
        bad = w.post(
            f"/api/worker/upload-video?job_id={job['id']}",
            content=b"x" * 100_000,
            headers={"X-Checksum-Sha256": "0" * 64},
        )
        assert bad.status_code == 400 and bad.json()["error"] == "checksum_mismatch"
        assert not (node.data / "out" / "result.bin").exists()
        assert not staging_files(node.data)
        assert job_of(node, job["id"])["status"] == "processing"  # the worker may try again
        good = w.post(f"/api/worker/upload-video?job_id={job['id']}", content=b"y" * 10)
    assert good.status_code == 201
    assert (node.data / "out" / "result.bin").read_bytes() == b"y" * 10


def test_upload_for_a_job_not_processing_writes_nothing(node: Node) -> None:
    (node.data / "src.bin").write_bytes(b"source")
    job = create(node, "src.bin", "never.bin")
    with node.client() as operator:  # the API token may act, but the job is pending
        answer = operator.post(f"/api/worker/upload-video?job_id={job['id']}", content=b"data")
        assert answer.status_code == 400 and answer.json()["error"] == "job_not_processing"
        download = operator.get(f"/api/worker/download-video?job_id={job['id']}")
        assert download.status_code == 400
    assert not (node.data / "never.bin").exists()
    assert not staging_files(node.data)


def test_upload_resumes_with_head_and_patch(node: Node) -> None:
    (node.data / "src.bin").write_bytes(b"source")
    job = create(node, "src.bin", "big/result.bin")
    _, token = claim(node)
    data = os.urandom(5 * MIB + 77)
    url = f"/api/worker/upload-video?job_id={job['id']}"
    proxy = start_in_thread(int(node.url.rsplit(":", 1)[1]))
    with worker(node, token) as w:
        try:
            # Announce the whole file, send 3 MiB + 10 bytes through the proxy, wait until
            # the server has staged some of them, then cut the connection mid-body.
            with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
                head = (
                    f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {len(data)}\r\nX-Checksum-Sha256: {sha(data)}\r\n\r\n"
                )
                sock.sendall(head.encode() + data[: 3 * MIB + 10])
                wait_for(lambda: int(w.head(url).headers["Upload-Offset"]) >= 2 * MIB)
        finally:
            proxy.stop()
        probe = w.head(url)
        assert probe.headers["Upload-Length"] == str(len(data))
        offset = int(probe.headers["Upload-Offset"])
        assert 2 * MIB <= offset <= 3 * MIB + 10  # what arrived is kept
        assert not (node.data / "big" / "result.bin").exists()

        stale = w.patch(url, headers={"Upload-Offset": "0"}, content=data)
        assert stale.status_code == 409 and stale.json()["error"] == "offset_mismatch"
        done = w.patch(url, headers={"Upload-Offset": str(offset)}, content=data[offset:])
    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == sha(data)
    assert (node.data / "big" / "result.bin").read_bytes() == data
    assert not staging_files(node.data)


def test_upload_beyond_its_length_is_refused(node: Node) -> None:
    (node.data / "src.bin").write_bytes(b"source")
    job = create(node, "src.bin", "r.bin")
    _, token = claim(node)
    with worker(node, token) as w:
        answer = w.post(
            f"/api/worker/upload-video?job_id={job['id']}",
            content=b"z" * 1000,
            headers={"Upload-Length": "10"},
        )
    assert answer.status_code == 413 and answer.json()["error"] == "upload_too_long"
    assert not (node.data / "r.bin").exists()


def test_credentials(node: Node) -> None:
    (node.data / "a.bin").write_bytes(b"a" * 100)
    (node.data / "b.bin").write_bytes(b"b" * 100)
    first = create(node, "a.bin", "a.out")
    second = create(node, "b.bin", "b.out")
    with node.client("wrong-worker-token-000000") as intruder:
        assert intruder.post("/api/worker/jobs/claim", json={"workerId": "x"}).status_code == 401
        assert intruder.get("/api/worker/jobs").status_code == 401
    with node.client(WORKER_TOKEN) as w:  # a worker token cannot create jobs
        assert w.post("/api/worker/jobs", json={}).status_code == 401
        listed = w.get("/api/worker/jobs", params={"status": "pending"}).json()["jobs"]
        assert [j["id"] for j in listed] == [first["id"], second["id"]]  # oldest first
    job_a, token_a = claim(node, "wa")
    job_b, token_b = claim(node, "wb")
    assert (job_a["id"], job_b["id"]) == (first["id"], second["id"])
    with worker(node, token_b) as wb:  # worker b's token does not open worker a's job
        url = f"/api/worker/download-video?job_id={job_a['id']}"
        assert wb.get(url).status_code == 401
        assert wb.post(f"/api/worker/upload-video?job_id={job_a['id']}").status_code == 401
        assert wb.post(f"/api/worker/jobs/{job_a['id']}/heartbeat").status_code == 401
    with httpx.Client(base_url=node.url, headers=IDENTITY) as anonymous:
        url = f"/api/worker/download-video?job_id={job_a['id']}"
        assert anonymous.get(url).status_code == 401
        query = {"job_id": job_a["id"], "token": token_a}
        assert anonymous.get("/api/worker/download-video", params=query).content == b"a" * 100
        query["token"] = "not-a-jwt"
        assert anonymous.get("/api/worker/download-video", params=query).status_code == 401
    with node.client() as operator:  # the API token opens every job route
        assert operator.post(f"/api/worker/jobs/{job_a['id']}/heartbeat").status_code == 200
        assert operator.get("/api/worker/download-video?job_id=nope").status_code == 404
        assert operator.get("/api/worker/download-video").status_code == 400


def test_lease_lost_token_is_refused_and_release(node: Node) -> None:
    (node.data / "a.bin").write_bytes(b"a" * 100)
    job = create(node, "a.bin", "a.out")
    _, first_token = claim(node, "w1")
    with worker(node, first_token) as w1:
        released = w1.post(f"/api/worker/jobs/{job['id']}/release")
        assert released.status_code == 200
        assert released.json()["status"] == "pending" and released.json()["attempts"] == 0
    _, second_token = claim(node, "w2")
    with worker(node, first_token) as w1:
        late = w1.get(f"/api/worker/download-video?job_id={job['id']}")
        assert late.status_code == 409 and late.json()["error"] == "lease_lost"
    with worker(node, second_token) as w2:
        failed = w2.post(f"/api/worker/jobs/{job['id']}/fail", json={"message": "boom"})
    assert failed.json()["status"] == "failed" and failed.json()["error"] == "boom"


def test_missing_source_and_hostile_paths(node: Node) -> None:
    outside = node.home / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (node.data / "escape").symlink_to(outside)
    (node.data / "x.bin").write_bytes(b"x")
    with node.client() as client:

        def attempt(source: str, output: str) -> httpx.Response:
            return client.post(
                "/api/worker/jobs",
                json={
                    "source": {"locationId": "local-0", "path": source},
                    "output": {"locationId": "local-0", "path": output},
                },
            )

        for source, output in [
            ("../home/config.yml", "o"),
            ("/etc/passwd", "o"),
            ("escape/secret.txt", "o"),
            ("x.bin", "../o"),
            ("x.bin", "/tmp/o"),
            ("x.bin", "escape/o"),
            ("missing.bin", "o"),
        ]:
            answer = attempt(source, output)
            assert answer.status_code == 400, (source, output, answer.text)
        unknown = client.post(
            "/api/worker/jobs",
            json={
                "source": {"locationId": "nope", "path": "x.bin"},
                "output": {"locationId": "local-0", "path": "o"},
            },
        )
        assert unknown.status_code == 400
        assert client.get("/api/worker/jobs/nope").status_code == 404
    job = create(node, "x.bin", "o")
    _, token = claim(node)
    (node.data / "x.bin").unlink()
    with worker(node, token) as w:
        gone = w.get(f"/api/worker/download-video?job_id={job['id']}")
    assert gone.status_code == 404
    assert not (outside / "o").exists()


def test_expired_lease_returns_the_job_then_fails_it(tmp_path: Path) -> None:
    node = Node(
        tmp_path / "home",
        config={
            "worker": {
                "tokens": [WORKER_TOKEN],
                "lease_seconds": 0.5,
                "max_attempts": 2,
                "sweep_interval": 0.1,
            }
        },
    ).start()
    try:
        (node.data / "a.bin").write_bytes(b"a")
        job = create(node, "a.bin", "a.out")
        claim(node, "w1")
        wait_for(lambda: job_of(node, job["id"])["status"] == "pending")
        assert job_of(node, job["id"])["attempts"] == 1
        claim(node, "w2")
        wait_for(lambda: job_of(node, job["id"])["status"] == "failed")
        final = job_of(node, job["id"])
        assert final["attempts"] == 2 and "lease expired" in final["error"]
        with node.client(WORKER_TOKEN) as w:
            assert w.post("/api/worker/jobs/claim", json={"workerId": "w3"}).status_code == 204
    finally:
        node.kill()


def test_claims_carry_the_time_limits_and_jobs_survive_a_restart(tmp_path: Path) -> None:
    limits = {"download_timeout": 120, "upload_timeout": 240, "command_timeout": 600}
    node = Node(tmp_path / "home", config={"worker": {"tokens": [WORKER_TOKEN], **limits}}).start()
    try:
        (node.data / "a.bin").write_bytes(b"a")
        processing = create(node, "a.bin", "a.out", metadata={"n": 1})
        pending = create(node, "a.bin", "b.out")
        with node.client(WORKER_TOKEN) as client:
            answer = client.post("/api/worker/jobs/claim", json={"workerId": "w1"}).json()
        assert answer["job"]["id"] == processing["id"]
        assert (answer["downloadTimeout"], answer["uploadTimeout"], answer["commandTimeout"]) == (
            120,
            240,
            600,
        )
        for made in (processing, pending):  # the sources' hashes are in: nothing changes now
            wait_for(lambda made=made: job_of(node, made["id"])["source"]["sha256"] is not None)
        with node.client(WORKER_TOKEN) as client:
            before = {j["id"]: j for j in client.get("/api/worker/jobs").json()["jobs"]}
        node.stop()
        node.start()
        with node.client(WORKER_TOKEN) as client:
            listed = client.get("/api/worker/jobs").json()["jobs"]
            assert client.get("/api/worker/jobs?status=pending").json()["jobs"] == [
                before[pending["id"]]
            ]
        assert {j["id"]: j for j in listed} == before  # every field as it was
        assert before[processing["id"]]["status"] == "processing"
        assert before[processing["id"]]["workerId"] == "w1"
        assert before[processing["id"]]["metadata"] == {"n": 1}
        assert before[pending["id"]]["status"] == "pending"
        with worker(node, answer["token"]) as w:  # the claim's job token still holds
            renewed = w.post(f"/api/worker/jobs/{processing['id']}/heartbeat")
        assert renewed.status_code == 200 and renewed.json()["status"] == "processing"
    finally:
        node.kill()
