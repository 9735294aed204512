"""Node-to-node server transfers (seed 002) between two real ``streamer serve``
processes, with a Panel stub that issues JWTs and records callbacks."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from .cluster import (
    DESTINATION_KEY,
    SOURCE_KEY,
    TOKEN_ID,
    Cluster,
    leftovers,
    new_server,
    server_tree,
    snapshot,
    start_cluster,
)
from .node import TOKEN, Node
from .panel_stub import eventually

MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


# -- helpers -------------------------------------------------------------------


def go_multipart(archive: bytes, checksum: str | None, boundary: str) -> Iterator[bytes]:
    """The body exactly as Wings (Go's mime/multipart) writes it, in pieces (chunked)."""
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="archive"; filename="archive.tar.gz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for i in range(0, len(archive), 32 * 1024):
        yield archive[i : i + 32 * 1024]
    if checksum is not None:
        yield (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="checksum"\r\n\r\n{checksum}'
        ).encode()
    yield f"\r\n--{boundary}--\r\n".encode()


def send_archive(
    cluster: Cluster,
    server: str,
    archive: bytes,
    *,
    checksum: str | None = "auto",
    authorization: str | None = None,
) -> httpx.Response:
    """What a Wings source sends to ``POST /api/transfers``."""
    import hashlib

    boundary = secrets.token_hex(30)
    if checksum == "auto":
        checksum = hashlib.sha256(archive).hexdigest()
    headers = {
        "Authorization": authorization or f"Bearer {cluster.jwt(server)}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "User-Agent": "Go-http-client/1.1",
        "Accept-Encoding": "gzip",
    }
    with httpx.Client(timeout=30) as client:
        return client.post(
            cluster.transfer_url(),
            content=go_multipart(archive, checksum, boundary),
            headers=headers,
        )


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buffer.getvalue())


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mtime = kind, link, len(data), 1_600_000_000
    return info, (data if kind == tarfile.REGTYPE else None)


def jobs_of(node: Node, kind: str, server: str) -> list[dict[str, Any]]:
    with node.client() as client:
        jobs = client.get("/api/transfer").json()["jobs"]
    return [
        j
        for j in jobs
        if j["type"] == kind
        and server in (j["source"].get("uuid"), (j["destination"] or {}).get("uuid"))
    ]


def wait_job(node: Node, kind: str, server: str, **kwargs: Any) -> dict[str, Any]:
    eventually(lambda: bool(jobs_of(node, kind, server)), what=f"a {kind} job for {server}")
    return node.wait(jobs_of(node, kind, server)[-1]["id"], **kwargs)


def set_limit(node: Node, key: str, mib_per_s: float) -> None:
    with node.client() as client:
        response = client.put("/api/settings/bandwidth", json={key: mib_per_s})
    assert response.status_code == 200, response.text
    assert response.json()[key] == mib_per_s


def assert_untouched(cluster: Cluster, server: str) -> None:
    assert not (cluster.destination_servers / server).exists()
    assert leftovers(cluster.destination_servers) == []


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst"])
def test_round_trip_gives_an_identical_tree(cluster: Cluster, fmt: str) -> None:
    server = new_server()
    src = server_tree(cluster.source_servers / server)
    response = cluster.push(server, archive_format=fmt)
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]

    [call] = cluster.panel.wait(server, settle=0.3)  # the destination's success, nothing else
    assert call.outcome == "success"
    assert call.headers["authorization"] == f"Bearer {TOKEN_ID}.{DESTINATION_KEY}"
    assert "streamer" in call.headers["user-agent"] and TOKEN_ID in call.headers["user-agent"]
    assert call.body == b"{}"
    assert snapshot(cluster.destination_servers / server) == snapshot(src)
    assert leftovers(cluster.destination_servers) == []

    pushed = cluster.source.wait(job_id)
    assert pushed["status"] == "completed" and pushed["type"] == "node-push"
    assert pushed["source"] == {"type": "server", "uuid": server}
    received = wait_job(cluster.destination, "node-receive", server)
    assert received["status"] == "completed" and received["errors"] == []
    assert [e["type"] for e in cluster.destination.events(received["id"])] == ["complete"]
    assert received["bytesTransferred"] == received["totalBytes"] > 256 * 1024
    with cluster.destination.client() as client:
        files = client.get(f"/api/transfer/{received['id']}/files").json()["files"]
    with cluster.source.client() as client:
        pushed_files = client.get(f"/api/transfer/{job_id}/files").json()["files"]
    assert files[0]["sha256"] == pushed_files[0]["sha256"] and len(files[0]["sha256"]) == 64


