"""The S3 client without a server: httpx.MockTransport and trio's MockClock."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import parsedate_to_datetime

import botocore.auth  # type: ignore[import-untyped]
import httpx
import pytest
import trio
import trio.testing
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from streamer._errors import ConfigError
from streamer._storage import s3xml
from streamer._storage.s3client import S3Client
from streamer._storage.s3errors import S3Error, S3NotFound
from streamer._storage.s3object import _http_date_ns
from streamer._storage.s3settings import MiB, S3Settings
from tests.support.faultproxy import s3_error_body


def settings(**overrides: object) -> S3Settings:
    base: dict[str, object] = {
        "endpoint_url": "http://s3.test:9000",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "secret",
        "backoff_base": 1.0,
        "backoff_max": 100.0,
        "max_retries": 3,
    }
    return S3Settings(**(base | overrides))  # type: ignore[arg-type]


class _Stream(httpx.AsyncByteStream):
    """A body like a real transport's: not yet read (``content=`` would be)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=_Stream(body))


def scripted(
    *responses: httpx.Response | Exception,
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering each request with the next scripted response (or raising it)."""
    seen: list[httpx.Request] = []
    script = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


def slow_down() -> httpx.Response:
    return reply(503, s3_error_body("SlowDown"))


async def test_backoff_is_exponential_with_full_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, seen = scripted(slow_down(), slow_down(), reply(200, headers={"ETag": '"e"'}))
    async with S3Client(settings(), transport=transport) as client:
        start = trio.current_time()
        assert await client.put_object("b", "k", b"x", metadata={}) == '"e"'
        elapsed = trio.current_time() - start
    assert client.retries == 2
    assert len(seen) == 3
    assert 0 <= elapsed <= 1.0 + 2.0  # uniform(0, 1) + uniform(0, 2)


async def test_retries_stop_at_max_retries(autojump_clock: trio.testing.MockClock) -> None:
    transport, seen = scripted(*(reply(503) for _ in range(4)))  # HEAD: no body
    async with S3Client(settings(), transport=transport) as client:
        with pytest.raises(S3Error) as caught:
            await client.head_bucket("b")
    assert (caught.value.code, caught.value.status) == ("ServiceUnavailable", 503)
    assert (client.retries, len(seen)) == (3, 4)


async def test_connection_errors_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    transport, _ = scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), reply(200))
    async with S3Client(settings(), transport=transport) as client:
        await client.delete_object("b", "k")
    assert client.retries == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "NoSuchKey"), (403, "AccessDenied"), (400, "InvalidArgument"), (501, "NotImplemented")],
)
async def test_client_errors_are_not_retried(status: int, code: str) -> None:
    transport, _ = scripted(reply(status, s3_error_body(code, "no")))
    async with S3Client(settings(), transport=transport) as client:
        with pytest.raises(S3Error) as caught:
            await client.list_objects("b", "")
    assert (caught.value.code, caught.value.message, caught.value.status) == (code, "no", status)
    assert isinstance(caught.value, S3NotFound) == (code == "NoSuchKey")
    assert client.retries == 0


async def test_error_in_a_200_body_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    result = b"<CompleteMultipartUploadResult><ETag>&quot;abc-2&quot;</ETag>"
    result += b"</CompleteMultipartUploadResult>"
    transport, seen = scripted(
        reply(200, s3_error_body("InternalError", "try again")),
        reply(200, result),
    )
    async with S3Client(settings(), transport=transport) as client:
        assert await client.complete_multipart_upload("b", "k", "up1", ['"a"', '"b"']) == '"abc-2"'
    assert client.retries == 1
    body = seen[-1].content
    assert b'<Part><PartNumber>2</PartNumber><ETag>"b"</ETag></Part>' in body


async def test_requests_are_signed_with_the_payload_hash() -> None:
    transport, seen = scripted(reply(200))
    async with S3Client(settings(session_token="tok"), transport=transport) as client:
        await client.put_object("b", "dir/a b+c ü.txt", b"data", metadata={"sha256": "00"})
    request = seen[0]
    assert str(request.url) == "http://s3.test:9000/b/dir/a%20b%2Bc%20%C3%BC.txt"
    assert request.headers["x-amz-content-sha256"] == (
        "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    )
    assert request.headers["x-amz-meta-sha256"] == "00"
    assert request.headers["x-amz-security-token"] == "tok"
    assert request.headers["content-length"] == "4"
    assert (request.headers["host"], request.headers["user-agent"]) == ("s3.test:9000", "streamer")
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")


async def test_signature_is_botocores_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's signer (headers selected once, Host given) signs exactly as botocore's
    stock S3SigV4Auth does for the same request at the same moment, virtual-host style too."""
    transport, seen = scripted(reply(200), reply(200))
    async with S3Client(settings(session_token="tok"), transport=transport) as client:
        await client.put_object("b", "dir/a b+c ü.txt", b"data", metadata={"sha256": "00"})
    async with S3Client(settings(addressing_style="virtual"), transport=transport) as client:
        await client.head_object("b", "k")
    for sent, token in zip(seen, ("tok", None), strict=True):
        moment = datetime.strptime(sent.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda m=moment: m)
        signed = sent.headers["authorization"].partition("SignedHeaders=")[2].partition(",")[0]
        assert "host" in signed.split(";")
        unsigned = {k: v for k, v in sent.headers.items() if k in signed.split(";")}
        again = AWSRequest(
            method=sent.method, url=str(sent.url), headers=unsigned, data=sent.content
        )
        S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret", token), "s3", "us-east-1").add_auth(again)
        assert again.headers["Authorization"] == sent.headers["authorization"]


async def test_unsigned_payload_skips_hashing_bodies_but_not_listings() -> None:
    transport, seen = scripted(reply(200), reply(200, headers={"ETag": '"p"'}), reply(200))
    data = bytes(range(256)) * 5000  # sent in slices: the server must see it whole
    async with S3Client(settings(sign_payload=False), transport=transport) as client:
        await client.put_object("b", "k", data, metadata={})
        await client.upload_part("b", "k", "u", 1, memoryview(data))
        await client.delete_object("b", "k")
    put, part, delete = seen
    assert put.headers["x-amz-content-sha256"] == part.headers["x-amz-content-sha256"]
    assert put.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert put.content == part.content == data
    assert delete.headers["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()


async def test_head_of_a_large_object() -> None:
    headers = {"Content-Length": str(10 * 1024 * MiB), "ETag": '"e"', "x-amz-meta-sha256": "ab"}
    transport, _ = scripted(reply(200, headers=headers), reply(404))
    async with S3Client(settings(), transport=transport) as client:
        info = await client.head_object("b", "big")
        assert info is not None
        assert (info.size, info.etag, dict(info.metadata)) == (
            10 * 1024 * MiB,
            '"e"',
            {"sha256": "ab"},
        )
        assert await client.head_object("b", "missing") is None


async def test_a_bucket_in_another_region_is_named_in_the_error() -> None:
    """AWS answers a request for a bucket of another region with its region in
    ``x-amz-bucket-region`` (a HEAD has no body to say more than 301): the error
    says which region, and which setting to change. A server that sends the header
    with every answer gets no hint on errors that are not about regions."""
    elsewhere = {"x-amz-bucket-region": "eu-west-1"}
    body = s3_error_body(
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint.",
    )
    transport, _ = scripted(
        reply(301, headers=elsewhere),
        reply(301, body, headers=elsewhere),
        reply(403, s3_error_body("AccessDenied", "Access Denied"), elsewhere),  # no redirect
    )
    async with S3Client(settings(region="us-east-1"), transport=transport) as client:
        with pytest.raises(S3Error) as head:
            await client.head_object("b", "k")
        with pytest.raises(S3Error) as get:
            await client.list_objects_page("b", "")
        with pytest.raises(S3Error) as denied:
            await client.list_objects_page("b", "")
    hint = "(bucket b is in eu-west-1, not us-east-1: set s3.region)"
    assert head.value.code == "PermanentRedirect" and str(head.value).endswith(hint)
    assert get.value.code == "PermanentRedirect" and str(get.value).endswith(hint)
    assert "addressed using the specified endpoint" in str(get.value)
    assert denied.value.code == "AccessDenied" and "s3.region" not in str(denied.value)


def test_urls() -> None:
    path = S3Client(settings())
    assert path.url("b", "k/x y") == "http://s3.test:9000/b/k/x%20y"
    assert path.url("b", query=[("prefix", "a/b c"), ("list-type", "2")]) == (
        "http://s3.test:9000/b?list-type=2&prefix=a%2Fb%20c"
    )
    virtual = S3Client(settings(addressing_style="virtual", endpoint_url=""))
    assert virtual.url("b", "k") == "https://b.s3.us-east-1.amazonaws.com/k"


def test_settings_validation_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="part_size"):
        settings(part_size=MiB)
    with pytest.raises(ConfigError, match="parts_in_flight"):
        settings(parts_in_flight=0)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    credentials = S3Settings().credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "env-key",
        "env-secret",
        "env-token",
    )
    assert "env-secret" not in repr(credentials) and "env-token" not in repr(credentials)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="credentials"):
        S3Settings().credentials()


