"""SigV4 signatures for S3 requests, computed by botocore's :class:`S3SigV4Auth`.

The algorithm is botocore's own, unchanged: canonical request, string to sign,
HMAC chain. What differs is what it runs over. botocore's ``AWSRequest`` keeps its
headers in an ``email.message.Message`` (every read and write sanitises and
searches a list); the signer here hands it :class:`_Request`, whose headers are
a small dict keyed by lower-case name, with only the methods the signer calls.
It also selects the signed headers once per signing (botocore selects them twice,
each time parsing the URL for a Host the request already carries) and derives the
signing key once per day instead of once per request (four HMACs of five).
A ranged GET's signature: 51 -> 37 µs on this hardware. The tests compare its
signatures with stock botocore's for the same requests at the same moment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SIGNED_HEADERS_BLACKLIST, S3SigV4Auth  # type: ignore[import-untyped]

from .s3settings import Credentials

_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
_SELECTED = "streamer_signed_headers"  # where the selection is kept in the context


class _Headers:
    """The header map botocore's signer reads and writes: one value per name, names
    matched case-insensitively and kept as last set. Unlike ``email.message`` (which
    appends), setting a name replaces its value and spelling; the signer deletes
    before it sets, so both give the same request."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {name.lower(): (name, value) for name, value in headers.items()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        self._items.pop(name.lower(), None)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.values())

    def get_all(self, name: str, failobj: Any = None) -> Any:
        item = self._items.get(name.lower())
        return failobj if item is None else [item[1]]


@dataclass(slots=True)
class _Request:
    """What botocore's signer reads of an ``AWSRequest``; the query is in ``url``."""

    method: str
    url: str
    headers: _Headers
    context: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)


class Signer(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 SigV4 for one set of credentials and region; see the module doc."""

    def __init__(self, credentials: Credentials, region: str) -> None:
        super().__init__(credentials, "s3", region)
        self._key_day = ""
        self._key = b""

    def sign(
        self, method: str, url: str, headers: Mapping[str, str], payload_sha256: str
    ) -> dict[str, str]:
        """``headers`` (which must name the ``Host`` as sent) with the signature's
        headers added (``Authorization``, ``X-Amz-Date``, ``X-Amz-Content-SHA256``,
        and ``X-Amz-Security-Token`` with a session token); ``payload_sha256`` is
        what the body is signed as (its SHA-256, or ``UNSIGNED-PAYLOAD``)."""
        request = _Request(method, url, _Headers(headers), {"payload_sha256": payload_sha256})
        if "host" not in request.headers:
            raise ValueError("a request to sign names its Host")
        self.add_auth(request)
        return dict(request.headers.items())

    def payload(self, request: _Request) -> str:
        return str(request.context["payload_sha256"])

    def headers_to_sign(self, request: _Request) -> _Headers:
        selected = request.context.get(_SELECTED)
        if selected is None:
            selected = request.context[_SELECTED] = _Headers(
                {
                    lower: value
                    for name, value in request.headers.items()
                    if (lower := name.lower()) not in _UNSIGNED
                }
            )
        return selected

    def signature(self, string_to_sign: str, request: _Request) -> str:
        """botocore's signature, with the key derived once per day (it depends on
        nothing else that changes: secret, region and service are the signer's)."""
        day = request.context["timestamp"][0:8]
        if day != self._key_day:
            key = self._sign(f"AWS4{self.credentials.secret_key}".encode(), day)
            for part in (self._region_name, self._service_name, "aws4_request"):
                key = self._sign(key, part)
            self._key_day, self._key = day, key
        signed: str = self._sign(self._key, string_to_sign, hex=True)
        return signed