def test_a_second_push_replaces_the_previous_tree(cluster: Cluster) -> None:
    server = new_server()
    old = cluster.destination_servers / server
    (old / "stale").mkdir(parents=True)
    (old / "stale/old.txt").write_text("old")
    src = server_tree(cluster.source_servers / server, random_bytes=1024)
    assert cluster.push(server, archive_format="tar.zst").status_code == 202
    assert cluster.panel.wait(server)[0].outcome == "success"
    assert snapshot(old) == snapshot(src)
    assert leftovers(cluster.destination_servers) == []


def test_wings_shaped_request_by_hand(cluster: Cluster, tmp_path: Path) -> None:
    """A request built as Wings builds it (Go multipart, chunked, GNU tar + gzip)."""
    server = new_server()
    src = server_tree(tmp_path / "tree", random_bytes=4096)
    archive = subprocess.run(
        ["tar", "-C", str(src), "-czf", "-", "."], check=True, capture_output=True
    ).stdout
    response = send_archive(cluster, server, archive)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert cluster.panel.wait(server)[0].outcome == "success"
    assert snapshot(cluster.destination_servers / server) == snapshot(src)


# -- verify before commit --------------------------------------------------------


@pytest.mark.parametrize(
    ("checksum", "code"),
    [("0" * 64, "ChecksumMismatch"), (None, "missing_checksum"), ("xyz", "invalid_checksum")],
)
def test_bad_checksum_commits_nothing(
    cluster: Cluster, checksum: str | None, code: str, tmp_path: Path
) -> None:
    server = new_server()
    archive = tar_gz(member("world/level.dat", b"new data"))
    response = send_archive(cluster, server, archive, checksum=checksum)
    assert response.status_code == 422 and response.json()["error"] == code
    assert [c.outcome for c in cluster.panel.wait(server)] == ["failure"]
    assert_untouched(cluster, server)


def test_mismatch_leaves_previous_data_untouched(cluster: Cluster) -> None:
    server = new_server()
    previous = cluster.destination_servers / server
    previous.mkdir(parents=True)
    (previous / "keep.txt").write_text("precious")
    archive = tar_gz(member("keep.txt", b"overwritten!"))
    assert send_archive(cluster, server, archive, checksum="f" * 64).status_code == 422
    assert (previous / "keep.txt").read_text() == "precious"
    assert leftovers(cluster.destination_servers) == []


# -- tokens ----------------------------------------------------------------------


def _token_cases(cluster: Cluster, server: str) -> dict[str, str | None]:
    return {
        "wrong key": cluster.panel.token(server, SOURCE_KEY),
        "alg none": cluster.panel.unsigned_token(server),
        "HS512": cluster.panel.token(server, DESTINATION_KEY + "x" * 30, algorithm="HS512"),
        "expired": cluster.jwt(server, ttl=-120),
        "no sub": cluster.jwt(None),
        "sub not a uuid": cluster.jwt("../../etc"),
        "no token": None,
    }


@pytest.mark.parametrize(
    "case", ["wrong key", "alg none", "HS512", "expired", "no sub", "sub not a uuid", "no token"]
)
def test_bad_tokens_are_401_with_nothing_written(cluster: Cluster, case: str) -> None:
    server = new_server()
    token = _token_cases(cluster, server)[case]
    archive = tar_gz(member("x.txt", b"x"))
    response = send_archive(
        cluster, server, archive, authorization=f"Bearer {token}" if token else "Basic abc"
    )
    assert response.status_code == 401, response.text
    assert_untouched(cluster, server)
    time.sleep(0.2)
    assert cluster.panel.for_server(server) == []
    assert jobs_of(cluster.destination, "node-receive", server) == []


def test_an_early_refusal_reaches_a_slow_sender_at_once(cluster: Cluster) -> None:
    """The answer to a refused upload is not held back until the sender has sent
    everything: the connection is closed, so the sender's next write fails and it
    reads the answer (see streamer/_api/flow.py)."""
    started = time.monotonic()

    def slow_body() -> Iterator[bytes]:
        for _ in range(200):  # 50 MiB over ~10 s if nobody stopped it
            yield bytes(256 * 1024)
            time.sleep(0.05)

    with httpx.Client(timeout=30) as client:
        response = client.post(
            cluster.transfer_url(),
            content=slow_body(),
            headers={
                "Authorization": "Bearer not-a-jwt",
                "Content-Type": "multipart/form-data; boundary=x",
            },
        )
    assert response.status_code == 401
    assert time.monotonic() - started < 4


def test_a_used_token_cannot_be_replayed(cluster: Cluster) -> None:
    server = new_server()
    token = f"Bearer {cluster.jwt(server, jti='replay-me')}"
    archive = tar_gz(member("x.txt", b"x"))
    assert send_archive(cluster, server, archive, authorization=token).status_code == 200
    again = send_archive(cluster, server, archive, authorization=token)
    assert again.status_code == 401 and again.json()["error"] == "token_used"


