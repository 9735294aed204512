"""One way to reach a node: an ``httpx.AsyncClient`` with its token, and its errors.

Every endpoint of ``streamer serve`` answers errors as ``{"error": code,
"message": text}``; :func:`raise_for_error` turns such a response (or any other
non-2xx answer) into an :class:`ApiError` carrying both.
"""

from __future__ import annotations

import httpx

from .._httpcoretls import lean_transport
from .._netio import tune_client_reads

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ApiError(Exception):
    """A non-2xx answer from the node: HTTP ``status``, the error ``code`` and ``message``.

    ``retryable`` is true for answers worth retrying (429, 502, 503, 504), which
    lets :class:`streamer._retry.Backoff` drive retries of client calls.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in (429, 502, 503, 504)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def raise_for_error(response: httpx.Response) -> None:
    """Raise :class:`ApiError` unless ``response`` is 2xx (reads a streamed body first)."""
    if response.is_success:
        return
    await response.aread()
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error", code))
        message = str(body.get("message", message))
    elif response.text.strip():
        message = response.text.strip()[:500]
    raise ApiError(response.status_code, code, message, _retry_after(response))


def connect(
    server: str, token: str | None = None, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``server`` (base URL) sending ``token`` as a bearer.

    Use it as an async context manager; pass it to the API and transfer functions.
    """
    tune_client_reads()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=server.rstrip("/"),
        headers=headers,
        timeout=timeout,
        follow_redirects=False,
        transport=lean_transport(),  # TLS through streamer's lean stream
    )
