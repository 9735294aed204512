"""The Transfer API of seed 000 against a real ``streamer serve`` process."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from .node import Node, sparse, staging_files, transfer_body, tree

FILE = {"path": "config.json", "type": "file"}
WEIGHTS = {"path": "weights/", "type": "directory"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_copies_files_and_directories_with_hashes_and_mtimes(node: Node) -> None:
    src = node.data / "src"
    tree(src, {"config.json": b"{}", "weights/a.bin": os.urandom(3 << 20), "weights/n/b": b""})
    os.utime(src / "config.json", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    created = node.transfer([FILE, WEIGHTS])
    assert set(created) == {"jobId", "status", "filesQueued", "estimatedBytes"}
    assert created["status"] == "pending" and created["filesQueued"] == 3
    assert created["estimatedBytes"] == 2 + (3 << 20)

    job = node.wait(created["jobId"])
    assert job["status"] == "completed" and job["errors"] == []
    assert job["filesCompleted"] == job["totalFiles"] == 3
    assert job["bytesTransferred"] == job["totalBytes"] == 2 + (3 << 20)
    assert isinstance(job["startTime"], int)
    dst = node.data / "dst"
    for name in ("config.json", "weights/a.bin", "weights/n/b"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    assert os.stat(dst / "config.json").st_mtime_ns == 1_500_000_000_000_000_000
    with node.client() as client:
        files = client.get(f"/api/transfer/{created['jobId']}/files").json()["files"]
    assert {f["path"]: f["sha256"] for f in files} == {
        f"src/{n}": sha256(src / n) for n in ("config.json", "weights/a.bin", "weights/n/b")
    }
    assert all(f["status"] == "completed" for f in files)
    assert staging_files(node.data) == []


def test_sse_stream_progress_then_complete_and_ticket_rules(node: Node) -> None:
    sparse(node.data / "src/big.bin", 256 << 20)
    job_id = node.transfer([{"path": "big.bin", "type": "file"}])["jobId"]
    events = list(node.events(job_id))
    assert events[-1]["type"] == "complete"
    assert events[-1]["job"]["status"] == "completed"
    assert all(e["type"] == "progress" for e in events[:-1])
    with_file = [e for e in events if "currentFile" in e]
    if with_file:  # a fast machine may finish before the first progress event
        assert set(with_file[0]["currentFile"]) == {"path", "loaded", "total", "status"}
    # A late subscriber gets the final event alone, and the stream ends.
    assert [e["type"] for e in node.events(job_id)] == ["complete"]

    with node.client() as client:
        ticket = client.post("/api/auth/sse-ticket", json={"resource": job_id}).json()["ticket"]
        anonymous = node.client(token=None)
        assert anonymous.get(f"/api/transfer/progress/{job_id}?ticket={ticket}x").status_code == 401
        other = node.transfer([{"path": "big.bin", "type": "file"}], destination="/o")["jobId"]
        assert anonymous.get(f"/api/transfer/progress/{other}?ticket={ticket}").status_code == 401
        ok = client.post("/api/auth/sse-ticket", json={"resource": job_id}).json()["ticket"]
        assert anonymous.get(f"/api/transfer/progress/{job_id}?ticket={ok}").status_code == 200
        reused = anonymous.get(f"/api/transfer/progress/{job_id}?ticket={ok}")
        assert reused.status_code == 401 and reused.json()["error"] == "invalid_ticket"
        assert anonymous.get(f"/api/transfer/progress/{job_id}").status_code == 401
        missing = client.post("/api/auth/sse-ticket", json={"resource": "transfer-nope"})
        assert missing.status_code == 404
        anonymous.close()
    assert "ticket=" not in node.log().replace("ticket=[redacted]", "")


def test_every_endpoint_requires_the_token(node: Node) -> None:
    calls = [
        ("POST", "/api/transfer"),
        ("GET", "/api/transfer"),
        ("GET", "/api/transfer/x"),
        ("GET", "/api/transfer/x/files"),
        ("POST", "/api/auth/sse-ticket"),
        ("POST", "/api/transfer/cancel/x"),
        ("POST", "/api/transfer/cleanup/x"),
        ("POST", "/api/transfer/check-conflicts"),
        ("PUT", "/api/settings/max-concurrent-transfers"),
    ]
    for token in (None, "wrong-token-wrong-token"):
        with node.client(token) as client:
            for method, path in calls:
                response = client.request(method, path, json={})
                assert response.status_code == 401, (method, path)
                assert response.json()["error"] == "unauthorized"


def test_check_conflicts_and_resolutions(node: Node) -> None:
    tree(node.data / "src", {"a.txt": b"new-a", "b.txt": b"new-b", "d/c.txt": b"new-c"})
    tree(node.data / "dst", {"a.txt": b"old-a", "d/c.txt": b"old-c"})
    items = [{"path": "a.txt", "type": "file"}, {"path": "b.txt", "type": "file"}]
    items.append({"path": "d", "type": "directory"})
    with node.client() as client:
        answer = client.post(
            "/api/transfer/check-conflicts", json=transfer_body(items, conflict=None)
        )
    assert answer.status_code == 200
    assert answer.json() == {
        "conflicts": ["src/a.txt", "src/d/c.txt"],
        "nonConflicting": ["src/b.txt"],
    }

    job = node.wait(node.transfer(items, conflict="skip")["jobId"])
    assert (job["status"], job["filesCompleted"], job["filesSkipped"]) == ("completed", 1, 2)
    assert (node.data / "dst/a.txt").read_bytes() == b"old-a"

    node.wait(node.transfer(items, conflict="rename")["jobId"])
    node.wait(node.transfer(items, conflict="rename")["jobId"])
    assert (node.data / "dst/a (1).txt").read_bytes() == b"new-a"
    assert (node.data / "dst/a (2).txt").read_bytes() == b"new-a"
    assert (node.data / "dst/d/c (2).txt").read_bytes() == b"new-c"
    assert (node.data / "dst/a.txt").read_bytes() == b"old-a"

    node.wait(node.transfer(items, conflict="overwrite")["jobId"])
    assert (node.data / "dst/a.txt").read_bytes() == b"new-a"
    assert (node.data / "dst/d/c.txt").read_bytes() == b"new-c"


def test_large_folder_warning(node: Node) -> None:
    tree(node.data / "src/many", {f"f{i:04}": b"x" for i in range(1001)})
    items = [{"path": "many", "type": "directory"}]
    with node.client() as client:
        answer = client.post("/api/transfer/check-conflicts", json=transfer_body(items)).json()
    assert answer["warning"]["type"] == "large_folder"
    assert answer["warning"]["fileCount"] == 1001 and answer["warning"]["totalSize"] == 1001
    assert "1001 files" in answer["warning"]["message"]
    assert len(answer["nonConflicting"]) == 1001


def test_partial_failure_completes_with_errors_total_failure_fails(node: Node) -> None:
    tree(node.data / "src", {"ok.txt": b"ok", "blocked.txt": b"x"})
    (node.data / "dst/blocked.txt").mkdir(parents=True)  # a directory in the way
    items = [{"path": "ok.txt", "type": "file"}, {"path": "blocked.txt", "type": "file"}]
    job = node.wait(node.transfer(items)["jobId"])
    assert job["status"] == "completed"
    assert [(e["file"], e["error"]) for e in job["errors"]] == [("src/blocked.txt", "EISDIR")]
    job = node.wait(node.transfer([items[1]])["jobId"])
    assert job["status"] == "failed" and job["errors"][0]["file"] == "src/blocked.txt"
    assert staging_files(node.data) == []


def test_cancel_mid_file_then_cleanup(node: Node) -> None:
    sparse(node.data / "src/huge.bin", 8 << 30)
    tree(node.data / "src", {"a-small.txt": b"small"})
    items = [{"path": "a-small.txt", "type": "file"}, {"path": "huge.bin", "type": "file"}]
    with node.client() as client:
        client.put("/api/settings/max-concurrent-transfers", json={"maxConcurrentTransfers": 1})
    job_id = node.transfer(items)["jobId"]
    node.wait(job_id, until=lambda j: j["bytesTransferred"] > 64 << 20)
    with node.client() as client:
        assert client.post(f"/api/transfer/cleanup/{job_id}").status_code == 409
        answer = client.post(f"/api/transfer/cancel/{job_id}")
        assert answer.status_code == 200
        assert set(answer.json()) == {"message", "jobId", "filesCompleted", "totalFiles"}
        assert answer.json()["jobId"] == job_id and answer.json()["totalFiles"] == 2
        job = node.wait(job_id, timeout=10)
        assert job["status"] == "cancelled"
        files = {
            f["path"]: f["status"]
            for f in client.get(f"/api/transfer/{job_id}/files").json()["files"]
        }
        assert files == {"src/a-small.txt": "completed", "src/huge.bin": "cancelled"}
        assert not (node.data / "dst/huge.bin").exists()
        assert (node.data / "dst/a-small.txt").read_bytes() == b"small"
        assert staging_files(node.data) == []
        assert client.post(f"/api/transfer/cancel/{job_id}").status_code == 409
        assert client.post(f"/api/transfer/cleanup/{job_id}").json() == {
            "message": "Transfer job cleaned up",
            "jobId": job_id,
        }
        assert client.get(f"/api/transfer/{job_id}").status_code == 404


def test_concurrency_limit_queues_jobs_and_applies_at_once(node: Node) -> None:
    sparse(node.data / "src/huge.bin", 8 << 30)
    item = [{"path": "huge.bin", "type": "file"}]
    with node.client() as client:
        put = client.put(
            "/api/settings/max-concurrent-transfers", json={"maxConcurrentTransfers": 1}
        )
        assert put.json() == {"maxConcurrentTransfers": 1}
        first = node.transfer(item, destination="/one")["jobId"]
        node.wait(first, until=lambda j: j["status"] == "in_progress")
        second = node.transfer(item, destination="/two")["jobId"]
        assert node.job(second)["status"] == "pending"
        pending = client.get("/api/transfer", params={"status": "pending"}).json()["jobs"]
        assert [j["id"] for j in pending] == [second]
        client.put("/api/settings/max-concurrent-transfers", json={"maxConcurrentTransfers": 2})
        node.wait(second, until=lambda j: j["status"] == "in_progress", timeout=5)
        for job_id in (first, second):
            client.post(f"/api/transfer/cancel/{job_id}")
            assert node.wait(job_id)["status"] == "cancelled"
        assert client.get("/api/settings/max-concurrent-transfers").json() == {
            "maxConcurrentTransfers": 2
        }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b"{}", 400, "invalid_body"),
        (transfer_body([{"path": "a", "type": "symlink"}]), 400, "invalid_body"),
        (transfer_body([FILE], conflict="merge"), 400, "invalid_body"),
        (transfer_body([]), 400, "bad_request"),
        ({**transfer_body([FILE]), "extra": 1}, 400, "invalid_body"),
        (transfer_body([{"path": "../etc/passwd", "type": "file"}]), 400, "invalid_path"),
        (transfer_body([{"path": "/etc/passwd", "type": "file"}]), 400, "invalid_path"),
        (transfer_body([{"path": "a\u0000b", "type": "file"}]), 400, "invalid_path"),
        (transfer_body([FILE], source="/../.."), 400, "invalid_path"),
        (transfer_body([{"path": "escape/secret", "type": "file"}]), 400, "invalid_path"),
        (transfer_body([{"path": "escape", "type": "directory"}]), 400, "invalid_path"),
        (transfer_body([{"path": "missing.bin", "type": "file"}]), 404, "NotFound"),
        (transfer_body([{"path": "dir", "type": "file"}]), 400, "bad_request"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    node: Node, tmp_path: Path, body: object, status: int, code: str
) -> None:
    (node.data / "src/dir").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_text("secret")
    os.symlink(tmp_path / "outside", node.data / "src/escape")
    with node.client() as client:
        if isinstance(body, bytes):
            response = client.post("/api/transfer", content=body)
        else:
            response = client.post("/api/transfer", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["message"]
    assert sorted(p.name for p in (node.data).iterdir()) == ["src"]  # nothing written


def test_unknown_locations_types_and_jobs(node: Node) -> None:
    (node.data / "src").mkdir()
    with node.client() as client:
        body = transfer_body([FILE])
        body["destination"]["locationId"] = "local-9"
        answer = client.post("/api/transfer", json=body)
        assert answer.status_code == 400 and answer.json()["error"] == "unknown_location"
        body["destination"] = {"type": "s3", "locationId": "bucket", "path": ""}
        answer = client.post("/api/transfer", json=body)
        assert answer.status_code == 400 and answer.json()["error"] == "unsupported_storage"
        assert "s3" in answer.json()["message"]
        for method, path in [
            ("GET", "/api/transfer/transfer-nope"),
            ("GET", "/api/transfer/transfer-nope/files"),
            ("POST", "/api/transfer/cancel/transfer-nope"),
            ("POST", "/api/transfer/cleanup/transfer-nope"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 404 and response.json()["error"] == "job_not_found"
        assert client.get("/api/nothing-here").json()["error"] == "not_found"
        assert client.get("/api/transfer", params={"status": "bogus"}).status_code == 400
        for value in (0, 65, "4", 4.5, None, True):
            answer = client.put(
                "/api/settings/max-concurrent-transfers", json={"maxConcurrentTransfers": value}
            )
            assert answer.status_code == 400, value


def test_kill_9_mid_job_then_restart_resumes_and_sweeps(node: Node) -> None:
    sparse(node.data / "src/big.bin", 2 << 30)
    tree(node.data / "src", {"a.txt": b"first"})
    items = [{"path": "a.txt", "type": "file"}, {"path": "big.bin", "type": "file"}]
    job_id = node.transfer(items)["jobId"]
    node.wait(job_id, until=lambda j: j["filesCompleted"] == 1 and j["bytesTransferred"] > 64 << 20)
    node.kill()
    assert staging_files(node.data)  # the crash left a partial temp file behind
    node.start()
    job = node.wait(job_id, timeout=120)
    assert job["status"] == "completed" and job["filesCompleted"] == 2
    assert os.path.getsize(node.data / "dst/big.bin") == 2 << 30
    assert staging_files(node.data) == []


def test_sigterm_cancels_cleanly_exits_0_and_the_job_resumes(node: Node) -> None:
    sparse(node.data / "src/big.bin", 2 << 30)
    job_id = node.transfer([{"path": "big.bin", "type": "file"}])["jobId"]
    node.wait(job_id, until=lambda j: j["bytesTransferred"] > 64 << 20)
    assert node.stop() == 0
    assert staging_files(node.data) == []
    node.start()
    assert node.wait(job_id, timeout=120)["status"] == "completed"


def test_bad_config_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    bad = Node(tmp_path, {"transfers": {"max_concurent": 3}})
    with pytest.raises(RuntimeError, match=r"unknown key 'transfers.max_concurent'"):
        bad.start()
    assert bad.proc is not None and bad.proc.returncode == 2


def test_an_s3_ca_bundle_that_cannot_be_loaded_stops_the_start(tmp_path: Path) -> None:
    s3 = {"endpoint_url": "https://127.0.0.1:9", "access_key_id": "a", "secret_access_key": "b"}
    bad = Node(tmp_path, {"s3": {**s3, "ca_bundle": str(tmp_path / "missing.pem")}})
    with pytest.raises(RuntimeError, match=r"s3 ca_bundle '.*missing\.pem' cannot be loaded"):
        bad.start()
    assert bad.proc is not None and bad.proc.returncode == 2


def test_generated_token_is_printed_once_and_works(tmp_path: Path) -> None:
    node = Node(tmp_path, {"auth": {"tokens": []}}).start()
    try:
        token = (node.state / "api-token").read_text().strip()
        assert (node.state / "api-token").stat().st_mode & 0o777 == 0o600
        assert node.log().count(token) == 1
        with node.client(token) as client:
            assert client.get("/api/transfer").status_code == 200
        node.stop()
        node.start()
        assert node.log().count(token) == 1  # not printed again
        with node.client(token) as client:
            assert client.get("/api/transfer").status_code == 200
    finally:
        node.kill()
