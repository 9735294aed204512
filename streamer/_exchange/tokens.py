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

from .._jwt import MIN_KEY_BYTES, encode_hs256, verify_subject_token
from .._jwt import invalid as _invalid

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
        claims = verify_subject_token(
            token, self._key, subject=transfer_id, now=self._clock(), what="transfer"
        )
        worker, got_scope = claims.get("worker_id"), claims.get("scope")
        if not (isinstance(worker, str) and got_scope in SCOPES):
            raise _invalid("transfer token claims are malformed")
        if scope is not None and got_scope != scope:
            raise _invalid(f"transfer token scope {got_scope!r} does not allow {scope!r}")
        return TokenClaims(transfer_id, worker, got_scope, float(claims["exp"]), claims["jti"])
