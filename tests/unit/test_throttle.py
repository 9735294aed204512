"""The token bucket under trio's MockClock: rate, burst, debt, runtime changes, sharing."""

from __future__ import annotations

import pytest
import trio

from streamer._pipeline import pump
from streamer._pipeline.throttle import MIN_BURST, Throttle, TokenBucket, mib_per_second

MIB = 1 << 20


async def send(bucket: TokenBucket, total: int, chunk: int) -> float:
    """Seconds (mock time) to push ``total`` bytes through ``bucket`` in ``chunk`` pieces."""
    start = trio.current_time()
    for _ in range(total // chunk):
        await bucket.consume(chunk)
    return trio.current_time() - start


@pytest.mark.parametrize("chunk", [4096, 64 * 1024, MIB, 4 * MIB])
async def test_rate_holds_whatever_the_chunk_size(autojump_clock: object, chunk: int) -> None:
    bucket = TokenBucket(mib_per_second(2))
    took = await send(bucket, 16 * MIB, chunk)
    # 16 MiB at 2 MiB/s is 8 s; the burst and the last chunk's debt are the only slack.
    assert 8.0 - (bucket.burst + chunk) / bucket.rate - 0.01 <= took <= 8.0 + 0.01


async def test_unlimited_never_waits(autojump_clock: object) -> None:
    assert await send(TokenBucket(0), 100 * MIB, MIB) == 0


async def test_idle_time_buys_only_a_burst(autojump_clock: object) -> None:
    bucket = TokenBucket(mib_per_second(1), burst_seconds=0.1)
    await bucket.consume(MIB)
    await trio.sleep(60)  # a minute idle
    took = await send(bucket, 10 * MIB, MIB)
    assert took >= 10 - 0.1 - 1 - 0.01  # not 10 MiB for free


async def test_rate_change_applies_to_a_waiting_stream_at_once(
    autojump_clock: object,
) -> None:
    bucket = TokenBucket(mib_per_second(1))
    done_at: list[float] = []

    async def stream() -> None:
        await send(bucket, 10 * MIB, MIB)
        done_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream)
        await trio.sleep(2.5)  # ~2.5 MiB sent at 1 MiB/s
        bucket.rate = mib_per_second(10)
    # The remaining ~7.5 MiB at 10 MiB/s: well under a second more.
    assert 2.5 < done_at[0] < 2.5 + 1.5


async def test_lifting_the_limit_releases_waiters(autojump_clock: object) -> None:
    bucket = TokenBucket(mib_per_second(1))
    await bucket.consume(100 * MIB)  # deep in debt: the next consumer would wait 100 s
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bucket.consume, MIB)
            await trio.sleep(0.5)
            bucket.rate = 0
    assert trio.current_time() == pytest.approx(0.5)


async def test_streams_sharing_a_bucket_share_its_rate(autojump_clock: object) -> None:
    bucket = TokenBucket(mib_per_second(4))
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(send, bucket, 8 * MIB, 256 * 1024)
    # 32 MiB at 4 MiB/s together, less the burst and the last chunk's debt.
    slack = (bucket.burst + 256 * 1024) / bucket.rate
    assert 8.0 - slack - 0.01 <= trio.current_time() <= 8.0 + 0.01


async def test_throttle_stage_in_a_pump(autojump_clock: object) -> None:
    out: list[bytes] = []

    class Sink:
        async def write(self, chunk: bytes) -> None:
            out.append(chunk)

    async def source() -> object:
        for _ in range(8):
            yield bytes(MIB)

    bucket = TokenBucket(mib_per_second(4))
    await pump(source(), [Throttle(bucket)], Sink())  # type: ignore[arg-type]
    assert len(out) == 8
    assert trio.current_time() == pytest.approx((7 * MIB - bucket.burst) / bucket.rate, abs=0.01)


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(-1)
    bucket = TokenBucket(0)
    with pytest.raises(ValueError):
        bucket.rate = float("nan")
    assert bucket.burst == MIN_BURST
