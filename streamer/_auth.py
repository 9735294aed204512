"""API bearer tokens and one-time SSE tickets. Secrets are compared in constant
time and never logged; tickets are stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from ._errors import Unauthorized

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"
TICKET_TTL_SECONDS = 60.0
MAX_OUTSTANDING_TICKETS = 10_000


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` against the configured tokens."""

    def __init__(self, tokens: Sequence[str], *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._tokens = [t.encode() for t in tokens]

    def check(self, header: str | None) -> None:
        """Raise :class:`Unauthorized` unless ``header`` carries a valid token."""
        if not self.enabled:
            return
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        candidate = presented.strip().encode()
        # Compare against every token so timing does not reveal which one matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        if not matched:
            raise Unauthorized("invalid bearer token")


def load_or_create_token(state_dir: str) -> tuple[str, bool]:
    """The node's generated API token from ``state_dir`` (mode 0600); create it on
    first start. Returns ``(token, created)``."""
    path = os.path.join(state_dir, TOKEN_FILE)
    os.makedirs(state_dir, exist_ok=True)
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip(), False
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token, True


@dataclass(slots=True)
class _Ticket:
    resource: str
    expires_at: float


class TicketBook:
    """One-use tickets for the SSE stream, bound to a job and expiring after 60 s.

    Tickets are kept by their SHA-256, so a lookup's timing says nothing about
    the secret, and the bound resource is compared in constant time.
    """

    def __init__(
        self, *, ttl: float = TICKET_TTL_SECONDS, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._tickets: dict[bytes, _Ticket] = {}

    def issue(self, resource: str) -> str:
        now = self._clock()
        self._purge(now)
        if len(self._tickets) >= MAX_OUTSTANDING_TICKETS:
            raise Unauthorized("too many outstanding tickets; retry later", code="too_many_tickets")
        ticket = secrets.token_urlsafe(32)
        self._tickets[_digest(ticket)] = _Ticket(resource, now + self.ttl)
        return ticket

    def redeem(self, ticket: str | None, resource: str) -> None:
        """Consume ``ticket`` for ``resource``; raise :class:`Unauthorized` otherwise."""
        if not ticket:
            raise Unauthorized("missing ticket: get one from POST /api/auth/sse-ticket")
        entry = self._tickets.pop(_digest(ticket), None)
        if (
            entry is None
            or entry.expires_at < self._clock()
            or not hmac.compare_digest(entry.resource.encode(), resource.encode())
        ):
            raise Unauthorized("invalid, used or expired ticket", code="invalid_ticket")

    def _purge(self, now: float) -> None:
        expired = [k for k, t in self._tickets.items() if t.expires_at < now]
        for key in expired:
            del self._tickets[key]


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).digest()
