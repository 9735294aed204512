"""Bandwidth limits: a token bucket shared by the streams it throttles, and its stage.

A :class:`TokenBucket` hands out bytes at ``rate`` bytes per second (``0`` means
unlimited); the rate can be changed at any time and waiting streams pick up the
new rate at once. Every stream that shares a bucket shares its rate (a node's
incoming transfers together never exceed ``download_limit``). :class:`Throttle`
is the pipeline stage that charges each chunk to a bucket before passing it on.

Time comes from trio, so tests run on ``trio.testing.MockClock``.
"""

from __future__ import annotations

import math

import trio

MIB = 1 << 20
DEFAULT_BURST_SECONDS = 0.5  # absorbs stalls of a busy host without losing rate
MIN_BURST = 64 * 1024
MIN_WAIT = 1e-5


class TokenBucket:
    """Hands out bytes at ``rate`` per second; see the module docstring.

    A consumer takes what it is about to send with :meth:`consume`. The bucket
    holds at most ``burst`` bytes (``burst_seconds`` of the rate, at least
    ``MIN_BURST``), so an idle period buys only a short burst. A chunk bigger
    than what is available is let through at once and paid back afterwards: the
    bucket goes into debt and the *next* consumer waits it off. Chunk size thus
    never stalls a stream, and over any stretch longer than a burst the rate is
    exact. Consumers are served in arrival order.
    """

    def __init__(self, rate: float = 0.0, *, burst_seconds: float = DEFAULT_BURST_SECONDS) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
        self._rate = float(rate)
        self._burst_seconds = burst_seconds
        self._tokens = self.burst
        self._stamp: float | None = None
        self._lock = trio.Lock()
        self._changed = trio.Event()

    @property
    def rate(self) -> float:
        """Bytes per second; ``0`` = unlimited."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"rate must be a finite number >= 0, got {value!r}")
        self._refill()  # what accrued so far accrued at the old rate
        self._rate = float(value)
        self._tokens = min(self._tokens, self.burst)
        self._changed.set()
        self._changed = trio.Event()

    @property
    def burst(self) -> float:
        return max(MIN_BURST, self._rate * self._burst_seconds)

    async def consume(self, nbytes: int) -> None:
        """Take ``nbytes``; wait first while the bucket is in debt."""
        if nbytes <= 0:
            return
        if self._rate <= 0:
            await trio.lowlevel.checkpoint()
            return
        async with self._lock:
            self._refill()
            while self._tokens < 0 and self._rate > 0:
                changed = self._changed
                # At least MIN_WAIT: a wait too short to move the clock would spin.
                with trio.move_on_after(max(-self._tokens / self._rate, MIN_WAIT)):
                    await changed.wait()
                self._refill()
            if self._rate > 0:
                self._tokens -= nbytes

    def _refill(self) -> None:
        now = trio.current_time()
        if self._stamp is None or self._rate <= 0:
            self._tokens = self.burst
        else:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now


class Throttle:
    """A pipeline stage that charges every chunk to ``bucket`` before passing it on."""

    def __init__(self, bucket: TokenBucket) -> None:
        self._bucket = bucket

    async def feed(self, chunk: bytes) -> bytes:
        await self._bucket.consume(len(chunk))
        return chunk

    async def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


def mib_per_second(limit: float) -> float:
    """A limit in MiB/s (the config's unit) as bytes per second."""
    return limit * MIB
