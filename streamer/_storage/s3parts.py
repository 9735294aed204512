"""Cutting a stream of chunks into upload parts without copying a part twice."""

from __future__ import annotations

import mmap


class PartBuffer:
    """Collects chunks of any size into parts of ``part_size`` bytes.

    Each byte is copied once, into the part being filled; :meth:`take` hands
    the part over as a view (no copy) and starts the next one. The first part
    grows with the data, as most objects are small; the later ones are whole
    ``part_size`` buffers, which :meth:`recycle` returns for reuse once their
    upload is done, so a long upload allocates (and page-faults) only as many
    as are in flight at once. Whole parts are anonymous mmaps, not heap: the
    memory returns to the system when the writer drops them, instead of staying
    resident as free heap under whatever runs next. :meth:`lend` hands out the next part's whole
    buffer to be filled in place instead (no copy at all), :meth:`filled` says
    how much of it was.
    """

    def __init__(self, part_size: int) -> None:
        self._part_size = part_size
        self._data: bytearray | mmap.mmap = bytearray()
        self._filled = 0
        self._taken = 0  # parts taken so far
        self._spare: list[mmap.mmap] = []

    def __len__(self) -> int:
        """Bytes in the part being filled."""
        return self._filled

    @property
    def full(self) -> bool:
        return self._filled == self._part_size

    def fill(self, chunk: memoryview) -> memoryview:
        """Copy as much of ``chunk`` as fits in the part; returns what did not fit."""
        count = min(self._part_size - self._filled, len(chunk))
        if not self._taken and isinstance(self._data, bytearray):  # the first: grow
            self._data += chunk[:count]
        else:
            self._whole()[self._filled : self._filled + count] = chunk[:count]
        self._filled += count
        return chunk[count:]

    def lend(self) -> memoryview:
        """The whole buffer of the next part (a spare one if any), to fill in place;
        :meth:`filled` then says how many of its first bytes are the part."""
        assert not self._filled, "lend with a part being filled"
        return memoryview(self._whole())

    def filled(self, count: int) -> None:
        """The first ``count`` bytes of the buffer from :meth:`lend` are the part."""
        assert 0 <= count <= self._part_size
        self._filled = count

    def _whole(self) -> mmap.mmap:
        """The part being filled, made a whole ``part_size`` buffer if it is not one."""
        if not isinstance(self._data, mmap.mmap):
            self._data = self._spare.pop() if self._spare else mmap.mmap(-1, self._part_size)
        return self._data

    def take(self) -> memoryview:
        """The bytes of the part being filled (the buffer now belongs to the caller);
        the next :meth:`fill` starts a new part."""
        part = memoryview(self._data)[: self._filled]
        self._data, self._filled = bytearray(), 0
        self._taken += 1
        return part

    def recycle(self, part: memoryview) -> None:
        """Give back a whole part from :meth:`take` once nothing reads it any more."""
        buffer = part.obj
        if isinstance(buffer, mmap.mmap):
            self._spare.append(buffer)

    def clear(self) -> None:
        """Drop the part being filled and the spare buffers."""
        self._data, self._filled = bytearray(), 0
        self._spare.clear()
