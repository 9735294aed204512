"""The Panel client: transfer status callbacks, persisted and retried until delivered.

A node tells the Panel how a transfer ended with
``POST {panel.url}/api/remote/servers/{uuid}/transfer/success|failure`` and an
empty JSON body (``{}``), authenticated as Wings does with
``Authorization: Bearer <token_id>.<token>``; the ``User-Agent`` names streamer
and the token id (never the token).

:meth:`PanelClient.report` only writes the callback to the state database (an
outbox) and wakes :meth:`PanelClient.run`, which delivers callbacks one at a
time, oldest first. Connection errors, timeouts, 5xx and 429 are retried with
exponential backoff and jitter; any other 4xx means the Panel refuses the
callback, so it is dropped (and logged). Callbacks still undelivered at
shutdown are delivered after the next start. A ``success`` for a server
supersedes an undelivered ``failure`` for the same server (a retried push that
made it). Callbacks older than ``MAX_AGE_SECONDS`` are given up.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Final

import httpx
import trio

from .. import __version__
from .._engine.jobs import now_ms
from .._engine.store import Callback, Store

log = logging.getLogger(__name__)

BASE_DELAY: Final = 0.5
MAX_DELAY: Final = 60.0
TIMEOUT: Final = 30.0
MAX_AGE_SECONDS: Final = 7 * 24 * 3600.0
_ACCEPT: Final = "application/vnd.pterodactyl.v1+json"


def backoff(
    attempt: int,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...):
    exponential, capped, with the upper half randomised ("equal jitter")."""
    delay = min(cap, base * 2.0 ** min(attempt - 1, 32))
    return delay / 2 + jitter() * delay / 2


class PanelClient:
    """Delivers transfer callbacks to the Panel; see the module docstring.

    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    With an empty ``url`` callbacks are logged and dropped.
    """

    def __init__(
        self,
        store: Store,
        *,
        url: str,
        token_id: str,
        token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        timeout: float = TIMEOUT,
    ) -> None:
        self._store = store
        self._url = url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token_id}.{token}",
            "User-Agent": f"streamer/{__version__} (id:{token_id})",
            "Accept": _ACCEPT,
            "Content-Type": "application/json",
        }
        self._transport = transport
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._timeout = timeout
        self._wake = trio.Event()
        self._not_before: dict[int, float] = {}  # callback id -> trio time of next attempt
        self.delivered = 0

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    def report(self, server: str, *, success: bool, job_id: str) -> None:
        """Queue ``success``/``failure`` for ``server`` (at most one callback per job)."""
        outcome = "success" if success else "failure"
        if not self.enabled:
            log.warning("panel.url is not set: not reporting %s of server %s", outcome, server)
            return
        if self._store.add_callback(job_id, server, outcome):
            log.info("queued transfer %s callback for server %s (job %s)", outcome, server, job_id)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued callbacks until cancelled."""
        async with httpx.AsyncClient(
            transport=self._transport, timeout=self._timeout, headers=self._headers
        ) as client:
            task_status.started()
            while True:
                self._wake = trio.Event()
                pending = self._store.pending_callbacks() if self.enabled else []
                if not pending:
                    await self._wake.wait()
                    continue
                head = pending[0]
                due = self._not_before.get(head.id, -float("inf"))
                if due > trio.current_time():
                    with trio.move_on_at(due):
                        await self._wake.wait()
                    continue
                await self._attempt(client, head)

    async def _attempt(self, client: httpx.AsyncClient, callback: Callback) -> None:
        url = f"{self._url}/api/remote/servers/{callback.server}/transfer/{callback.outcome}"
        what = f"transfer {callback.outcome} callback for server {callback.server}"
        try:
            response = await client.post(url, content=b"{}")
        except httpx.HTTPError as exc:
            self._retry(callback, f"{type(exc).__name__}: {exc}", what)
            return
        status = response.status_code
        if 200 <= status < 300:
            self._delivered(callback)
            log.info("delivered %s", what)
        elif status == 429 or status >= 500:
            self._retry(callback, f"HTTP {status}", what)
        else:
            self._delivered(callback)
            log.error("the Panel refused the %s: HTTP %d %s", what, status, response.text[:200])

    def _delivered(self, callback: Callback) -> None:
        self._store.delete_callback(callback.id)
        self._not_before.pop(callback.id, None)
        self.delivered += 1

    def _retry(self, callback: Callback, error: str, what: str) -> None:
        attempts = callback.attempts + 1
        if now_ms() - callback.created_at > MAX_AGE_SECONDS * 1000:
            log.error("giving up the %s after %d attempts: %s", what, attempts, error)
            self._delivered(callback)
            return
        self._store.callback_attempted(callback.id, attempts, error)
        delay = backoff(attempts, base=self._base_delay, cap=self._max_delay)
        self._not_before[callback.id] = trio.current_time() + delay
        log.warning("%s failed (attempt %d: %s); retrying in %.1fs", what, attempts, error, delay)
