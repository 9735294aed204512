"""Transfer tokens: scoped to one transfer and direction, expiring, HS256 only."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from streamer._errors import Unauthorized
from streamer._exchange.tokens import TokenSigner

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_token_works_for_its_transfer_and_scope_only() -> None:
    clock = Clock()
    signer = TokenSigner(KEY, clock=clock)
    token = signer.issue("t-1", "worker-7", "download", clock.now + 60)
    claims = signer.verify(token, "t-1", "download")
    assert (claims.transfer_id, claims.worker_id, claims.scope) == ("t-1", "worker-7", "download")
    assert signer.verify(token, "t-1", None).scope == "download"  # status/delete: any scope
    decoded = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert {"sub", "worker_id", "scope", "exp", "iat", "jti"} <= set(decoded)
    with pytest.raises(Unauthorized, match="another transfer"):
        signer.verify(token, "t-2", "download")
    with pytest.raises(Unauthorized, match="scope"):
        signer.verify(token, "t-1", "upload")


def test_expiry_is_checked_against_the_signers_clock() -> None:
    clock = Clock()
    signer = TokenSigner(KEY, clock=clock)
    token = signer.issue("t-1", "w", "upload", clock.now + 10)
    signer.verify(token, "t-1", "upload")
    clock.now += 10
    with pytest.raises(Unauthorized) as caught:
        signer.verify(token, "t-1", "upload")
    assert caught.value.code == "token_expired"


def test_alg_none_other_keys_and_forgeries_are_refused() -> None:
    clock = Clock()
    signer = TokenSigner(KEY, clock=clock)
    claims = {
        "sub": "t-1",
        "worker_id": "w",
        "scope": "download",
        "exp": clock.now + 60,
        "iat": clock.now,
        "jti": "x",
    }
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(Unauthorized, match="algorithm 'none'"):
        signer.verify(unsigned, "t-1", "download")
    hs512 = jwt.encode(claims, KEY * 2, algorithm="HS512")
    with pytest.raises(Unauthorized, match="HS512"):
        signer.verify(hs512, "t-1", "download")
    other = jwt.encode(claims, b"o" * 32, algorithm="HS256")
    with pytest.raises(Unauthorized, match="signature"):
        signer.verify(other, "t-1", "download")
    good = signer.issue("t-1", "w", "download", clock.now + 60)
    head, _, sig = good.split(".")
    upgraded = _b64({**claims, "scope": "upload"})
    with pytest.raises(Unauthorized, match="signature"):
        signer.verify(f"{head}.{upgraded}.{sig}", "t-1", "upload")
    no_jti = jwt.encode({k: v for k, v in claims.items() if k != "jti"}, KEY, algorithm="HS256")
    with pytest.raises(Unauthorized, match="jti"):
        signer.verify(no_jti, "t-1", "download")
    for garbage in ("", "not-a-jwt", "a.b.c", "x" * 5000):
        with pytest.raises(Unauthorized):
            signer.verify(garbage, "t-1", "download")


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenSigner(b"short" * 6)
