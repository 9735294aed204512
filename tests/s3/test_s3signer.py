"""s3signer.Signer (the AWS CRT's SigV4) signs exactly as botocore's stock S3SigV4Auth
over an AWSRequest: same requests, same moments, the same headers signed and sent."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.auth  # type: ignore[import-untyped]
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials as BotocoreCredentials  # type: ignore[import-untyped]

from streamer._storage import s3signer
from streamer._storage.s3settings import Credentials
from streamer._storage.s3signer import Signer

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
REQUESTS = [
    ("GET", "http://127.0.0.1:9000/b/dir/a%20b%2Bc%20%C3%BC.txt", {"Range": "bytes=0-9"}, EMPTY),
    (
        "GET",
        "http://127.0.0.1:9000/b?continuation-token=a%2Fb&list-type=2&prefix=x%20y",
        {},
        EMPTY,
    ),
    (
        "PUT",
        "http://b.s3.test/k",
        {"Content-Type": "x/y", "x-amz-meta-sha256": "  two   spaces ", "Expect": "100-continue"},
        "UNSIGNED-PAYLOAD",
    ),
    ("POST", "https://s3.test/b/k?uploads=", {"Connection": "keep-alive"}, EMPTY),
]


class _Stock(S3SigV4Auth):  # type: ignore[misc]
    """botocore's signer as a botocore client runs it, told the payload hash as ours is."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["payload"])


MOMENTS = [datetime(2026, 12, 1, 23, 59, 59), datetime(2026, 12, 2, 0, 0, 1)]


@pytest.mark.parametrize("token", [None, "session-token"])
def test_signatures_are_botocores(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    ours = Signer(Credentials("AKIDEXAMPLE", "secret", token), "eu-west-3")
    stock = _Stock(BotocoreCredentials("AKIDEXAMPLE", "secret", token), "s3", "eu-west-3")
    for moment in MOMENTS:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda m=moment: m)
        for method, url, headers, payload in REQUESTS:
            _, _, host, target = url.split("/", 3)
            signed = ours.sign(
                method,
                f"/{target}",
                {**headers, "Host": host},
                payload,
                date=moment.replace(tzinfo=UTC),
            )
            again = AWSRequest(method=method, url=url, headers={**headers, "Host": host})
            again.context["payload"] = payload
            stock.add_auth(again)
            assert _lower(signed) == _lower(dict(again.headers.items())), (method, url, moment)
            assert ("X-Amz-Security-Token" in signed) is (token is not None)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    """Headers as HTTP reads them (RFC 9110 §5): names case-insensitive, values without
    the whitespace around them. botocore and the CRT spell some names differently, and
    the CRT sends values trimmed (both sign them trimmed)."""
    return {name.lower(): value.strip(" \t") for name, value in headers.items()}


def test_a_request_signs_as_of_now_by_default() -> None:
    signer = Signer(Credentials("AKIDEXAMPLE", "secret", None), "us-east-1")
    before = datetime.now(UTC).replace(microsecond=0)
    signed = signer.sign("GET", "/b/k", {"Host": "s3.test"}, EMPTY)
    at = datetime.strptime(signed["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= at <= datetime.now(UTC)


def test_each_request_signs_as_of_its_own_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-running daemon's signer must not keep signing as of its first request
    (S3 refuses a signature 15 minutes off: RequestTimeTooSkewed)."""
    signer = Signer(Credentials("AKIDEXAMPLE", "secret", None), "us-east-1")
    dates = []
    for moment in MOMENTS:
        monkeypatch.setattr(s3signer, "utc_now", lambda m=moment: m.replace(tzinfo=UTC))
        signed = signer.sign("GET", "/b/k", {"Host": "s3.test"}, EMPTY)
        dates.append(signed["X-Amz-Date"])
    assert dates == ["20261201T235959Z", "20261202T000001Z"]


def test_what_is_not_signed_is_still_sent() -> None:
    signer = Signer(Credentials("AKIDEXAMPLE", "secret", None), "us-east-1")
    headers = {"Host": "s3.test", "Expect": "100-continue", "range": "bytes=1-2"}
    signed = signer.sign("GET", "/b/k", headers, EMPTY)
    assert signed["Expect"] == "100-continue" and signed["range"] == "bytes=1-2"
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date," in signed["Authorization"]


def test_a_request_without_host_is_refused() -> None:
    signer = Signer(Credentials("AKIDEXAMPLE", "secret", None), "us-east-1")
    with pytest.raises(ValueError, match="Host"):
        signer.sign("GET", "/b/k", {}, EMPTY)
