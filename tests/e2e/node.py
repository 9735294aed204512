"""Start and drive a real ``streamer serve`` process on 127.0.0.1 for e2e tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

TOKEN = "e2e-test-token-0123456789"
START_SECONDS = 20.0


class Node:
    """One ``streamer serve`` process with its own state and ``local-0`` location."""

    def __init__(
        self, home: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> None:
        """``config`` is merged over the defaults (per section); ``env`` over ours."""
        self.home = home
        self.env = {**os.environ, **(env or {})}
        self.data = home / "data"
        self.state = home / "state"
        self.data.mkdir(parents=True, exist_ok=True)
        merged: dict[str, Any] = {
            "server": {"bind": "127.0.0.1:0"},
            "auth": {"enabled": True, "tokens": [TOKEN]},
            "state_dir": str(self.state),
            "locations": {"local": [{"id": "local-0", "path": str(self.data)}]},
        }
        for key, value in (config or {}).items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
        self.config_path = home / "config.yml"
        self.config_path.write_text(yaml.safe_dump(merged))
        self.log_path = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Node:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            cwd=self.home,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            match = re.search(r"streamer: listening on (https?://\S+)", text)
            if match:
                self.url = match.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamer exited {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"streamer did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @contextmanager
    def serving(self) -> Iterator[Node]:
        """The node started for the block; after it, stopped cleanly (SIGTERM, exit 0, no
        traceback in its log), or killed when the block or the stop failed."""
        try:
            yield self.start()
            assert self.stop() == 0
            assert "Traceback" not in self.log(), self.log()
        finally:
            if self.alive:
                self.kill()

    # -- HTTP --------------------------------------------------------------

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/api/transfer/{job_id}")
            response.raise_for_status()
            return response.json()["job"]  # type: ignore[no-any-return]

    def wait(self, job_id: str, *, until: Any = None, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the job until ``until(job)`` (default: finished) holds."""
        done = until or (lambda j: j["status"] in ("completed", "failed", "cancelled"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if done(job):
                return job
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not get there: {self.job(job_id)}")

    def transfer(self, items: list[dict[str, str]], **overrides: Any) -> dict[str, Any]:
        body = transfer_body(items, **overrides)
        with self.client() as client:
            response = client.post("/api/transfer", json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def events(self, job_id: str, client: httpx.Client | None = None) -> Iterator[dict[str, Any]]:
        """The SSE stream of a job, one decoded ``data:`` payload at a time; through
        ``client`` (one of :meth:`client`'s, kept open by the caller) or a new one."""
        with contextlib.nullcontext(client) if client else self.client() as http:
            ticket = http.post(
                "/api/auth/sse-ticket", json={"resource": job_id, "resourceType": "transfer"}
            ).json()["ticket"]
            url = f"/api/transfer/progress/{job_id}?ticket={ticket}"
            with http.stream("GET", url, headers={"Authorization": ""}) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[len("data: ") :])


def transfer_body(
    items: list[dict[str, str]],
    *,
    source: str = "/src",
    destination: str = "/dst",
    conflict: str | None = "overwrite",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"type": "local", "locationId": "local-0", "path": source},
        "destination": {"type": "local", "locationId": "local-0", "path": destination},
        "items": items,
    }
    if conflict is not None:
        body["conflictResolution"] = conflict
    return body


def staging_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".streamer-*.part")]


def sparse(path: Path, size: int) -> Path:
    """A big file that costs no disk to create (reads as zeros)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def tree(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
