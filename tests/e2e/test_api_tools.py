"""``/openapi.json``, ``/docs`` and ``/metrics`` of a real ``streamer serve``."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .node import TOKEN, Node, tree

SCRAPE_TOKEN = "scrape-only-token-0123456789"


def scrape(
    node: Node, token: str | None = TOKEN
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as ``{(sample name, labels): value}``."""
    with node.client(token) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_openapi_and_docs_are_public_and_local(node: Node) -> None:
    with node.client(token=None) as client:
        doc = client.get("/openapi.json")
        page = client.get("/docs")
        assert doc.status_code == 200 and page.status_code == 200
        assert doc.json()["openapi"] == "3.1.0"
        assert "/api/transfer" in doc.json()["paths"]
        html = page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert not re.search(r"(https?:)?//", html), "the page must not load anything remote"
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert "docs/assets/swagger-ui-bundle.js" in assets
        for asset in assets:
            response = client.get("/" + asset)
            assert response.status_code == 200, asset
            assert response.content, asset
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert b"SwaggerUIBundle" in script.content
        missing = client.get("/docs/assets/index.html")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"


def test_metrics_need_a_token_by_default(node: Node) -> None:
    with node.client(token=None) as client:
        response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert value(scrape(node), "streamer_concurrency_limit") == 2


@pytest.mark.parametrize(
    ("metrics", "allowed", "refused"),
    [
        ({"token": SCRAPE_TOKEN}, [SCRAPE_TOKEN, TOKEN], [None, "wrong-token-0123456789"]),
        ({"auth": False}, [None, TOKEN], []),
    ],
)
def test_metrics_auth_settings(
    tmp_path: Path, metrics: dict[str, object], allowed: list[str | None], refused: list[str | None]
) -> None:
    node = Node(tmp_path / "home", {"metrics": metrics}).start()
    try:
        for token in allowed:
            assert value(scrape(node, token), "streamer_concurrency_limit") == 2
        for token in refused:
            with node.client(token) as client:
                assert client.get("/metrics").status_code == 401
    finally:
        node.stop()


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    node = Node(tmp_path / "home", {"metrics": {"enabled": False}}).start()
    try:
        with node.client() as client:
            response = client.get("/metrics")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    finally:
        node.stop()


def test_metrics_follow_a_copy_job(node: Node) -> None:
    tree(node.data / "src", {"a.bin": b"a" * 1000, "b.bin": b"b" * 24})
    before = scrape(node)
    created = node.transfer([{"path": "", "type": "directory"}])
    job = node.wait(created["jobId"])
    assert job["status"] == "completed"
    after = scrape(node)
    kind = {"kind": "cross-storage"}
    moved = "streamer_transferred_bytes_total"
    assert value(before, moved, **kind, direction="local") == 0
    assert value(after, moved, **kind, direction="local") == 1024
    assert value(after, "streamer_files_total", **kind, status="completed") == 2
    assert value(after, "streamer_jobs_finished_total", **kind, status="completed") == 1
    assert value(after, "streamer_jobs", **kind, status="completed") == 1
    polled = {"method": "GET", "route": "/api/transfer/{job_id}", "status": "200"}
    assert value(after, "streamer_http_request_duration_seconds_count", **polled) >= 1
    raw_paths = [
        labels for name, labels in after if ("route", f"/api/transfer/{job['id']}") in labels
    ]
    assert not raw_paths, "routes are labelled by template, never by raw path"


def test_metrics_show_a_running_upload_and_its_stream(node: Node) -> None:
    """While an upload waits for the rest of its body, it is an active job with a
    progress stream open; both go away when it completes."""
    release = threading.Event()
    answers: list[httpx.Response] = []

    def body() -> Iterator[bytes]:
        yield b"x" * 1000
        release.wait(30)
        yield b"y" * 24

    def upload() -> None:
        with node.client() as client:
            answers.append(client.put("/api/upload/local-0/up/file.bin", content=body()))

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        job_id = _running_job(node)
        events = node.events(job_id)
        assert next(events)["type"] == "progress"
        during = scrape(node)
        assert value(during, "streamer_sse_subscribers") == 1
        assert value(during, "streamer_jobs_active") == 1
        assert value(during, "streamer_jobs", kind="local-upload", status="in_progress") == 1
        release.set()
        assert [e["type"] for e in events][-1] == "complete"
    finally:
        release.set()
        uploader.join(30)
    assert answers and answers[0].status_code == 201, answers
    after = scrape(node)
    assert value(after, "streamer_sse_subscribers") == 0
    assert value(after, "streamer_jobs_active") == 0
    in_bytes = value(after, "streamer_transferred_bytes_total", kind="local-upload", direction="in")
    assert in_bytes == 1024


def _running_job(node: Node, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    with node.client() as client:
        while time.monotonic() < deadline:
            jobs = client.get("/api/transfer", params={"status": "in_progress"}).json()["jobs"]
            if jobs:
                return str(jobs[0]["id"])
            time.sleep(0.02)
    raise AssertionError("the upload never became a running job")


def test_query_parameters_are_validated_by_their_types(node: Node) -> None:
    with node.client() as client:
        bad = client.get("/api/transfer", params={"status": "bogus"})
        ignored = client.get("/api/transfer", params={"status": "pending", "_": "1700000000"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_query" and "status" in bad.json()["message"]
    assert ignored.status_code == 200 and ignored.json() == {"jobs": []}
