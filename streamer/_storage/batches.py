"""Blocking work of many tasks done in batches, one worker-thread hop per batch.

A thread hop costs far more than the open, read or write of a small file it
carries (here ~0.1 ms of futex hand-overs of the GIL against a few µs of work):
many small files, each with its own hop, spend most of their CPU handing the
GIL back and forth. :class:`ThreadBatches` queues the items of every task that
submits one while a batch is running; when a batch ends, one of the tasks still
waiting runs the next with everything queued, in one hop. The group commit of
small files (:mod:`.groupcommit`) and the reads of small files
(:class:`BatchedCalls`) share it.

Cancellation: an item still queued is withdrawn (nothing was done); one whose
batch has started is seen through (its submitter waits for the batch, as it
would wait for its own thread), so blocking work is never abandoned half done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import outcome
import trio

R = TypeVar("R")


@dataclass(eq=False)
class Batched(Generic[R]):
    """An item of a batch; the batch sets its ``result``."""

    result: outcome.Outcome[R] | None = field(default=None, init=False)


B = TypeVar("B", bound=Batched[Any])


class ThreadBatches(Generic[B]):
    """Runs ``run(batch)`` in a worker thread for the items submitted meanwhile; see
    the module docstring. ``run`` must set every item's ``result`` (an item it left
    unset fails with OSError). At most ``lanes`` batches run at once, each of at most
    ``max_batch`` items."""

    def __init__(self, run: Callable[[list[B]], None], *, max_batch: int, lanes: int = 1) -> None:
        self._run = run
        self._pending: list[B] = []
        self._running = 0
        self._batch_done = trio.Event()
        self._max_batch = max_batch
        self._lanes = lanes
        self.batches = 0
        """Batches run so far (for tests and metrics)."""

    async def submit(self, item: B) -> None:
        """Return once ``item``'s batch has set its ``result``."""
        self._pending.append(item)
        try:
            while item.result is None:
                if self._running < self._lanes and item in self._pending:
                    await self._run_batch()
                else:
                    await self._wait(item)
        except BaseException:
            if item in self._pending:  # cancelled before its batch: nothing done yet
                self._pending.remove(item)
            raise

    async def _wait(self, item: B) -> None:
        done = self._batch_done
        if item in self._pending:
            await done.wait()  # cancellable: the item is only queued
        else:
            with trio.CancelScope(shield=True):  # its batch is running: see it through
                await done.wait()

    async def _run_batch(self) -> None:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        self._running += 1
        try:
            # Shielded: the batch holds other submitters' items, and its thread may
            # first have to wait for a free worker thread; a cancel of the submitter
            # that happens to run it must not fail them (it lands after the batch).
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._run, batch)
        finally:
            self.batches += 1
            for item in batch:
                if item.result is None:  # the thread itself failed (e.g. MemoryError)
                    item.result = outcome.Error(OSError("batch failed"))
            self._running -= 1
            done, self._batch_done = self._batch_done, trio.Event()
            done.set()


@dataclass(eq=False)
class _Call(Batched[R]):
    fn: Callable[[], R] = field(kw_only=True)


def _call_each(batch: list[_Call[Any]]) -> None:
    for item in batch:
        item.result = outcome.capture(item.fn)


class BatchedCalls:
    """``trio.to_thread.run_sync`` for short blocking calls (a small file's open and
    read), batched: calls submitted while a batch runs share the next hop. Each
    call's exception is its own."""

    def __init__(self, *, max_batch: int = 64, lanes: int = 2) -> None:
        self._batches: ThreadBatches[_Call[Any]] = ThreadBatches(
            _call_each, max_batch=max_batch, lanes=lanes
        )

    @property
    def batches(self) -> int:
        return self._batches.batches

    async def run_sync(self, fn: Callable[[], R]) -> R:
        item: _Call[R] = _Call(fn=fn)
        await self._batches.submit(item)
        assert item.result is not None
        return item.result.unwrap()
