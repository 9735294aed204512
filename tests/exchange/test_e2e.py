"""``/api/v1/transfers`` against a real ``streamer serve`` process."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import zstandard

from tests.e2e.node import Node
from tests.support.faultproxy import start_in_thread

MIB = 1 << 20
IDENTITY = {"Accept-Encoding": "identity"}  # httpx asks for zstd when it can decode it


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(node: Node, **body: Any) -> dict[str, Any]:
    with node.client() as client:
        answer = client.post(
            "/api/v1/transfers", json={"worker_id": "w1", "location_id": "local-0", **body}
        )
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_stage_then_download_is_identical_and_encrypted_at_rest(node: Node) -> None:
    data = os.urandom(3 * MIB + 123)
    (node.data / "in").mkdir()
    (node.data / "in/video.mp4").write_bytes(data)
    made = create(node, direction="upload", path="in/video.mp4", checksum=sha(data).upper())
    assert made["status"] == "pending" and made["upload_url"] is None
    assert made["download_url"] == f"/api/v1/transfers/{made['transfer_id']}/download"
    token = made["auth_token"]
    exchange = node.state / "exchange"
    staged = (exchange / f"{made['transfer_id']}.enc").read_bytes()
    assert len(staged) > len(data)
    for i in range(0, len(data) - 64, 4096):  # no plaintext run on disk
        assert data[i : i + 64] not in staged
    for key in ("master.key", "token.key"):
        assert stat.S_IMODE((exchange / key).stat().st_mode) == 0o600

    with httpx.Client(base_url=node.url, timeout=30, headers=IDENTITY) as worker:
        got = worker.get(made["download_url"], params={"token": token})
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["X-Checksum-Sha256"] == sha(data)
        assert got.headers["Content-Length"] == str(len(data))
        etag = got.headers["ETag"]
        part = worker.get(
            made["download_url"],
            headers={"Authorization": f"Bearer {token}", "Range": "bytes=1048570-2097200"},
        )
        assert part.status_code == 206
        assert part.content == data[1048570:2097201]
        assert part.headers["Content-Range"] == f"bytes 1048570-2097200/{len(data)}"
        assert part.headers["ETag"] == etag
        tail = worker.get(
            made["download_url"], params={"token": token}, headers={"Range": "bytes=-10"}
        )
        assert tail.status_code == 206 and tail.content == data[-10:]
        far = worker.get(
            made["download_url"], params={"token": token}, headers={"Range": "bytes=999999999-"}
        )
        assert far.status_code == 416
        zst = worker.get(
            made["download_url"], params={"token": token}, headers={"Accept-Encoding": "zstd"}
        )
        assert zst.headers["Content-Encoding"] == "zstd" and "Content-Length" not in zst.headers
        assert zst.content == data  # httpx decodes zstd
        status = worker.get(
            f"/api/v1/transfers/{made['transfer_id']}/status", params={"token": token}
        )
        assert status.status_code == 200
        body = status.json()
        assert body["status"] == "completed" and body["total_bytes"] == len(data)
        assert body["progress_percent"] == 100.0

    # Tokens never appear in the access log.
    assert token not in node.log()
    assert "token=[redacted]" in node.log()


def test_tokens_are_scoped_to_their_transfer_and_direction(node: Node) -> None:
    (node.data / "a.bin").write_bytes(b"a" * 1000)
    first = create(node, direction="upload", path="a.bin")
    second = create(node, direction="upload", path="a.bin")
    incoming = create(node, direction="download", path="result.bin")
    with httpx.Client(base_url=node.url, timeout=30, headers=IDENTITY) as worker:
        other = worker.get(first["download_url"], params={"token": second["auth_token"]})
        assert other.status_code == 401 and other.json()["error"] == "invalid_token"
        wrong_scope = worker.get(first["download_url"], params={"token": incoming["auth_token"]})
        assert wrong_scope.status_code == 401
        upload_with_download_token = worker.post(
            incoming["upload_url"], params={"token": first["auth_token"]}, content=b"x"
        )
        assert upload_with_download_token.status_code == 401
        assert worker.get(first["download_url"]).status_code == 401
        api_token_is_not_a_transfer_token = worker.get(
            first["download_url"], headers={"Authorization": "Bearer e2e-test-token-0123456789"}
        )
        assert api_token_is_not_a_transfer_token.status_code == 401
        assert worker.post("/api/v1/transfers", json={}).status_code == 401  # API token needed
    with node.client() as client:
        status = client.get(f"/api/v1/transfers/{first['transfer_id']}/status")
        assert status.status_code == 200 and status.json()["status"] == "pending"
        deleted = client.delete(f"/api/v1/transfers/{first['transfer_id']}")
        assert deleted.status_code == 200
        assert not (node.state / "exchange" / f"{first['transfer_id']}.enc").exists()
        assert client.get(f"/api/v1/transfers/{first['transfer_id']}/status").status_code == 404


def test_upload_lands_only_with_a_good_checksum(node: Node) -> None:
    data = os.urandom(2 * MIB + 5)
    good = create(node, direction="download", path="out/result.bin", checksum=sha(data))
    assert good["download_url"] is None
    bad = create(node, direction="download", path="out/bad.bin")
    multipart = create(node, direction="download", path="out/form.bin")
    with httpx.Client(base_url=node.url, timeout=30, headers=IDENTITY) as worker:
        answer = worker.post(good["upload_url"], params={"token": good["auth_token"]}, content=data)
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "completed"
        refused = worker.post(
            bad["upload_url"],
            headers={"Authorization": f"Bearer {bad['auth_token']}", "X-Checksum-Sha256": "0" * 64},
            content=data,
        )
        assert refused.status_code == 422 and refused.json()["error"] == "ChecksumMismatch"
        form = worker.post(
            multipart["upload_url"],
            params={"token": multipart["auth_token"]},
            files={"file": ("r.bin", data, "application/octet-stream")},
            data={"note": "ignored"},
        )
        assert form.status_code == 201, form.text
        squeezed = create(node, direction="download", path="out/z.bin", checksum=sha(data))
        zst = worker.post(
            squeezed["upload_url"],
            params={"token": squeezed["auth_token"]},
            headers={"Content-Encoding": "zstd"},
            content=zstandard.ZstdCompressor().compress(data),
        )
        assert zst.status_code == 201, zst.text
        broken = create(node, direction="download", path="out/broken.bin")
        for headers, body, code in [
            ({"Content-Encoding": "zstd"}, zstandard.ZstdCompressor().compress(data)[:-9], 400),
            ({"Content-Type": "multipart/form-data; boundary=xyz"}, b"--xyz--\r\n", 400),
            ({"X-Checksum-Sha256": "not-hex"}, data, 400),
        ]:
            answer = worker.post(
                broken["upload_url"],
                params={"token": broken["auth_token"]},
                headers=headers,
                content=body,
            )
            assert answer.status_code == code, answer.text
    assert (node.data / "out/result.bin").read_bytes() == data
    assert (node.data / "out/form.bin").read_bytes() == data
    assert (node.data / "out/z.bin").read_bytes() == data
    assert sorted(p.name for p in (node.data / "out").iterdir()) == [
        "form.bin",
        "result.bin",
        "z.bin",
    ]
    with node.client() as client:
        failed = client.get(f"/api/v1/transfers/{bad['transfer_id']}/status").json()
    assert failed["status"] == "failed" and "hashes to" in failed["error_message"]


def _stored(worker: httpx.Client, url: str) -> int:
    head = worker.head(url)
    assert head.status_code == 200, head.text
    return int(head.headers["Upload-Offset"])


def _wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_upload_resumes_with_head_and_patch(node: Node) -> None:
    data = os.urandom(5 * MIB + 77)
    made = create(
        node, direction="download", path="up.bin", file_size=len(data), checksum=sha(data)
    )
    tid, token, url = made["transfer_id"], made["auth_token"], made["upload_url"]
    proxy = start_in_thread(int(node.url.rsplit(":", 1)[1]))
    with httpx.Client(
        base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as worker:
        try:
            # Announce the whole file, send 3 MiB + 10 bytes through the proxy, wait until
            # the server is writing them, then cut the connection mid-body.
            with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
                head = (
                    f"POST {url}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                )
                sock.sendall(head.encode() + data[: 3 * MIB + 10])
                _wait_for(lambda: _stored(worker, url) >= 2 * MIB)
        finally:
            proxy.stop()
        assert worker.head(url).headers["Upload-Length"] == str(len(data))

        def patch(offset: int, body: bytes) -> httpx.Response:
            for _ in range(200):  # the server notices the cut asynchronously
                answer = worker.patch(url, headers={"Upload-Offset": str(offset)}, content=body)
                if answer.json().get("error") != "conflict":  # still receiving the cut one
                    return answer
                time.sleep(0.05)
            raise AssertionError("the cut upload never ended")

        stale = patch(0, data)
        assert stale.status_code == 409 and stale.json()["error"] == "offset_mismatch"
        # Whole chunks that arrived are kept; a torn one (and bytes the server had not
        # read yet when the cut came) is resent.
        offset = _stored(worker, url)
        assert offset % MIB == 0 and 2 * MIB <= offset <= 3 * MIB
        done = patch(offset, data[offset:])
        assert done.status_code == 201, done.text
        assert done.json()["status"] == "completed"
        status = worker.get(f"/api/v1/transfers/{tid}/status").json()
    assert status["status"] == "completed" and status["bytes_transferred"] == len(data)
    assert (node.data / "up.bin").read_bytes() == data
    assert not (node.state / "exchange" / f"{tid}.enc").exists()


def test_short_ttl_expires_and_is_swept(tmp_path: Path) -> None:
    node = Node(tmp_path / "home", config={"exchange": {"sweep_interval": 0.2}}).start()
    try:
        (node.data / "a.bin").write_bytes(b"a" * 5000)
        made = create(node, direction="upload", path="a.bin", expires_in=3)
        staged = node.state / "exchange" / f"{made['transfer_id']}.enc"
        assert staged.exists()
        with httpx.Client(base_url=node.url, timeout=30, headers=IDENTITY) as worker:
            assert (
                worker.get(made["download_url"], params={"token": made["auth_token"]}).status_code
                == 200
            )
            _wait_for(lambda: not staged.exists())  # the sweeper (every 0.2 s) took it
            late = worker.get(made["download_url"], params={"token": made["auth_token"]})
            assert late.status_code == 401 and late.json()["error"] == "token_expired"
        with node.client() as client:
            status = client.get(f"/api/v1/transfers/{made['transfer_id']}/status").json()
            assert status["status"] in ("expired", "completed")
            too_long = client.post(
                "/api/v1/transfers",
                json={
                    "worker_id": "w",
                    "direction": "download",
                    "location_id": "local-0",
                    "path": "x",
                    "expires_in": 10**9,
                },
            )
            assert too_long.status_code == 400
    finally:
        node.kill()