# -- hostile archives --------------------------------------------------------------


def window_bomb() -> bytes:
    """A zstd frame declaring a 1 GiB window: refused before any allocation."""
    return b"\x28\xb5\x2f\xfd" + bytes([0x00, 20 << 3]) + bytes([0x01, 0x00, 0x00])


def hostile(case: str, outside: Path) -> bytes:
    payload = {
        "dotdot": [member("../../escape.txt", b"evil")],
        "absolute": [member(str(outside / "abs.txt"), b"evil")],
        "symlink escape": [
            member("link", kind=tarfile.SYMTYPE, link="../../.."),
            member("link/escape.txt", b"evil"),
        ],
        "absolute symlink": [member("etc", kind=tarfile.SYMTYPE, link=str(outside))],
        "hardlink outside": [member("h", kind=tarfile.LNKTYPE, link=str(outside / "victim"))],
        "hardlink dotdot": [member("h", kind=tarfile.LNKTYPE, link="../victim")],
        "device": [member("null", kind=tarfile.CHRTYPE)],
        "fifo": [member("pipe", kind=tarfile.FIFOTYPE)],
    }
    if case == "zstd window bomb":
        return window_bomb()
    if case == "not an archive":
        return b"PK\x03\x04 this is a zip"
    return tar_gz(member("ok.txt", b"fine"), *payload[case])


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "absolute",
        "symlink escape",
        "absolute symlink",
        "hardlink outside",
        "hardlink dotdot",
        "device",
        "fifo",
        "zstd window bomb",
        "not an archive",
    ],
)
def test_hostile_archives_are_refused(cluster: Cluster, case: str, tmp_path: Path) -> None:
    server = new_server()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("victim")
    before = set(cluster.destination.home.rglob("*"))
    response = send_archive(cluster, server, hostile(case, outside))
    assert response.status_code in (400, 413), response.text
    assert response.json()["error"] in (
        "unsafe_archive",
        "archive_limit_exceeded",
        "corrupt_archive",
        "malformed_archive",
    )
    assert [c.outcome for c in cluster.panel.wait(server)] == ["failure"]
    assert_untouched(cluster, server)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "victim"
    created = set(cluster.destination.home.rglob("*")) - before
    # Only logs, state and the servers root itself (made by the first transfer a node
    # receives, which may be this one) may appear; nothing from the archive.
    expected = {cluster.destination_servers}
    assert all(p.name == "server.log" or "state" in p.parts or p in expected for p in created), (
        created
    )


# -- source side rules -------------------------------------------------------------


def test_source_request_rules(cluster: Cluster) -> None:
    server = new_server()
    with cluster.source.client(token=SOURCE_KEY) as client:
        missing = client.post(
            f"/api/servers/{server}/transfer", json={"url": cluster.transfer_url(), "token": "x"}
        )
        assert missing.status_code == 404
        (cluster.source_servers / server).mkdir(parents=True)
        for body in ({}, {"url": "ftp://x/y", "token": "t"}, {"url": "http://h/", "token": ""}):
            assert client.post(f"/api/servers/{server}/transfer", json=body).status_code == 400
        assert client.delete(f"/api/servers/{server}/transfer").status_code == 404
    with cluster.source.client(token="wrong-token-0123456789") as client:
        assert client.delete(f"/api/servers/{server}/transfer").status_code == 401
    with cluster.source.client(token=TOKEN) as client:  # the API token works too
        assert client.get("/api/settings/bandwidth").status_code == 200


# -- cancel and throttle ---------------------------------------------------------------


def slow_push(cluster: Cluster, size: int = 6 * MIB) -> tuple[str, str]:
    """Start a push that takes seconds (the source's upload limited to 1 MiB/s, so no
    more than that is in flight)."""
    set_limit(cluster.source, "uploadLimit", 1)
    server = new_server()
    src = cluster.source_servers / server
    src.mkdir(parents=True)
    (src / "random.bin").write_bytes(os.urandom(size))
    response = cluster.push(server)
    assert response.status_code == 202, response.text
    wait_job(
        cluster.destination,
        "node-receive",
        server,
        until=lambda j: j["status"] == "in_progress" and j["bytesTransferred"] > 0,
    )
    return server, response.json()["jobId"]


