"""``PUT /api/upload/:locationId/*path`` (seed 001's local-upload) against a real server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx

from .node import Node, staging_files


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_streams_into_place_as_a_job(node: Node) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)
    with node.client() as client:
        answer = client.put(
            "/api/upload/local-0/incoming/model.bin",
            content=data,
            headers={"X-Checksum-Sha256": digest(data).upper()},
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert (body["path"], body["size"], body["sha256"]) == (
            "incoming/model.bin",
            len(data),
            digest(data),
        )
        job = client.get(f"/api/transfer/{body['jobId']}").json()["job"]
    assert job["type"] == "local-upload" and job["status"] == "completed"
    assert job["bytesTransferred"] == len(data)
    assert (node.data / "incoming/model.bin").read_bytes() == data

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    with node.client() as client:
        answer = client.put(
            "/api/upload/local-0/incoming/model.bin",
            content=chunks(),
            params={"conflictResolution": "rename"},
        )
    assert answer.status_code == 201 and answer.json()["path"] == "incoming/model (1).bin"
    assert (node.data / "incoming/model (1).bin").read_bytes() == data


def test_bad_uploads_are_refused_and_nothing_lands(node: Node) -> None:
    data = b"payload" * 1000
    with node.client() as client:
        wrong = client.put(
            "/api/upload/local-0/a.bin", content=data, headers={"X-Checksum-Sha256": "0" * 64}
        )
        assert wrong.status_code == 422 and wrong.json()["error"] == "ChecksumMismatch"
        for path, code in [
            ("/api/upload/local-9/a.bin", "unknown_location"),
            ("/api/upload/local-0/..%2Fescape.bin", "invalid_path"),
            ("/api/upload/local-0/a%00b", "invalid_path"),
        ]:
            answer = client.put(path, content=data)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["error"] == code
        bad_header = client.put(
            "/api/upload/local-0/a.bin", content=data, headers={"X-Checksum-Sha256": "xyz"}
        )
        assert bad_header.status_code == 400
    with node.client(token=None) as anonymous:
        assert anonymous.put("/api/upload/local-0/a.bin", content=data).status_code == 401
    assert sorted(p.name for p in node.data.iterdir()) == []
    assert staging_files(node.data) == []


def test_upload_size_cap(tmp_path: Path) -> None:
    node = Node(tmp_path, {"uploads": {"max_bytes": 1000}}).start()
    try:
        with node.client() as client:
            assert client.put("/api/upload/local-0/ok.bin", content=b"x" * 1000).status_code == 201
            too_big = client.put("/api/upload/local-0/big.bin", content=b"x" * 1001)
            assert too_big.status_code == 413

            def chunked() -> Iterator[bytes]:
                for _ in range(20):
                    yield b"y" * 100

            try:
                answer = client.put("/api/upload/local-0/big2.bin", content=chunked())
                assert answer.status_code == 413
            except httpx.HTTPError:
                pass  # the server may close before the client finished sending
        assert sorted(p.name for p in node.data.iterdir()) == ["ok.bin"]
    finally:
        node.kill()


def test_an_upload_blocked_by_what_is_there_is_a_409(node: Node) -> None:
    (node.data / "taken.bin").write_bytes(b"file")
    (node.data / "folder").mkdir()
    with node.client() as client:
        below_a_file = client.put("/api/upload/local-0/taken.bin/inner", content=b"x")
        onto_a_directory = client.put("/api/upload/local-0/folder", content=b"x")
    assert below_a_file.status_code == 409, below_a_file.text
    assert below_a_file.json()["error"] == "EEXIST"
    assert onto_a_directory.status_code == 409, onto_a_directory.text
    assert onto_a_directory.json()["error"] == "EISDIR"
    assert (node.data / "taken.bin").read_bytes() == b"file"
    assert not staging_files(node.data)
