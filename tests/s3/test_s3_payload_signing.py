"""``s3.sign_payload``: by default upload bodies are signed by their SHA-256 over
plain http only; over https they go as ``UNSIGNED-PAYLOAD`` (botocore's rule)."""

from __future__ import annotations

import hashlib

import pytest

from streamer._config import from_mapping
from streamer._errors import ConfigError
from streamer._storage.s3client import S3Client
from streamer._storage.s3locations import settings_from
from streamer._storage.s3settings import S3Settings

from .test_s3_client import reply, scripted


@pytest.mark.parametrize(
    ("endpoint", "sign_payload", "signs"),
    [
        ("http://127.0.0.1:9000", None, True),
        ("https://minio.example:9000", None, False),
        ("", None, False),  # AWS itself: https
        ("https://minio.example:9000", True, True),
        ("http://127.0.0.1:9000", False, False),
    ],
)
def test_who_signs_payloads(endpoint: str, sign_payload: bool | None, signs: bool) -> None:
    assert S3Settings(endpoint_url=endpoint, sign_payload=sign_payload).signs_payload is signs


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://s3.test:9000", hashlib.sha256(b"data").hexdigest()),
        ("https://s3.test:9000", "UNSIGNED-PAYLOAD"),
    ],
)
async def test_a_put_by_default(endpoint: str, expected: str) -> None:
    transport, seen = scripted(reply(200))
    settings = S3Settings(endpoint_url=endpoint, access_key_id="AKID", secret_access_key="s")
    async with S3Client(settings, transport=transport) as client:
        await client.put_object("b", "k", b"data", metadata={})
    assert seen[0].headers["x-amz-content-sha256"] == expected


def test_the_config_key() -> None:
    def signs(raw: object) -> bool | None:
        return settings_from(from_mapping({"s3": {"sign_payload": raw}}).s3).sign_payload  # type: ignore[arg-type]

    assert settings_from(from_mapping({"s3": {}}).s3).sign_payload is None  # type: ignore[arg-type]
    assert (signs("auto"), signs(True), signs(False)) == (None, True, False)
    with pytest.raises(ConfigError, match=r"s3\.sign_payload"):
        signs("sometimes")
