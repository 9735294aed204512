"""Transfer JWT rules: HS256 only, signature, exp (with leeway), sub = UUID, jti."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from streamer._errors import Unauthorized
from streamer._node.tokens import LEEWAY_SECONDS, bearer_token, verify_transfer_token

KEY = "destination-node-token-" + "k" * 48
SERVER = "8a2b7c1d-0e4f-4a5b-9c6d-7e8f9a0b1c2d"


def make(payload: dict[str, Any] | None = None, *, key: str = KEY, alg: str = "HS256") -> str:
    claims: dict[str, Any] = {"sub": SERVER, "exp": int(time.time()) + 300}
    claims.update(payload or {})
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=alg)


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


def refused(token: str, *, code: str = "invalid_token", key: str = KEY) -> str:
    with pytest.raises(Unauthorized) as caught:
        verify_transfer_token(token, key)
    assert caught.value.code == code
    assert caught.value.status_code == 401
    return caught.value.message


def test_a_valid_token_names_the_server() -> None:
    claims = verify_transfer_token(make({"jti": "abc", "iat": int(time.time())}), KEY)
    assert claims.server == SERVER
    assert claims.jti == "abc"
    assert claims.expires_at > time.time()


def test_upper_case_subject_is_normalised() -> None:
    assert verify_transfer_token(make({"sub": SERVER.upper()}), KEY).server == SERVER


def test_wrong_key_is_refused() -> None:
    assert "signature" in refused(make(key="another-node-token-" + "x" * 40))


def test_alg_none_is_refused_even_unsigned() -> None:
    token = forged({"alg": "none", "typ": "JWT"}, {"sub": SERVER, "exp": time.time() + 60})
    assert "'none'" in refused(token)
    assert "'None'" in refused(forged({"alg": "None"}, {"sub": SERVER, "exp": time.time() + 60}))


@pytest.mark.parametrize("alg", ["HS512", "HS384", "RS256", "ES256", "PS256", ""])
def test_other_algorithms_are_refused_before_any_signature_check(alg: str) -> None:
    token = forged({"alg": alg}, {"sub": SERVER, "exp": time.time() + 60}, b"x" * 32)
    refused(token)


def test_hs512_signed_with_the_right_key_is_still_refused() -> None:
    refused(make(alg="HS512"))


def test_expired_is_refused_but_small_skew_is_tolerated() -> None:
    refused(make({"exp": int(time.time()) - int(LEEWAY_SECONDS) - 5}), code="token_expired")
    assert verify_transfer_token(make({"exp": int(time.time()) - 5}), KEY).server == SERVER


def test_exp_is_required_and_must_be_a_number() -> None:
    assert "'exp'" in refused(make({"exp": None}))
    refused(make({"exp": "tomorrow"}))


def test_not_yet_valid_is_refused() -> None:
    refused(make({"nbf": int(time.time()) + 600}))


@pytest.mark.parametrize(
    "sub",
    [
        None,
        "",
        "not-a-uuid",
        "../../etc",
        "8a2b7c1d0e4f4a5b9c6d7e8f9a0b1c2d",  # no dashes: not the directory name
        "{8a2b7c1d-0e4f-4a5b-9c6d-7e8f9a0b1c2d}",
        "urn:uuid:8a2b7c1d-0e4f-4a5b-9c6d-7e8f9a0b1c2d",
        SERVER + "/x",
        12345,
    ],
)
def test_sub_must_be_a_canonical_uuid(sub: Any) -> None:
    if sub is None:
        assert "'sub'" in refused(make({"sub": None}))
    else:
        refused(make({"sub": sub}))


def test_jti_must_be_a_string() -> None:
    refused(make({"jti": 42}))
    refused(make({"jti": ""}))


def test_replay_key_is_per_jti_and_iat() -> None:
    now = int(time.time())
    a = verify_transfer_token(make({"jti": "j1", "iat": now}), KEY)
    b = verify_transfer_token(make({"jti": "j1", "iat": now, "exp": now + 999}), KEY)
    c = verify_transfer_token(make({"jti": "j1", "iat": now - 60}), KEY)
    assert a.replay_key == b.replay_key != c.replay_key
    # Without a jti the token itself is the key.
    d, e = make({"iat": now}), make({"iat": now - 1})
    assert verify_transfer_token(d, KEY).replay_key != verify_transfer_token(e, KEY).replay_key
    assert "j1" not in a.replay_key  # stored hashed


def test_garbage_and_missing_key() -> None:
    refused("not.a.jwt")
    refused("x")
    assert "panel.token" in refused(make(), key="", code="unauthorized")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc ", "abc"), ("BEARER x", "x")],
)
def test_bearer_header(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "abc.def.ghi", "Bearer  "])
def test_bearer_header_missing(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)
