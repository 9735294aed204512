"""A real S3 for the tests: one moto server process per test session (per xdist worker).

The server starts without authentication, gets an IAM user with an allow-all
policy, then has authentication switched on (``/moto-api/reset-auth``), so
every request the tests make is checked against its SigV4 signature. Each
test gets a fresh bucket; boto3 (a moto dependency) serves as an independent
client for setup and checks. Registered as a plugin in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

REGION = "us-east-1"


@dataclass(frozen=True)
class MotoServer:
    port: int
    access_key_id: str
    secret_access_key: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def boto(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not come up")


def _enable_auth(server: MotoServer) -> MotoServer:
    """Create an all-powerful IAM user, then make moto check every signature."""
    iam = replace(server, access_key_id="bootstrap", secret_access_key="bootstrap").boto("iam")
    iam.create_user(UserName="streamer")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="streamer", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="streamer")["AccessKey"]
    request = urllib.request.Request(
        f"{server.endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10).close()
    return replace(
        server, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]
    )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        server = MotoServer(port, "", "")
        _wait_until_up(server.endpoint, process)
        yield _enable_auth(server)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def admin(moto_server: MotoServer) -> Any:
    """A boto3 S3 client, independent of the code under test."""
    return moto_server.boto("s3")


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:20]}"
    admin.create_bucket(Bucket=name)
    return name
