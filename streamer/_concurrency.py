"""Small structured-concurrency helpers shared by the engine, pipeline and storages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar, TypeVarTuple, Unpack

import trio

CLEANUP_SECONDS = 15.0

Ts = TypeVarTuple("Ts")
T = TypeVar("T")


async def cleanup(fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: *Ts) -> None:
    """Run ``fn(*args)`` shielded from cancellation but bounded in time.

    For ``finally`` blocks that must remove temporary state (temp files, staged
    uploads) even while the surrounding job is being cancelled.
    """
    with trio.move_on_after(CLEANUP_SECONDS, shield=True):
        await fn(*args)


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose failure surfaces as the causing exception, not a group.

    Trio wraps a child's exception in an :class:`ExceptionGroup`; code that maps
    errors (``except StreamerError``) wants the cause. When several children fail,
    the first non-cancellation error wins: the others are usually its echoes
    (broken channels, cancelled siblings).
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        raise (errors or leaves)[0] from None


async def for_each(
    items: Sequence[T], limit: int, action: Callable[[T], Awaitable[object]]
) -> None:
    """Run ``action(item)`` for every item, at most ``limit`` at a time, in order of
    start. The first failure cancels the rest and propagates."""
    send, receive = trio.open_memory_channel[T](len(items))
    async with send:
        for item in items:
            send.send_nowait(item)

    async def worker() -> None:
        async for item in receive:
            await action(item)

    async with receive, open_nursery() as nursery:
        for _ in range(min(limit, len(items))):
            nursery.start_soon(worker)


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def run_every(
    interval: float,
    work: Callable[[], Awaitable[object]],
    *,
    errors: tuple[type[BaseException], ...],
    logger: logging.Logger,
    what: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``work()`` once (its errors propagate), report started, then every
    ``interval`` seconds on a fixed schedule however long a run takes; a later
    run failing with one of ``errors`` is logged as ``"<what> failed"`` and the
    schedule goes on. Never returns (cancel it)."""
    next_run = trio.current_time()
    await work()
    task_status.started()
    while True:
        next_run += interval
        await trio.sleep_until(next_run)
        try:
            await work()
        except errors:
            logger.exception("%s failed", what)
