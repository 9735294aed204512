"""HS256 JWT decoding shared by node transfer tokens and exchange tokens.

The algorithm is pinned before anything else is looked at (``alg: none`` and
every other algorithm are refused), then pyjwt checks the signature and the
required claims. Every failure is a 401 :class:`Unauthorized` whose message says
what was wrong and never echoes the token.

pyjwt is imported on first use, not with this module: it imports cryptography
(for algorithms HS256 does not need), ~8 MB that a node which never signs or
checks a token would keep resident.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Sequence
from typing import Any, Final

from ._errors import Unauthorized

ALGORITHM: Final = "HS256"
MAX_TOKEN_LENGTH: Final = 4096
#: The shortest key :func:`encode_hs256` callers accept (RFC 7518: the hash size).
MIN_KEY_BYTES: Final = 32


def encode_hs256(claims: dict[str, Any], key: bytes) -> str:
    """``claims`` signed with ``key`` as an HS256 JWT."""
    import jwt  # on first use: see the module docstring

    return jwt.encode(claims, key, algorithm=ALGORITHM)


def invalid(message: str, *, code: str = "invalid_token") -> Unauthorized:
    return Unauthorized(message, code=code)


def decode_hs256(
    token: str,
    key: str | bytes,
    *,
    require: Sequence[str],
    leeway: float = 0.0,
    verify_exp: bool = True,
) -> dict[str, Any]:
    """The claims of ``token`` signed with ``key``; ``exp`` is checked (with ``leeway``)
    unless the caller checks it against its own clock (``verify_exp=False``)."""
    import jwt  # on first use: see the module docstring

    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise invalid("transfer token is not a JWT") from None
    if header.get("alg") != ALGORITHM:
        raise invalid(f"transfer token algorithm {header.get('alg')!r} is not allowed")
    try:
        with warnings.catch_warnings():
            # A short key is the operator's choice, reported at start, not per request.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                leeway=leeway,
                options={
                    "require": list(require),
                    "verify_exp": verify_exp,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
    except jwt.ExpiredSignatureError:
        raise invalid("transfer token has expired", code="token_expired") from None
    except jwt.InvalidSignatureError:
        raise invalid("transfer token signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise invalid(f"transfer token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise invalid(f"invalid transfer token: {exc}") from None
    return claims


def verify_subject_token(
    token: str | None, key: bytes, *, subject: str, now: float, what: str
) -> dict[str, Any]:
    """The claims of a ``what`` token (a transfer's, a worker job's) issued for ``subject``.

    Checks, in order: a token was presented, its length, the algorithm, the
    signature, that ``sub``/``exp``/``iat``/``jti`` are present and well-typed, that
    ``sub`` is ``subject`` (constant time) and that ``exp`` is after ``now`` (the
    caller's clock, so tests can drive it). Every refusal is a 401; the caller
    checks its own further claims.
    """
    if not token:
        raise Unauthorized(f"missing {what} token: send ?token= or 'Authorization: Bearer'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise invalid(f"{what} token too long")
    claims = decode_hs256(token, key, require=["sub", "exp", "iat", "jti"], verify_exp=False)
    sub, exp, jti = (claims.get(k) for k in ("sub", "exp", "jti"))
    if not (isinstance(sub, str) and isinstance(exp, int | float) and isinstance(jti, str)):
        raise invalid(f"{what} token claims are malformed")
    if not secrets.compare_digest(sub.encode(), subject.encode()):
        raise invalid(f"{what} token is for another {what}")
    if float(exp) <= now:
        raise invalid(f"{what} token has expired", code="token_expired")
    return claims
