"""The whole worker cycle: a real ``streamer serve`` and real ``streamer worker run``
processes (claim → download → command → upload), under faults and signals."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.cutproxy import CutProxy
from tests.e2e.node import Node, staging_files
from tests.support.faultproxy import start_in_thread

MIB = 1 << 20
WORKER_TOKEN = "worker-token-0123456789abcdef"
LEASE = 2  # seconds: a killed worker's job comes back quickly
#: The command the workers run: the output is the input reversed.
REVERSE = (
    f"{sys.executable} -c "
    '\'import sys; data = open(sys.argv[1], "rb").read(); '
    'open(sys.argv[2], "wb").write(data[::-1])\' {input} {output}'
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    server = Node(
        tmp_path / "home",
        config={
            "worker": {"tokens": [WORKER_TOKEN], "lease_seconds": LEASE, "sweep_interval": 0.2}
        },
    ).start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


class WorkerProcess:
    """One ``streamer worker run`` process (in its own session, so its command dies
    with it) logging to a file."""

    def __init__(self, home: Path, url: str, *args: str, token: str = WORKER_TOKEN) -> None:
        self.log_path = home / f"worker-{time.monotonic_ns()}.log"
        self.cache = home / "cache"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer", "worker", "run", "--server", url,
                 "--token", token, "--cache", str(self.cache), "--poll", "0.2", *args],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the worker did not exit:\n{self.log()}") from None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def create(node: Node, source: str, output: str) -> str:
    with node.client() as client:
        answer = client.post(
            "/api/worker/jobs",
            json={
                "source": {"locationId": "local-0", "path": source},
                "output": {"locationId": "local-0", "path": output},
            },
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def job(node: Node, job_id: str) -> dict[str, Any]:
    with node.client() as client:
        answer = client.get(f"/api/worker/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def source_file(node: Node, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (node.data / name).write_bytes(data)
    return data


def test_full_cycle_two_jobs_at_once(node: Node, tmp_path: Path) -> None:
    inputs = {
        name: source_file(node, name, 2 * MIB + i) for i, name in enumerate(["a.mp4", "b.mkv"])
    }
    ids = {name: create(node, name, f"out/{name}") for name in inputs}
    worker = WorkerProcess(
        tmp_path, node.url, "--exec", REVERSE, "--parallel", "2", "--max-jobs", "2"
    )
    assert worker.wait() == 0, worker.log()
    for name, data in inputs.items():
        assert (node.data / "out" / name).read_bytes() == data[::-1]
        done = job(node, ids[name])
        assert done["status"] == "completed" and done["attempts"] == 1
        assert done["result"] == {"size": len(data), "sha256": sha(data[::-1])}
    log = worker.log()
    assert "2 completed, 0 failed" in log and "output.mp4" in log and "source.mkv" in log
    assert list(worker.cache.iterdir()) == []  # every job_<id>/ cleaned
    assert not staging_files(node.data)


def test_a_failing_command_fails_the_job_with_its_stderr(node: Node, tmp_path: Path) -> None:
    source_file(node, "a.bin", 1000)
    job_id = create(node, "a.bin", "out/a.bin")
    failing = f"{sys.executable} -c 'import sys; sys.exit(\"cannot convert {{input}}\")'"
    worker = WorkerProcess(tmp_path, node.url, "--exec", failing, "--max-jobs", "1")
    assert worker.wait() == 0, worker.log()
    failed = job(node, job_id)
    assert failed["status"] == "failed"
    assert "exited 1" in failed["error"] and "cannot convert" in failed["error"]
    assert not (node.data / "out/a.bin").exists()


def test_a_cut_download_resumes(node: Node, tmp_path: Path) -> None:
    data = source_file(node, "big.bin", 6 * MIB)
    job_id = create(node, "big.bin", "out/big.bin")
    proxy = start_in_thread(port_of(node.url))
    try:
        proxy.proxy.drop_after(2 * MIB, when=lambda r: r.target.startswith("/api/worker/down"))
        url = f"http://127.0.0.1:{proxy.port}"
        worker = WorkerProcess(tmp_path, url, "--exec", REVERSE, "--max-jobs", "1")
        assert worker.wait() == 0, worker.log()
    finally:
        proxy.stop()
    assert job(node, job_id)["status"] == "completed"
    assert (node.data / "out/big.bin").read_bytes() == data[::-1]
    downloads = [r for r in proxy.proxy.log if r.target.startswith("/api/worker/down")]
    assert proxy.proxy.dropped == 1 and len(downloads) == 2
    # The second GET asked for the rest, pinned to the first one's ETag: resumed.
    first = int(re.fullmatch(r"bytes=(\d+)-\d+", downloads[1].headers["range"])[1])  # type: ignore[index]
    assert MIB <= first < 2 * MIB
    assert downloads[1].headers["if-range"] == f'"{sha(data)}"'
    assert f"resumed at byte {first}" in worker.log()


def test_a_cut_upload_resumes(node: Node, tmp_path: Path) -> None:
    data = source_file(node, "in.bin", 4 * MIB)
    job_id = create(node, "in.bin", "out/result.bin")
    # Every connection is cut once the worker sent 2.5 MiB on it: only the upload
    # gets there (the PATCH that resumes it sends less). --bwlimit paces the upload so
    # that the server keeps up and has stored what passed before the cut.
    with CutProxy(port_of(node.url), after=2 * MIB + MIB // 2, cuts=1000) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        worker = WorkerProcess(
            tmp_path, url, "--exec", REVERSE, "--max-jobs", "1", "--bwlimit", "4"
        )
        assert worker.wait() == 0, worker.log()
    assert job(node, job_id)["status"] == "completed"
    assert (node.data / "out/result.bin").read_bytes() == data[::-1]
    resumed = re.search(r"uploaded \d+ bytes .*resumed at byte (\d+)", worker.log())
    assert resumed is not None, worker.log()
    assert int(resumed[1]) >= MIB  # from what the server kept, not from zero
    assert re.search(r"PATCH /api/worker/upload-video\S* 201", node.log())
    assert not staging_files(node.data)


def test_a_killed_workers_job_goes_to_another_worker(node: Node, tmp_path: Path) -> None:
    data = source_file(node, "in.bin", MIB)
    job_id = create(node, "in.bin", "out/result.bin")
    stuck = f"{sys.executable} -c 'import time; time.sleep(60)'"
    first = WorkerProcess(tmp_path, node.url, "--exec", stuck, "--worker-id", "first")
    try:
        wait_for(lambda: "running" in first.log(), "the first worker to run the command")
        assert job(node, job_id)["workerId"] == "first"
    finally:
        first.kill()
    wait_for(lambda: job(node, job_id)["status"] == "pending", "the lease to expire", LEASE * 10)
    second = WorkerProcess(
        tmp_path, node.url, "--exec", REVERSE, "--worker-id", "second", "--max-jobs", "1"
    )
    assert second.wait() == 0, second.log()
    done = job(node, job_id)
    assert done["status"] == "completed" and done["workerId"] == "second"
    assert done["attempts"] == 2
    assert (node.data / "out/result.bin").read_bytes() == data[::-1]


def test_a_wrong_worker_token_exits_3(node: Node, tmp_path: Path) -> None:
    worker = WorkerProcess(tmp_path, node.url, "--exec", REVERSE, token="not-a-worker-token")
    assert worker.wait() == 3
    assert "401" in worker.log()


def test_sigterm_lets_the_job_finish_within_the_grace_period(node: Node, tmp_path: Path) -> None:
    data = source_file(node, "in.bin", 1000)
    job_id = create(node, "in.bin", "out/result.bin")
    slow = REVERSE.replace("-c '", "-c 'import time; time.sleep(2); ")
    worker = WorkerProcess(tmp_path, node.url, "--exec", slow, "--grace", "30")
    wait_for(lambda: "running" in worker.log(), "the command to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()
    assert job(node, job_id)["status"] == "completed"
    assert (node.data / "out/result.bin").read_bytes() == data[::-1]
    assert "1 completed" in worker.log()


def test_sigterm_releases_a_job_that_outlasts_the_grace_period(node: Node, tmp_path: Path) -> None:
    source_file(node, "in.bin", 1000)
    job_id = create(node, "in.bin", "out/result.bin")
    stuck = f"{sys.executable} -c 'import time; time.sleep(60)'"
    worker = WorkerProcess(tmp_path, node.url, "--exec", stuck, "--grace", "0.5")
    wait_for(lambda: "running" in worker.log(), "the command to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()
    released = job(node, job_id)
    assert released["status"] == "pending" and released["attempts"] == 0
    assert "released" in worker.log() and list(worker.cache.iterdir()) == []


def test_download_and_upload_commands(tmp_path: Path) -> None:
    # The default lease: the claim below gets no heartbeats.
    node = Node(tmp_path / "home", config={"worker": {"tokens": [WORKER_TOKEN]}}).start()
    try:
        commands_on_a_claimed_job(node, tmp_path)
    finally:
        node.kill()


def commands_on_a_claimed_job(node: Node, tmp_path: Path) -> None:
    data = source_file(node, "in.bin", MIB + 1)
    job_id = create(node, "in.bin", "out/result.bin")
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {WORKER_TOKEN}"}) as c:
        claimed = c.post("/api/worker/jobs/claim", json={"workerId": "script"}).json()
    token = claimed["token"]
    env = {**os.environ, "STREAMER_URL": node.url, "STREAMER_TOKEN": token}

    def streamer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamer", "worker", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    got = streamer("download", job_id, str(tmp_path / "source.bin"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "source.bin").read_bytes() == data and sha(data) in got.stderr
    (tmp_path / "result.bin").write_bytes(data[::-1])
    sent = streamer("upload", job_id, str(tmp_path / "result.bin"), "--zstd")
    assert sent.returncode == 0, sent.stderr
    assert job(node, job_id)["status"] == "completed"
    assert (node.data / "out/result.bin").read_bytes() == data[::-1]
    again = streamer("download", job_id, str(tmp_path / "again.bin"))  # no longer processing
    assert again.returncode == 1 and "job_not_processing" in again.stderr
    assert not (tmp_path / "again.bin").exists()
    unusable = streamer("download", job_id, str(tmp_path / "x.bin"), "--token", "forged")
    assert unusable.returncode == 3
