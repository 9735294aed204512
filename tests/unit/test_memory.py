"""The daemon's startup heap is frozen out of the cyclic GC's way, garbage first."""

from __future__ import annotations

import gc
import weakref

from streamer._memory import freeze_startup_heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_startup_garbage_is_collected_and_the_living_are_frozen() -> None:
    garbage = _Cycle()
    garbage_ref = weakref.ref(garbage)
    del garbage
    alive = _Cycle()
    try:
        frozen = freeze_startup_heap()
        assert garbage_ref() is None  # collected first, not kept forever
        assert frozen == gc.get_freeze_count() > 0
        # Frozen objects are in no generation: collections no longer traverse them.
        assert not any(obj is alive for obj in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(obj is alive for obj in gc.get_objects())
