"""Transfer tokens: the Panel's JWT that lets a source node push to this node.

The Panel signs a short-lived JWT with the *destination* node's token (HS256,
as Wings does) and hands it to the source, which presents it as
``Authorization: Bearer <jwt>``. :func:`verify_transfer_token` accepts it only
if

* the header's ``alg`` is exactly ``HS256`` (``none``, RS*/ES*, ``HS512`` and
  anything else are refused before any signature check, so no key confusion);
* the signature verifies with this node's ``panel.token``;
* ``exp`` is present and not past (``LEEWAY_SECONDS`` of clock skew allowed),
  and ``nbf``/``iat``, when present, are not in the future;
* ``sub`` is present and is a UUID in its canonical 8-4-4-4-12 form: it names
  the directory ``servers.root/<sub>`` the archive goes to.

``aud`` and ``iss`` are not checked (Pterodactyl sets them to URLs a node
cannot know reliably). Every refusal is an :class:`~streamer._errors.Unauthorized`.

:attr:`TransferClaims.replay_key` identifies the token for replay protection
(see :class:`~streamer._node.service.NodeService`): the ``jti`` together with
``iat`` when the token has a ``jti`` (Pterodactyl derives its ``jti`` from the
server, so the same ``jti`` comes back on the next transfer of that server with
a new ``iat``), else a hash of the whole token.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from .._errors import Unauthorized
from .._jwt import decode_hs256
from .._jwt import invalid as _invalid

LEEWAY_SECONDS: Final = 30.0
MAX_TOKEN_LENGTH: Final = 8192
UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


@dataclass(frozen=True, slots=True)
class TransferClaims:
    """What a verified transfer token says."""

    server: str
    """``sub``: the destination server's UUID, lower-cased."""
    expires_at: float
    """``exp``, seconds since the epoch."""
    jti: str | None
    replay_key: str


def is_uuid(text: str) -> bool:
    return UUID_RE.fullmatch(text) is not None


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 otherwise."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <jwt>'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("bearer token too long", code="invalid_token")
    return token


def verify_transfer_token(
    token: str, key: str, *, leeway: float = LEEWAY_SECONDS
) -> TransferClaims:
    """Check ``token`` against ``key`` by the rules of the module docstring."""
    if not key:
        raise Unauthorized("this node has no panel.token to verify transfer tokens with")
    claims = decode_hs256(token, key, require=["exp", "sub"], leeway=leeway)
    subject = claims["sub"]
    if not isinstance(subject, str) or not is_uuid(subject):
        raise _invalid("transfer token subject is not a server UUID")
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or not 0 < len(jti) <= 512):
        raise _invalid("transfer token jti must be a non-empty string")
    if jti is not None:
        replay = f"jti:{jti}:{claims.get('iat', '')}"
    else:
        replay = "token:" + hashlib.sha256(token.encode()).hexdigest()
    return TransferClaims(
        server=subject.lower(),
        expires_at=float(claims["exp"]),
        jti=jti,
        replay_key=hashlib.sha256(replay.encode()).hexdigest(),
    )
