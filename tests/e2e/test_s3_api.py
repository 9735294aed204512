"""local ↔ S3 through the Transfer API of a real ``streamer serve``, against a moto server."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.moto import REGION, MotoServer

from .node import Node, sparse, staging_files, transfer_body, tree

MiB = 1 << 20
SIZES = {"empty": 0, "one": 1, "part": 5 * MiB, "part-plus-one": 5 * MiB + 1, "three": 12 * MiB}


def s3_config(server: MotoServer, **overrides: Any) -> dict[str, Any]:
    return {
        "s3": {
            "endpoint_url": server.endpoint,
            "region": REGION,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "part_size_mib": 5,
            "parts_in_flight": 2,
            "max_retries": 2,
            **overrides,
        }
    }


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"e2e-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_node(tmp_path: Path, moto_server: MotoServer) -> Iterator[Node]:
    node = Node(tmp_path / "home", s3_config(moto_server)).start()
    yield node
    node.kill()


def s3_body(
    items: list[dict[str, str]],
    *,
    source: dict[str, str],
    destination: dict[str, str],
    conflict: str = "overwrite",
) -> dict[str, Any]:
    body = transfer_body(items, conflict=conflict)
    body["source"], body["destination"] = source, destination
    return body


def post(node: Node, body: dict[str, Any]) -> str:
    with node.client() as client:
        response = client.post("/api/transfer", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["jobId"])


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_round_trip_local_s3_local_keeps_every_byte(s3_node: Node, bucket: str, admin: Any) -> None:
    contents = {name: os.urandom(size) for name, size in SIZES.items()}
    tree(s3_node.data / "src", contents)
    local = {"type": "local", "locationId": "local-0", "path": "/src"}
    remote = {"type": "s3", "locationId": bucket, "path": "up"}
    items = [{"path": name, "type": "file"} for name in SIZES]
    upload = s3_node.wait(post(s3_node, s3_body(items, source=local, destination=remote)))
    assert upload["status"] == "completed" and upload["type"] == "s3-upload", upload
    for name, data in contents.items():
        head = admin.head_object(Bucket=bucket, Key=f"up/{name}")
        assert head["ContentLength"] == len(data)
        assert head["Metadata"]["sha256"] == digest(data)
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    back = {"type": "local", "locationId": "local-0", "path": "/back"}
    download = s3_node.wait(
        post(s3_node, s3_body([{"path": "", "type": "directory"}], source=remote, destination=back))
    )
    assert download["status"] == "completed" and download["type"] == "s3-download", download
    for name, data in contents.items():
        assert digest((s3_node.data / "back" / name).read_bytes()) == digest(data)
    with s3_node.client() as client:
        files = client.get(f"/api/transfer/{download['id']}/files").json()["files"]
    assert {f["path"]: f["sha256"] for f in files} == {
        f"up/{n}": digest(d) for n, d in contents.items()
    }
    assert staging_files(s3_node.data) == []
    assert "HTTP Request:" not in s3_node.log()  # httpx's line per request: DEBUG only


def test_tree_of_2000_files_and_s3_to_s3(s3_node: Node, bucket: str, admin: Any) -> None:
    contents = {f"d{i % 20:02}/f{i:04}.txt": f"file {i}\n".encode() for i in range(2000)}
    tree(s3_node.data / "src/tree", contents)
    local = {"type": "local", "locationId": "local-0", "path": "/src"}
    remote = {"type": "s3", "locationId": bucket, "path": ""}
    items = [{"path": "tree", "type": "directory"}]
    job = s3_node.wait(post(s3_node, s3_body(items, source=local, destination=remote)), timeout=120)
    assert job["status"] == "completed" and job["filesCompleted"] == 2000, job["errors"][:3]
    listed = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tree/")
    assert sum(len(page.get("Contents", [])) for page in listed) == 2000

    back = {"type": "local", "locationId": "local-0", "path": "/back"}
    job = s3_node.wait(post(s3_node, s3_body(items, source=remote, destination=back)), timeout=120)
    assert job["status"] == "completed" and job["filesCompleted"] == 2000, job["errors"][:3]
    landed = {
        str(path.relative_to(s3_node.data / "back/tree")): digest(path.read_bytes())
        for path in (s3_node.data / "back/tree").rglob("*")
        if path.is_file()
    }
    assert landed == {name: digest(data) for name, data in contents.items()}

    copy = {"type": "s3", "locationId": bucket, "path": "copy"}
    job = s3_node.wait(
        post(
            s3_node,
            s3_body([{"path": "tree/d07", "type": "directory"}], source=remote, destination=copy),
        )
    )
    assert (
        job["status"] == "completed"
        and job["type"] == "cross-storage"
        and job["filesCompleted"] == 100
    )
    body = admin.get_object(Bucket=bucket, Key="copy/tree/d07/f0007.txt")["Body"].read()
    assert body == b"file 7\n"


def test_buckets_outside_the_allow_list_are_refused(
    tmp_path: Path, moto_server: MotoServer, bucket: str, admin: Any
) -> None:
    unlisted = f"{bucket}-unlisted"
    admin.create_bucket(Bucket=unlisted)
    admin.put_object(Bucket=unlisted, Key="a.txt", Body=b"unlisted")
    node = Node(tmp_path / "home", s3_config(moto_server, buckets=[bucket])).start()
    try:
        tree(node.data / "src", {"a.txt": b"a"})
        local = {"type": "local", "locationId": "local-0", "path": "/src"}
        item = [{"path": "a.txt", "type": "file"}]
        refused = {"type": "s3", "locationId": unlisted, "path": ""}
        with node.client() as client:
            for body in (
                s3_body(item, source=local, destination=refused),
                s3_body(item, source=refused, destination=local | {"path": "/dst"}),
            ):
                for route in ("/api/transfer", "/api/transfer/check-conflicts"):
                    answer = client.post(route, json=body)
                    assert answer.status_code == 400, answer.text
                    assert answer.json()["error"] == "unknown_location"
                    assert unlisted in answer.json()["message"]
            assert client.get("/api/transfer").json()["jobs"] == []  # no job was queued
        listed = {"type": "s3", "locationId": bucket, "path": ""}
        assert (
            node.wait(post(node, s3_body(item, source=local, destination=listed)))["status"]
            == "completed"
        )
        assert [o["Key"] for o in admin.list_objects_v2(Bucket=unlisted)["Contents"]] == ["a.txt"]
        assert not (node.data / "dst").exists()
    finally:
        node.kill()


def test_conflicts_on_s3_destinations(s3_node: Node, bucket: str, admin: Any) -> None:
    tree(s3_node.data / "src", {"a.txt": b"new-a", "b.txt": b"new-b"})
    admin.put_object(Bucket=bucket, Key="dst/a.txt", Body=b"old-a")
    local = {"type": "local", "locationId": "local-0", "path": "/src"}
    remote = {"type": "s3", "locationId": bucket, "path": "dst"}
    items = [{"path": "a.txt", "type": "file"}, {"path": "b.txt", "type": "file"}]
    with s3_node.client() as client:
        body = s3_body(items, source=local, destination=remote)
        del body["conflictResolution"]
        answer = client.post("/api/transfer/check-conflicts", json=body).json()
    assert answer == {"conflicts": ["src/a.txt"], "nonConflicting": ["src/b.txt"]}

    job = s3_node.wait(
        post(s3_node, s3_body(items, source=local, destination=remote, conflict="skip"))
    )
    assert (job["filesCompleted"], job["filesSkipped"]) == (1, 1)
    assert admin.get_object(Bucket=bucket, Key="dst/a.txt")["Body"].read() == b"old-a"
    s3_node.wait(
        post(s3_node, s3_body(items[:1], source=local, destination=remote, conflict="rename"))
    )
    assert admin.get_object(Bucket=bucket, Key="dst/a (1).txt")["Body"].read() == b"new-a"
    s3_node.wait(
        post(s3_node, s3_body(items[:1], source=local, destination=remote, conflict="overwrite"))
    )
    assert admin.get_object(Bucket=bucket, Key="dst/a.txt")["Body"].read() == b"new-a"


def test_cancel_mid_multipart_leaves_no_upload(s3_node: Node, bucket: str, admin: Any) -> None:
    sparse(s3_node.data / "src/big.bin", 4 << 30)
    local = {"type": "local", "locationId": "local-0", "path": "/src"}
    remote = {"type": "s3", "locationId": bucket, "path": ""}
    job_id = post(
        s3_node, s3_body([{"path": "big.bin", "type": "file"}], source=local, destination=remote)
    )
    s3_node.wait(job_id, until=lambda j: j["bytesTransferred"] > 20 * MiB, timeout=60)
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads")  # really mid-multipart
    with s3_node.client() as client:
        assert client.post(f"/api/transfer/cancel/{job_id}").status_code == 200
    assert s3_node.wait(job_id)["status"] == "cancelled"
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_s3_errors_are_clear(
    tmp_path: Path, s3_node: Node, bucket: str, moto_server: MotoServer
) -> None:
    tree(s3_node.data / "src", {"a.txt": b"a"})
    local = {"type": "local", "locationId": "local-0", "path": "/src"}
    item = [{"path": "a.txt", "type": "file"}]
    with s3_node.client() as client:
        missing_bucket = {"type": "s3", "locationId": "no-such-bucket-here", "path": ""}
        answer = client.post(
            "/api/transfer", json=s3_body(item, source=missing_bucket, destination=local)
        )
        assert answer.status_code == 404 and answer.json()["error"] == "NoSuchBucket"
        missing_key = {"type": "s3", "locationId": bucket, "path": "nope"}
        answer = client.post(
            "/api/transfer", json=s3_body(item, source=missing_key, destination=local)
        )
        assert answer.status_code == 404
        bad_name = {"type": "s3", "locationId": "Not_A_Bucket", "path": ""}
        answer = client.post(
            "/api/transfer", json=s3_body(item, source=bad_name, destination=local)
        )
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_bucket"
    job = s3_node.wait(post(s3_node, s3_body(item, source=local, destination=missing_bucket)))
    assert job["status"] == "failed" and job["errors"][0]["error"] == "NoSuchBucket"

    wrong = Node(
        tmp_path / "wrong", s3_config(moto_server, secret_access_key="not-the-secret")
    ).start()
    try:
        with wrong.client() as client:
            remote = {"type": "s3", "locationId": bucket, "path": ""}
            answer = client.post(
                "/api/transfer",
                json=s3_body([{"path": "", "type": "directory"}], source=remote, destination=local),
            )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] in {
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        }
    finally:
        wrong.kill()
