"""``streamer cp`` with ``s3://`` endpoints: a round trip through a moto bucket."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.node import Node, tree
from tests.e2e.test_s3_api import s3_config
from tests.support.moto import MotoServer

from .conftest import cli


def test_round_trip_through_a_bucket(tmp_path: Path, moto_server: MotoServer, admin: Any) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(Bucket=bucket)
    files = {"models/a.bin": os.urandom(6 << 20), "models/sub/b.txt": b"b"}
    node = Node(tmp_path / "home", s3_config(moto_server)).start()
    try:
        tree(node.data, files)
        up = cli(node, tmp_path, "cp", "local-0:models", f"s3://{bucket}/backup")
        assert up.returncode == 0, up.stdout + up.stderr
        one = cli(node, tmp_path, "cp", f"s3://{bucket}/backup/models/sub/b.txt", "local-0:one")
        assert one.returncode == 0, one.stdout + one.stderr
        assert (node.data / "one/b.txt").read_bytes() == b"b"
        down = cli(node, tmp_path, "cp", f"s3://{bucket}/backup/", "local-0:restored")
        assert down.returncode == 0, down.stdout + down.stderr
        for name, content in files.items():
            restored = (node.data / "restored" / name).read_bytes()
            assert hashlib.sha256(restored).digest() == hashlib.sha256(content).digest()
        upload = cli(node, tmp_path, "cp", str(node.data / "one/b.txt"), f"s3://{bucket}/x")
        assert upload.returncode == 2 and "local location" in upload.stderr
    finally:
        node.kill()
