"""The shared backoff policy (time via MockClock)."""

from __future__ import annotations

import itertools

import pytest
import trio

from streamer._retry import Backoff


class Flaky(Exception):
    def __init__(self, retryable: bool, retry_after: float | None = None) -> None:
        self.retryable = retryable
        self.retry_after = retry_after


async def test_retries_until_success_with_growing_capped_delays(autojump_clock: object) -> None:
    backoff = Backoff(base=1.0, cap=5.0, max_retries=5)
    calls: list[float] = []

    async def attempt() -> str:
        calls.append(trio.current_time())
        if len(calls) < 5:
            raise Flaky(True)
        return "ok"

    assert await backoff.run(attempt, Flaky) == "ok"
    assert backoff.retries == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(0 <= gap <= min(5.0, 2**i) for i, gap in enumerate(gaps))


async def test_gives_up_after_max_retries_and_never_retries_the_final(
    autojump_clock: object,
) -> None:
    backoff = Backoff(base=0.1, cap=1.0, max_retries=2)
    count = 0

    async def always_failing() -> None:
        nonlocal count
        count += 1
        raise Flaky(True)

    with pytest.raises(Flaky):
        await backoff.run(always_failing, Flaky)
    assert count == 3 and backoff.retries == 2

    async def fatal() -> None:
        raise Flaky(False)

    with pytest.raises(Flaky):
        await backoff.run(fatal, Flaky)
    assert backoff.retries == 2  # a non-retryable error is raised at once

    async def other() -> None:
        raise KeyError("not ours")

    with pytest.raises(KeyError):
        await backoff.run(other, Flaky)


async def test_retry_after_is_honoured_up_to_the_cap(autojump_clock: object) -> None:
    backoff = Backoff(base=0.001, cap=10.0, max_retries=3)
    start = trio.current_time()
    await backoff.sleep(1, retry_after=4.0)
    assert 4.0 <= trio.current_time() - start <= 4.01
    start = trio.current_time()
    await backoff.sleep(1, retry_after=600.0)
    assert trio.current_time() - start == pytest.approx(10.0)


async def test_added_jitter_keeps_the_doubling_schedule(autojump_clock: object) -> None:
    backoff = Backoff(base=2.0, cap=30.0, max_retries=3, added_jitter=0.25)
    calls: list[float] = []

    async def always_failing() -> None:
        calls.append(trio.current_time())
        raise Flaky(True)

    with pytest.raises(Flaky):
        await backoff.run(always_failing, Flaky)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(gaps) == 3
    for gap, delay in zip(gaps, (2.0, 4.0, 8.0), strict=True):
        assert delay <= gap <= delay * 1.25


async def test_progress_between_failures_restores_the_budget(autojump_clock: object) -> None:
    backoff = Backoff(base=0.1, cap=1.0, max_retries=1)
    done = 0
    calls = 0

    async def cut_after_some_progress() -> str:
        nonlocal done, calls
        calls += 1
        if calls < 5:
            done += 10  # every attempt moves on before it fails
            raise Flaky(True)
        return "ok"

    assert await backoff.run(cut_after_some_progress, Flaky, progress=lambda: done) == "ok"
    assert calls == 5

    async def stuck() -> None:
        nonlocal calls
        calls += 1
        raise Flaky(True)

    calls = 0
    with pytest.raises(Flaky):
        await backoff.run(stuck, Flaky, progress=lambda: done)
    assert calls == 2
