"""Transfer tokens: HS256 JWTs scoped to one transfer and one direction.

Claims: ``sub`` (transfer id), ``worker_id``, ``scope`` (``download`` | ``upload``),
``exp``, ``iat``, ``jti``. :meth:`TokenSigner.verify` accepts a token only if its
header says exactly ``HS256`` (``none`` and every other algorithm are refused
before any signature check), the signature verifies with this node's key, every
claim is present and well-typed, ``sub`` and ``scope`` are the ones asked for,
and ``exp`` is after *now* (the signer's clock, so tests can drive it). Every
refusal is an :class:`~streamer._errors.Unauthorized`; the token is never logged.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from .._errors import Unauthorized
from .._jwt import MIN_KEY_BYTES, decode_hs256, encode_hs256
from .._jwt import invalid as _invalid

MAX_TOKEN_LENGTH: Final = 4096
Scope = Literal["download", "upload"]
SCOPES: Final = ("download", "upload")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    transfer_id: str
    worker_id: str
    scope: Scope
    expires_at: float
    jti: str


class TokenSigner:
    """Issues and verifies transfer tokens with one HS256 key of at least 32 bytes."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._clock = clock

    def issue(self, transfer_id: str, worker_id: str, scope: Scope, expires_at: float) -> str:
        now = int(self._clock())
        claims = {
            "sub": transfer_id,
            "worker_id": worker_id,
            "scope": scope,
            "iat": now,
            "exp": int(expires_at),
            "jti": secrets.token_urlsafe(16),
        }
        return encode_hs256(claims, self._key)

    def verify(self, token: str | None, transfer_id: str, scope: Scope | None) -> TokenClaims:
        """Claims of ``token`` if it is valid for ``transfer_id`` and ``scope`` (any if None)."""
        if not token:
            raise Unauthorized("missing transfer token: send ?token= or 'Authorization: Bearer'")
        if len(token) > MAX_TOKEN_LENGTH:
            raise _invalid("transfer token too long")
        # exp is checked below against our clock; pyjwt would use the wall clock.
        claims = decode_hs256(
            token, self._key, require=["sub", "exp", "iat", "jti"], verify_exp=False
        )
        sub, worker, got_scope, exp, jti = (
            claims.get(k) for k in ("sub", "worker_id", "scope", "exp", "jti")
        )
        if not (
            isinstance(sub, str)
            and isinstance(worker, str)
            and got_scope in SCOPES
            and isinstance(exp, int | float)
            and isinstance(jti, str)
        ):
            raise _invalid("transfer token claims are malformed")
        if not secrets.compare_digest(sub.encode(), transfer_id.encode()):
            raise _invalid("transfer token is for another transfer")
        if scope is not None and got_scope != scope:
            raise _invalid(f"transfer token scope {got_scope!r} does not allow {scope!r}")
        if float(exp) <= self._clock():
            raise _invalid("transfer token has expired", code="token_expired")
        return TokenClaims(sub, worker, got_scope, float(exp), jti)
