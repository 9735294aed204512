"""Tasks that outlive one method call of their owner, without unstructured spawning.

A writer uploads parts while its caller keeps calling ``write()``; a parallel
read prefetches parts while its caller consumes the chunks already yielded.
Neither owner can hold a nursery open across those calls (a nursery must not
span an async generator's ``yield``, and the Writer protocol has no context
manager), so the tasks run in a long-lived *service nursery* (the S3 client's)
and :class:`BackgroundTasks` gives the owner the structure back: the owner can
cancel its tasks, wait for them, and gets their first error re-raised in its
own task instead of crashing the service nursery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVarTuple

import trio

Ts = TypeVarTuple("Ts")


class BackgroundTasks:
    """The tasks one owner started in a shared service nursery.

    Contract: a task's exception (other than cancellation) is *relayed*, not
    handled: the first one is stored, every other task of the owner is
    cancelled, and :meth:`raise_if_failed` re-raises it in the owner's task.
    The owner must call :meth:`cancel` (or let the tasks finish) and then
    :meth:`wait` before it forgets the object, typically from a ``finally``
    through :func:`streamer._concurrency.cleanup`.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: set[trio.CancelScope] = set()
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()
        self._cancelled = False
        self.error: Exception | None = None

    def start_soon(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> None:
        """Start ``fn(*args)`` in the service nursery (at once cancelled after :meth:`cancel`)."""
        if self._running == 0:
            self._idle = trio.Event()
        self._running += 1
        self._nursery.start_soon(self._run, fn, args)

    async def _run(self, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]) -> None:
        scope = trio.CancelScope()
        if self._cancelled:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                await fn(*args)
        except Exception as exc:  # relayed to the owner by raise_if_failed(), see class docstring
            if self.error is None:
                self.error = exc
            self.cancel()
        finally:
            self._scopes.discard(scope)
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def cancel(self) -> None:
        """Cancel every running task and every task started from now on."""
        self._cancelled = True
        for scope in self._scopes:
            scope.cancel()

    def raise_if_failed(self) -> None:
        """Re-raise the first error a task ended with, if any."""
        if self.error is not None:
            raise self.error

    async def wait(self) -> None:
        """Wait until no task is running (does not raise their errors)."""
        await self._idle.wait()
