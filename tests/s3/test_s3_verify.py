"""S3 → local verifies every object against its ``x-amz-meta-sha256``, whether the
object was planned as a file item (HEAD) or listed under a directory item (the
listing has no metadata: the GET's, or the in-place path's HEAD, is checked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from streamer._engine import FileStatus
from streamer._engine.copy import IN_PLACE_FILE
from streamer._storage import LocalStorage
from streamer._storage.registry import Locations
from streamer._storage.s3 import S3Storage
from tests.e2e.node import staging_files
from tests.support.engine import run_job

from .conftest import PART
from .helpers import sha

CASES = {
    "small": (1000, IN_PLACE_FILE),  # read whole, without a pump
    "multipart-read": (3 * PART + 7, 4 * PART),  # the pump over parallel part GETs
    "in-place": (3 * PART + 7, PART),  # parallel ranges written in place, pinned by HEAD
}


@pytest.mark.parametrize("case", list(CASES))
async def test_an_object_whose_content_does_not_match_its_sha256_metadata_lands_nothing(
    storage: S3Storage, admin: Any, bucket: str, tmp_path: Path, case: str
) -> None:
    size, in_place_file = CASES[case]
    good, bad = os.urandom(size), os.urandom(size)
    for folder in ("file", "tree"):
        admin.put_object(
            Bucket=bucket, Key=f"{folder}/good.bin", Body=good, Metadata={"sha256": sha(good)}
        )
        admin.put_object(  # declares another content's digest: corrupted, or tampered with
            Bucket=bucket, Key=f"{folder}/bad.bin", Body=bad, Metadata={"sha256": sha(good)}
        )
        admin.put_object(Bucket=bucket, Key=f"{folder}/plain.bin", Body=bad)  # declares nothing
    (tmp_path / "data").mkdir()
    where = Locations([LocalStorage("local-0", tmp_path / "data")], buckets=lambda _: storage)
    body = {
        "source": {"type": "s3", "locationId": bucket, "path": ""},
        "destination": {"type": "local", "locationId": "local-0", "path": "/dst"},
        "items": [
            {"path": "file/good.bin", "type": "file"},
            {"path": "file/bad.bin", "type": "file"},
            {"path": "file/plain.bin", "type": "file"},
            {"path": "tree", "type": "directory"},
        ],
    }
    job, store = await run_job(tmp_path, where, body, in_place_file=in_place_file)
    errors = store.file_errors(job.id)  # the file entries of the API's job.errors
    store.close()
    outcome = {f.source: (f.status, f.error) for f in job.files}
    assert outcome == {
        "file/good.bin": (FileStatus.COMPLETED, None),
        "file/bad.bin": (FileStatus.ERROR, "ChecksumMismatch"),
        "file/plain.bin": (FileStatus.COMPLETED, None),
        "tree/good.bin": (FileStatus.COMPLETED, None),
        "tree/bad.bin": (FileStatus.ERROR, "ChecksumMismatch"),
        "tree/plain.bin": (FileStatus.COMPLETED, None),
    }
    assert {e.file: e.error for e in errors} == {
        "file/bad.bin": "ChecksumMismatch",
        "tree/bad.bin": "ChecksumMismatch",
    }
    dst = tmp_path / "data/dst"
    for folder in ("file", "tree"):
        assert sorted(os.listdir(dst / folder)) == ["good.bin", "plain.bin"]
        assert (dst / folder / "good.bin").read_bytes() == good
        assert (dst / folder / "plain.bin").read_bytes() == bad
    assert staging_files(tmp_path / "data") == []
