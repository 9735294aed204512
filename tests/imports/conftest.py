"""Fixtures for import tests: stub servers on 127.0.0.1 and a fast-retrying client."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from streamer._storage.http import HttpClient, HttpSettings
from tests.support.hubstub import FileServer, HubFile, HubStub

TOKEN = "hf_test_token_0123456789"
# The stubs listen on 127.0.0.1, which the default address policy refuses.
FAST = HttpSettings(
    connect_timeout=5.0,
    read_timeout=10.0,
    max_retries=3,
    backoff_base=0.001,
    backoff_max=0.01,
    allow_private_networks=True,
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hub() -> Iterator[HubStub]:
    server = HubStub(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    async with HttpClient(FAST) as http:
        yield http


# Repositories most Hub tests use.
WEIGHTS = os.urandom((2 << 20) + 12345)
WEIGHTS_V1 = os.urandom(300_000)
MODEL_MAIN = {
    "config.json": HubFile(b'{"model_type": "test"}'),
    "README.md": HubFile(b"# a model\n"),
    "unet/model.safetensors": HubFile(WEIGHTS, lfs=True),
    "unet/config.json": HubFile(b"{}"),
}
MODEL_V1 = {
    "config.json": HubFile(b'{"model_type": "old"}'),
    "unet/model.safetensors": HubFile(WEIGHTS_V1, lfs=True),
}
DATASET_MAIN = {
    "data/train.csv": HubFile(b"a,b\n1,2\n" * 1000),
    "data/test.parquet": HubFile(os.urandom(70_000), lfs=True),
}
CORRUPT = {
    "good.bin": HubFile(os.urandom(10_000), lfs=True),
    "bad.bin": HubFile(os.urandom(20_000), lfs=True, sha256="0" * 64),
}


def populate(hub: HubStub) -> dict[str, str]:
    """Add the usual repositories; returns the model's commits by revision."""
    commits = hub.add("org/model", {"main": MODEL_MAIN, "v1": MODEL_V1})
    hub.add("org/data", {"main": DATASET_MAIN}, repo_type="dataset")
    hub.add("org/corrupt", {"main": CORRUPT})
    hub.add("org/private", {"main": {"secret.txt": HubFile(b"s3cret")}}, private=True)
    hub.add("org/gated", {"main": {"w.bin": HubFile(b"w", lfs=True)}}, gated=True)
    return commits