def test_xml_listing_pages() -> None:
    page = s3xml.parse_object_page(
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
        b"<NextContinuationToken>tok/1=</NextContinuationToken>"
        b"<Contents><Key>a%20b/c%2Bd</Key><Size>7</Size>"
        b"<LastModified>2024-05-01T12:00:00.123Z</LastModified><ETag>&quot;e&quot;</ETag></Contents>"
        b"</ListBucketResult>"
    )
    assert page == s3xml.ObjectPage(
        [s3xml.ObjectSummary("a b/c+d", 7, 1_714_564_800_123_000_000, '"e"')], "tok/1="
    )
    uploads = s3xml.parse_upload_page(
        b"<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>"
        b"<NextKeyMarker>k</NextKeyMarker><NextUploadIdMarker>u</NextUploadIdMarker>"
        b"<Upload><Key>k</Key><UploadId>u</UploadId></Upload></ListMultipartUploadsResult>"
    )
    assert uploads == s3xml.UploadPage([s3xml.UploadSummary("k", "u")], "k", "u")
    assert s3xml.parse_error(b"<ListBucketResult/>") is None
    assert s3xml.parse_error(s3_error_body("SlowDown", "slow")) == ("SlowDown", "slow")


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Wed, 29 Feb 2028 23:59:59 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 form: the slow path
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 06 Xyz 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:4x:37 GMT",
        "garbage",
    ],
)
def test_last_modified_dates(value: str) -> None:
    """The fast IMF-fixdate reader agrees with email.utils, and refuses what it refuses."""
    try:
        expected: int | None = s3xml.datetime_ns(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        expected = None
    assert _http_date_ns(value) == expected
