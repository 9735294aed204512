"""Retries with exponential backoff and full jitter, shared by the S3 and HTTP clients.

Sleeps use :func:`trio.sleep`, so tests drive them with ``MockClock``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import trio

T = TypeVar("T")


class RetryableError(Protocol):
    """What :meth:`Backoff.run` asks of the errors it may retry."""

    @property
    def retryable(self) -> bool: ...


@dataclass
class Backoff:
    """Delays of full jitter over ``base * 2**(failures - 1)``, capped at ``cap``;
    ``retries`` counts every retry taken (for metrics and tests)."""

    base: float
    cap: float
    max_retries: int
    retries: int = 0

    async def sleep(self, failures: int, retry_after: float | None = None) -> None:
        """Count one retry and sleep; at least ``retry_after`` (capped) when the server asked."""
        self.retries += 1
        delay = random.uniform(0, min(self.cap, self.base * 2 ** (failures - 1)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        await trio.sleep(delay)

    async def run(self, attempt: Callable[[], Awaitable[T]], errors: type[BaseException]) -> T:
        """``attempt()`` until it succeeds, raises an error that is not one of ``errors``
        or not ``retryable``, or has failed ``max_retries`` times in a row."""
        failures = 0
        while True:
            try:
                return await attempt()
            except errors as error:
                if not getattr(error, "retryable", False) or failures >= self.max_retries:
                    raise
                failures += 1
                await self.sleep(failures, getattr(error, "retry_after", None))
