"""batches: calls submitted together share thread hops, each keeps its own outcome,
a queued call withdrawn on cancel never runs, and no more than ``lanes`` batches run."""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

from streamer._storage.batches import BatchedCalls


async def test_calls_made_together_share_hops_and_keep_their_results() -> None:
    calls = BatchedCalls(max_batch=64, lanes=2)
    results: dict[int, int] = {}

    async def one(n: int) -> None:
        results[n] = await calls.run_sync(lambda: n * n)

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(one, n)
    assert results == {n: n * n for n in range(200)}
    assert calls.batches < 200 / 4


async def test_each_call_raises_its_own_exception() -> None:
    calls = BatchedCalls()
    outcomes: dict[int, object] = {}

    def work(n: int) -> int:
        if n % 3 == 0:
            raise FileNotFoundError(n)
        return n

    async def one(n: int) -> None:
        try:
            outcomes[n] = await calls.run_sync(lambda: work(n))
        except FileNotFoundError as exc:
            outcomes[n] = exc.args

    async with trio.open_nursery() as nursery:
        for n in range(12):
            nursery.start_soon(one, n)
    assert outcomes == {n: (n,) if n % 3 == 0 else n for n in range(12)}


async def test_at_most_lanes_batches_run_and_queued_calls_cancelled_never_run() -> None:
    calls = BatchedCalls(max_batch=1, lanes=2)
    release = threading.Event()
    lock = threading.Lock()
    running, most, ran = [0], [0], []

    def blocking(name: str) -> str:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
            ran.append(name)
        return name

    def both_lanes_busy() -> None:
        while running[0] < 2:
            time.sleep(0.001)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(calls.run_sync, lambda name=name: blocking(name))
        await trio.to_thread.run_sync(both_lanes_busy)
        for name in ("queued-1", "queued-2"):
            nursery.start_soon(calls.run_sync, lambda name=name: blocking(name))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the running batches finish; the queued are withdrawn
        release.set()
    assert most[0] == 2
    assert sorted(ran) == ["a", "b"]


async def test_a_cancelled_submitter_whose_batch_runs_gets_it_done() -> None:
    calls = BatchedCalls()
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def blocking() -> None:
        started.set()
        release.wait(5)
        done.append("x")

    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(calls.run_sync, blocking)
            await trio.to_thread.run_sync(started.wait, 5)
            threading.Timer(0.05, release.set).start()
            nursery.cancel_scope.cancel()  # the call's batch is running: it finishes first
    assert done == ["x"]


@pytest.mark.parametrize("lanes", [1, 3])
async def test_every_call_is_answered_under_any_lane_count(lanes: int) -> None:
    calls = BatchedCalls(max_batch=5, lanes=lanes)
    seen: list[int] = []

    async def one(n: int) -> None:
        seen.append(await calls.run_sync(lambda: n))

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(one, n)
    assert sorted(seen) == list(range(50))
