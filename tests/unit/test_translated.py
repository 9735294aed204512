"""Translated (one layer's failures raised in the next layer's terms) and the two
translations built on it: the wire's errors as httpx's, httpx's as S3Error."""

from __future__ import annotations

import httpx
import pytest

from streamer._errors import Translated
from streamer._storage import http11
from streamer._storage.httppool import _AS_HTTPX_ERRORS
from streamer._storage.s3errors import S3Error, transport_errors


def test_the_kinds_named_are_raised_as_translated_and_chained() -> None:
    cause = KeyError("k")
    translated = Translated(KeyError, lambda exc: LookupError(f"translated {exc}"))
    with pytest.raises(LookupError, match="translated") as caught, translated:
        raise cause
    assert caught.value.__cause__ is cause


def test_other_exceptions_pass_unchanged() -> None:
    with pytest.raises(ValueError, match="as is"), Translated(KeyError, LookupError):
        raise ValueError("as is")
    with Translated(KeyError, lambda exc: LookupError("no")):
        pass  # nothing raised: nothing translated


def test_wire_failures_become_httpx_errors() -> None:
    with pytest.raises(httpx.ReadTimeout), _AS_HTTPX_ERRORS:
        raise http11.Timeout("read")
    with pytest.raises(httpx.RemoteProtocolError), _AS_HTTPX_ERRORS:
        raise http11.ProtocolError("bad status line")


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (httpx.ReadTimeout("slow"), "RequestTimeout"),
        (httpx.ConnectError("refused"), "ConnectionError"),
    ],
)
def test_transport_failures_become_retryable_s3_errors(
    failure: httpx.TransportError, code: str
) -> None:
    with pytest.raises(S3Error) as caught, transport_errors(lambda: "GET s3://b/k"):
        raise failure
    assert caught.value.code == code and caught.value.retryable
    assert caught.value.message.startswith("GET s3://b/k: ")
