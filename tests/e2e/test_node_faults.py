"""Node transfers under faults: cut connections, 5xx, a Panel that is down, restarts."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faultproxy import start_in_thread

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
from .cutproxy import CutProxy
from .panel_stub import eventually

MIB = 1 << 20


# before_archive refuses a server holding a ".refuse" file; after_extract logs the uuid.
REFUSE = ["sh", "-c", 'echo stopping "$1"; test ! -e "$STREAMER_SERVER_DIR/.refuse"', "hook"]


def log_hook(path: Path) -> list[str]:
    return ["sh", "-c", f'echo "$1 $STREAMER_HOOK" >> {path}', "hook"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("faults")
    running = start_cluster(
        root,
        source={"push_retries": 2, "hooks": {"before_archive": REFUSE}},
        destination={"hooks": {"after_extract": log_hook(root / "after_extract.log")}},
    )
    yield running
    running.stop()


def test_hooks_run_with_the_server_uuid(cluster: Cluster) -> None:
    server = new_server()
    src = server_tree(cluster.source_servers / server, random_bytes=1024)
    assert cluster.push(server).status_code == 202
    assert [c.outcome for c in cluster.panel.wait(server)] == ["success"]
    hook_log = cluster.destination.home.parent / "after_extract.log"
    assert f"{server} after_extract" in hook_log.read_text().splitlines()
    assert f"stopping {server}" in cluster.source.log()

    refused = new_server()
    server_tree(cluster.source_servers / refused, random_bytes=1024)
    (cluster.source_servers / refused / ".refuse").touch()
    job = cluster.source.wait(cluster.push(refused).json()["jobId"])
    assert job["status"] == "failed" and job["errors"][0]["error"] == "hook_failed"
    [call] = cluster.panel.wait(refused)
    assert call.outcome == "failure" and call.headers["authorization"].endswith(SOURCE_KEY)
    assert not (cluster.destination_servers / refused).exists()
    assert snapshot(cluster.destination_servers / server) == snapshot(src)


def via(port: int) -> str:
    return f"http://127.0.0.1:{port}/api/transfers"


def destination_port(cluster: Cluster) -> int:
    return int(cluster.destination.url.rsplit(":", 1)[1])


def test_connection_cut_mid_archive_is_retried_to_success(cluster: Cluster) -> None:
    server = new_server()
    src = server_tree(cluster.source_servers / server, random_bytes=2 * MIB)
    with CutProxy(destination_port(cluster), after=512 * 1024) as proxy:
        response = cluster.push(server, url=via(proxy.port))
        job = cluster.source.wait(response.json()["jobId"], timeout=60)
        assert proxy.cut == 1 and proxy.connections == 2
    assert job["status"] == "completed", job
    eventually(lambda: any(c.outcome == "success" for c in cluster.panel.for_server(server)))
    calls = cluster.panel.wait(server, settle=0.3)
    # The destination saw the first stream end early and reported a failure (unless the
    # retry superseded it first); the last word is the destination's success.
    assert [c.outcome for c in calls] in (["failure", "success"], ["success"])
    assert {c.headers["authorization"] for c in calls} == {f"Bearer {TOKEN_ID}.{DESTINATION_KEY}"}
    assert snapshot(cluster.destination_servers / server) == snapshot(src)
    assert leftovers(cluster.destination_servers) == []


def test_connection_cut_every_time_reports_failure(cluster: Cluster) -> None:
    server = new_server()
    server_tree(cluster.source_servers / server, random_bytes=2 * MIB)
    with CutProxy(destination_port(cluster), after=300 * 1024, cuts=100) as proxy:
        response = cluster.push(server, url=via(proxy.port))
        job = cluster.source.wait(response.json()["jobId"], timeout=60)
        assert proxy.connections == 3  # push_retries: 2
    assert job["status"] == "failed" and "after 3 attempts" in job["errors"][0]["message"]
    calls = cluster.panel.wait(server, count=4, settle=0.3)
    assert [c.outcome for c in calls] == ["failure"] * 4  # 3 from the destination, 1 source
    by_source = [c for c in calls if c.headers["authorization"].endswith(SOURCE_KEY)]
    assert len(by_source) == 1
    assert not (cluster.destination_servers / server).exists()
    assert leftovers(cluster.destination_servers) == []


def test_a_5xx_answer_is_retried(cluster: Cluster) -> None:
    server = new_server()
    src = server_tree(cluster.source_servers / server, random_bytes=64 * 1024)
    proxy = start_in_thread(destination_port(cluster))
    try:
        proxy.proxy.fail_next(1, status=503, body=b"busy", content_type="text/plain")
        response = cluster.push(server, url=via(proxy.port))
        job = cluster.source.wait(response.json()["jobId"], timeout=60)
        assert proxy.proxy.failed == 1 and proxy.proxy.forwarded == 1
    finally:
        proxy.stop()
    assert job["status"] == "completed"
    assert [c.outcome for c in cluster.panel.wait(server, settle=0.3)] == ["success"]
    assert snapshot(cluster.destination_servers / server) == snapshot(src)


def test_panel_down_then_up_across_a_restart_delivers_the_callback(cluster: Cluster) -> None:
    server = new_server()
    src = server_tree(cluster.source_servers / server, random_bytes=1024)
    cluster.panel.stop()  # connections to the Panel are refused from now on
    try:
        response = cluster.push(server)
        assert cluster.source.wait(response.json()["jobId"])["status"] == "completed"
        assert snapshot(cluster.destination_servers / server) == snapshot(src)
        # The success callback waits in the destination's outbox; restart the node.
        assert cluster.destination.stop() == 0
        cluster.destination.start()
    finally:
        cluster.panel.start()  # same port: the Panel is back
    [call] = cluster.panel.wait(server, timeout=30, settle=0.3)
    assert call.outcome == "success"
    assert call.headers["authorization"] == f"Bearer {TOKEN_ID}.{DESTINATION_KEY}"
    log = cluster.destination.log()
    assert "retrying" in log and DESTINATION_KEY not in log


def test_kill_9_mid_receive_then_restart_reports_failure_and_sweeps(cluster: Cluster) -> None:
    server = new_server()
    src = cluster.source_servers / server
    src.mkdir(parents=True)
    (src / "random.bin").write_bytes(os.urandom(8 * MIB))
    with cluster.source.client() as client:
        client.put("/api/settings/bandwidth", json={"uploadLimit": 2})
    try:
        response = cluster.push(server)
        assert response.status_code == 202

        def receiving() -> bool:
            with cluster.destination.client() as client:
                jobs = client.get("/api/transfer", params={"status": "in_progress"}).json()
            return any(j["destination"]["uuid"] == server for j in jobs["jobs"])

        eventually(receiving, what="the destination receiving")
        eventually(lambda: bool(leftovers(cluster.destination_servers)), what="staging")
        cluster.destination.stop(signal.SIGKILL)
        cluster.destination.start()
        with cluster.source.client(token=SOURCE_KEY) as client:
            client.delete(f"/api/servers/{server}/transfer")  # stop the source's retries
    finally:
        with cluster.source.client() as client:
            client.put("/api/settings/bandwidth", json={"uploadLimit": 0})
    calls = cluster.panel.wait(server, count=2, timeout=30)
    from_destination = [c for c in calls if c.headers["authorization"].endswith(DESTINATION_KEY)]
    assert [c.outcome for c in from_destination] == ["failure"]
    with cluster.destination.client() as client:
        jobs = client.get("/api/transfer").json()["jobs"]
    [job] = [j for j in jobs if j["destination"]["uuid"] == server]
    assert job["status"] == "failed" and job["errors"][0]["error"] == "interrupted"
    assert leftovers(cluster.destination_servers) == []
    assert not (cluster.destination_servers / server).exists()


def test_push_to_an_unreachable_destination_reports_failure(cluster: Cluster) -> None:
    server = new_server()
    server_tree(cluster.source_servers / server, random_bytes=1024)
    response = cluster.push(server, url="http://127.0.0.1:9/api/transfers")
    job = cluster.source.wait(response.json()["jobId"], timeout=60)
    assert job["status"] == "failed"
    assert "after 3 attempts" in job["errors"][0]["message"]  # push_retries: 2
    [call] = cluster.panel.wait(server, timeout=30)
    assert call.outcome == "failure"
    assert call.headers["authorization"] == f"Bearer {TOKEN_ID}.{SOURCE_KEY}"
