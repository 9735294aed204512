"""Job tokens: HS256 JWTs issued with a claim, valid for one job, worker and attempt.

Claims: ``sub`` (job id), ``worker_id``, ``attempt``, ``scope`` (``worker-job``),
``iat``, ``exp``, ``jti``. :meth:`JobTokenSigner.verify` checks the token itself
(algorithm pinned to HS256, signature, ``sub``, ``scope``, ``exp`` against the
signer's clock — see :func:`streamer._jwt.verify_subject_token`); whether the
claim it names (its ``jti`` is the claim's id) is still the job's current one is
the service's check. Every
refusal is a 401; the token is never logged.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._jwt import MIN_KEY_BYTES, encode_hs256, invalid, verify_subject_token

SCOPE: Final = "worker-job"


@dataclass(frozen=True, slots=True)
class JobClaims:
    job_id: str
    worker_id: str
    attempt: int
    expires_at: float
    claim_id: str  # the token's jti: names the claim, which a job's next claim replaces


class JobTokenSigner:
    """Issues and verifies job tokens with one HS256 key of at least 32 bytes."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._clock = clock

    @staticmethod
    def new_claim_id() -> str:
        return secrets.token_urlsafe(16)

    def issue(self, job_id: str, worker_id: str, attempt: int, claim_id: str, *, ttl: float) -> str:
        now = self._clock()
        claims = {
            "sub": job_id,
            "worker_id": worker_id,
            "attempt": attempt,
            "scope": SCOPE,
            "iat": int(now),
            "exp": int(now + ttl),
            "jti": claim_id,
        }
        return encode_hs256(claims, self._key)

    def verify(self, token: str | None, job_id: str) -> JobClaims:
        """The claims of ``token`` if it is a valid, unexpired job token for ``job_id``."""
        claims = verify_subject_token(
            token, self._key, subject=job_id, now=self._clock(), what="job"
        )
        worker, attempt, scope = (claims.get(k) for k in ("worker_id", "attempt", "scope"))
        if not (isinstance(worker, str) and isinstance(attempt, int) and isinstance(scope, str)):
            raise invalid("job token claims are malformed")
        if scope != SCOPE:
            raise invalid(f"token scope {scope!r} is not {SCOPE!r}")
        return JobClaims(job_id, worker, attempt, float(claims["exp"]), claims["jti"])
