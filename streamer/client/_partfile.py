"""The ``.part`` file of a resumable download: which bytes are in place, and their hash.

A download writes into ``<destination>.part`` and records in
``<destination>.part.json`` (:class:`PartState`) the resource's validators and,
for each of its byte ranges (:class:`Segment`), how far it got. A sequential
download is one segment; a parallel one is several, written in place. The state
is saved now and then, so a download interrupted even by a crash resumes from
what it recorded (never more than what was written).

:class:`FrontierHasher` hashes the file in order while it fills: it follows the
*frontier* (the end of the contiguous prefix that is in place), reading back
what the segments wrote, in a thread. Memory stays flat whatever the file size.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

MIB = 1 << 20
HASH_READ = 4 * MIB
MIN_SEGMENT = 8 * MIB


@dataclass
class Segment:
    """Bytes ``[start, end)`` of the resource; ``[start, pos)`` are in the part file.
    ``end`` is None while the resource's length is unknown (a compressed body)."""

    start: int
    pos: int
    end: int | None

    @property
    def done(self) -> bool:
        return self.end is not None and self.pos >= self.end

    def range_header(self) -> str:
        last = "" if self.end is None else str(self.end - 1)
        return f"bytes={self.pos}-{last}"


@dataclass
class PartState:
    """What the part file holds: the resource's ``etag``, ``checksum`` (sha256 hex)
    and ``size`` as the server announced them, and the segments' progress."""

    etag: str | None
    checksum: str | None
    size: int | None
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def plan(
        cls, etag: str | None, checksum: str | None, size: int | None, ranges: int
    ) -> PartState:
        """A fresh state: ``size`` cut into at most ``ranges`` segments of whole MiBs
        (and at least :data:`MIN_SEGMENT` each); one open segment when size is unknown."""
        if size is None:
            return cls(etag, checksum, None, [Segment(0, 0, None)])
        count = max(1, min(ranges, size // MIN_SEGMENT))
        bounds = [0] + [(size * i // count) // MIB * MIB for i in range(1, count)] + [size]
        segments = [Segment(a, a, b) for a, b in itertools.pairwise(bounds)]
        return cls(etag, checksum, size, segments)

    @property
    def present(self) -> int:
        """Bytes in place."""
        return sum(s.pos - s.start for s in self.segments)

    @property
    def complete(self) -> bool:
        return all(s.done for s in self.segments)

    def frontier(self) -> int:
        """The end of the contiguous prefix that is in place."""
        for segment in self.segments:
            if not segment.done:
                return segment.pos
        return self.segments[-1].pos if self.segments else 0

    def first_missing(self) -> Segment | None:
        return next((s for s in self.segments if not s.done), None)

    def learn_size(self, size: int) -> None:
        """The length announced by a later response (the first one was compressed)."""
        self.size = size
        for segment in self.segments:
            if segment.end is None:
                segment.end = size

    # -- persistence ---------------------------------------------------------

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "etag": self.etag,
                "checksum": self.checksum,
                "size": self.size,
                "segments": [[s.start, s.pos, s.end] for s in self.segments],
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, part_size: int) -> PartState | None:
        """The state saved beside a part file of ``part_size`` bytes; None when it is
        unusable (corrupt, inconsistent, or without the ETag a resume needs)."""
        try:
            raw: Any = json.loads(data)
            etag, checksum, size = raw["etag"], raw["checksum"], raw["size"]
            segments = [
                Segment(int(a), int(p), None if b is None else int(b))
                for a, p, b in raw["segments"]
            ]
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(etag, str) or not isinstance(checksum, str | None):
            return None
        if not isinstance(size, int | None) or not segments:
            return None
        state = cls(etag, checksum, size, segments)
        return state if state._consistent(part_size) else None

    def _consistent(self, part_size: int) -> bool:
        expected = 0
        for segment in self.segments:
            if segment.start != expected or not segment.start <= segment.pos:
                return False
            if segment.end is not None and segment.pos > segment.end:
                return False
            if segment.pos > part_size:
                return False
            expected = segment.end if segment.end is not None else -1
        return expected == self.size or (expected == -1 and self.size is None)


def state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


async def load_state(part: Path) -> PartState | None:
    """The saved state of ``part`` if both exist and agree, else None."""

    def load() -> PartState | None:
        try:
            data = state_path(part).read_bytes()
            size = part.stat().st_size
        except OSError:
            return None
        return PartState.from_json(data, size)

    return await trio.to_thread.run_sync(load)


async def save_state(part: Path, state: PartState) -> None:
    """Write the state atomically (temp file, rename)."""
    data = state.to_json()
    target = state_path(part)
    temp = target.with_name(target.name + ".tmp")

    def save() -> None:
        temp.write_bytes(data)
        os.replace(temp, target)

    await trio.to_thread.run_sync(save)


def remove_part(part: Path) -> None:
    """Remove the part file and its state (whatever of them exists)."""
    target = state_path(part)
    for path in (part, target, target.with_name(target.name + ".tmp")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class FrontierHasher:
    """sha256 of the part file's bytes in order, following :meth:`PartState.frontier`.

    Writers call :meth:`wake` after each write; :meth:`follow` returns once the
    state is complete and every byte is hashed.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self.hashed = 0
        self._wake = trio.Event()

    def wake(self) -> None:
        self._wake.set()

    @property
    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    async def follow(self, state: PartState) -> None:
        while True:
            frontier = state.frontier()
            if self.hashed < frontier:
                await trio.to_thread.run_sync(self._hash_until, frontier)
                continue
            if state.complete:
                return
            self._wake = trio.Event()
            if state.frontier() == self.hashed:
                await self._wake.wait()

    def _hash_until(self, frontier: int) -> None:
        """One read (in a thread); ``hashed`` moves only with the bytes hashed."""
        data = os.pread(self._fd, min(HASH_READ, frontier - self.hashed), self.hashed)
        if not data:
            raise OSError(f"the part file ends at {self.hashed}, before {frontier}")
        self._sha.update(data)
        self.hashed += len(data)
