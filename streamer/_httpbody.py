"""Streamed httpx response bodies read piece by piece and closed without leaks.

httpx 0.28 hands bodies out through nested async generators (httpx and
httpcore) that trio reports as garbage collected unexhausted when a reader
abandons them half-way (httpx #3686). So a body is never abandoned:
:meth:`StreamedBody.close` closes the connection first, then drives the
generators until they end, which they do at once with the read error of the
closed socket. Shared by the storages' HTTP client and the worker client.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import httpx
import trio

_DRAIN_PIECES = 1024  # buffered pieces a closed connection may still hand out


class StreamedBody:
    """The body of ``response`` (sent with ``stream=True``): raw bytes, or decoded
    (``Content-Encoding`` undone) when ``decoded``. :meth:`next` raises httpx's
    errors as they come; always :meth:`close` it."""

    def __init__(self, response: httpx.Response, *, decoded: bool = False) -> None:
        self.response = response
        # An async generator in httpx 0.28, whatever its annotation says.
        pieces = response.aiter_bytes() if decoded else response.aiter_raw()
        self._pieces = cast("AsyncGenerator[bytes]", pieces)
        self._started = False

    async def next(self) -> bytes | None:
        """The next piece of the body, or ``None`` at its end."""
        self._started = True
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            return None

    async def close(self) -> None:
        """Release the connection; safe to call twice, shielded from cancellation."""
        with trio.CancelScope(shield=True):
            await self.response.aclose()
            if not self._started:
                await self._pieces.aclose()  # never started: nothing nested yet
                return
            for _ in range(_DRAIN_PIECES):
                try:
                    await self._pieces.__anext__()
                except (StopAsyncIteration, httpx.HTTPError, httpx.StreamError):
                    return