def test_cancel_on_the_source(cluster: Cluster) -> None:
    try:
        server, job_id = slow_push(cluster)
        again = cluster.push(server)
        assert again.status_code == 409
        with cluster.source.client(token=SOURCE_KEY) as client:
            assert client.delete(f"/api/servers/{server}/transfer").status_code == 202
        assert cluster.source.wait(job_id, timeout=10)["status"] == "cancelled"
        received = wait_job(cluster.destination, "node-receive", server, timeout=10)
        assert received["status"] == "failed"
        calls = cluster.panel.wait(server, count=2, settle=0.3)
        assert sorted(c.outcome for c in calls) == ["failure", "failure"]
        assert {c.headers["authorization"] for c in calls} == {
            f"Bearer {TOKEN_ID}.{SOURCE_KEY}",
            f"Bearer {TOKEN_ID}.{DESTINATION_KEY}",
        }
        assert_untouched(cluster, server)
    finally:
        set_limit(cluster.source, "uploadLimit", 0)


@pytest.mark.parametrize("auth", ["panel", "jwt"])
def test_cancel_on_the_destination(cluster: Cluster, auth: str) -> None:
    try:
        server, job_id = slow_push(cluster)
        with cluster.destination.client(token=None) as client:
            if auth == "panel":
                headers = {"Authorization": f"Bearer {DESTINATION_KEY}"}
                url = f"/api/transfers?server={server}"
            else:
                headers = {"Authorization": f"Bearer {cluster.jwt(server)}"}
                url = "/api/transfers"
            assert client.delete(url, headers=headers).status_code == 202
        received = wait_job(cluster.destination, "node-receive", server, timeout=10)
        assert received["status"] == "cancelled"
        pushed = cluster.source.wait(job_id, timeout=30)
        assert pushed["status"] == "failed"
        calls = cluster.panel.wait(server, count=2, settle=0.3)
        assert [c.outcome for c in calls] == ["failure", "failure"]
        assert_untouched(cluster, server)
    finally:
        set_limit(cluster.source, "uploadLimit", 0)


def test_download_limit_is_observed(cluster: Cluster) -> None:
    limit = 4.0
    try:
        set_limit(cluster.destination, "downloadLimit", limit)
        server = new_server()
        src = cluster.source_servers / server
        src.mkdir(parents=True)
        (src / "random.bin").write_bytes(os.urandom(12 * MIB))  # incompressible: wire = tar
        assert cluster.push(server).status_code == 202
        eventually(lambda: bool(jobs_of(cluster.destination, "node-receive", server)))
        job_id = jobs_of(cluster.destination, "node-receive", server)[0]["id"]
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = cluster.destination.job(job_id)
            samples.append((time.monotonic(), job["bytesTransferred"]))
            if job["status"] != "in_progress":
                break
            time.sleep(0.01)
        assert cluster.panel.wait(server)[0].outcome == "success"
        # Progress moves in steps: fit a line through the moments it stepped, past the
        # initial burst and before the end.
        steps = [s for prev, s in itertools.pairwise(samples) if s[1] != prev[1]]
        window = [(t, b / MIB) for t, b in steps if 3 * MIB <= b <= 11 * MIB]
        assert len(window) >= 4, samples
        rate = slope(window)
        # Never faster than the limit; a loaded machine may run slower than it.
        assert 0.5 * limit < rate < 1.1 * limit, (rate, window)
    finally:
        set_limit(cluster.destination, "downloadLimit", 0)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``points``."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_b = sum(b for _, b in points) / n
    covariance = sum((t - mean_t) * (b - mean_b) for t, b in points)
    return covariance / sum((t - mean_t) ** 2 for t, _ in points)


def test_bandwidth_settings_validation(cluster: Cluster) -> None:
    with cluster.destination.client() as client:
        assert client.put("/api/settings/bandwidth", json={"downloadLimit": -1}).status_code == 400
        assert client.put("/api/settings/bandwidth", json={"bogus": 1}).status_code == 400
        before = client.get("/api/settings/bandwidth").json()
        stalling = client.put("/api/settings/bandwidth", json={"uploadLimit": 1e-300})
        assert stalling.status_code == 400, stalling.text
        assert "uploadLimit" in stalling.json()["message"]
        current = client.get("/api/settings/bandwidth").json()
    assert set(current) == {"downloadLimit", "uploadLimit"}
    assert current == before  # a refused change changes nothing


def test_window_bomb_zstd_real_frame(cluster: Cluster) -> None:
    """A genuine zstd stream whose window needs more than the configured 128 MiB."""
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=28)
    compressor = zstandard.ZstdCompressor(compression_params=params)
    frame = io.BytesIO()
    with compressor.stream_writer(frame, closefd=False) as writer:
        writer.write(b"x" * 1000)
    server = new_server()
    response = send_archive(cluster, server, frame.getvalue())
    assert response.status_code == 413 and response.json()["error"] == "archive_limit_exceeded"
    assert_untouched(cluster, server)
