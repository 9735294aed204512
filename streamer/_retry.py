"""Retries with exponential backoff, shared by the S3, HTTP and worker clients.

Two jitter styles: *full* jitter (the default: a delay drawn in ``[0, d]``,
best for many clients hammering one service) and *added* jitter (``d`` plus a
random fraction of it: the fixed ``2 s / 4 s / 8 s`` schedule of the worker
client, spread just enough that workers do not retry in lockstep). Here
``d = min(cap, base * 2**(failures - 1))``.

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
    """Delays over ``base * 2**(failures - 1)``, capped at ``cap``, with full jitter, or
    with ``added_jitter`` (a fraction: the delay plus up to that fraction of it);
    ``retries`` counts every retry taken (for metrics and tests)."""

    base: float
    cap: float
    max_retries: int
    retries: int = 0
    added_jitter: float | None = None

    def delay(self, failures: int) -> float:
        """A random delay before the retry that follows ``failures`` failures in a row."""
        ceiling: float = min(self.cap, self.base * 2.0 ** (failures - 1))
        if self.added_jitter is None:
            return random.uniform(0, ceiling)
        return ceiling * (1 + random.uniform(0, self.added_jitter))

    async def sleep(self, failures: int, retry_after: float | None = None) -> None:
        """Count one retry and sleep; at least ``retry_after`` (capped) when the server asked."""
        self.retries += 1
        delay = self.delay(failures)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        await trio.sleep(delay)

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        errors: type[BaseException],
        *,
        progress: Callable[[], int] | None = None,
    ) -> T:
        """``attempt()`` until it succeeds, raises an error that is not one of ``errors``
        or not ``retryable``, or has failed ``max_retries`` times in a row.

        ``progress`` (e.g. bytes safely transferred) makes the count "in a row"
        start again whenever it grew since the previous failure: a long transfer
        cut now and then still gets through, one that is stuck does not.
        """
        failures = 0
        mark = progress() if progress is not None else 0
        while True:
            try:
                return await attempt()
            except errors as error:
                if progress is not None and (now := progress()) > mark:
                    failures, mark = 0, now
                if not getattr(error, "retryable", False) or failures >= self.max_retries:
                    raise
                failures += 1
                await self.sleep(failures, getattr(error, "retry_after", None))
