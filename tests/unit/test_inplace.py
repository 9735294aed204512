"""copy_in_place's bookkeeping against a ranged source whose ranges finish in any order:
every byte lands and is hashed in order, and buffers stay at ranges in flight."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import trio

from streamer._engine import inplace
from streamer._engine.inplace import copy_in_place
from streamer._pipeline import Progress
from streamer._storage import Conflict, LocalStorage
from streamer._storage.base import Landed, Pinned
from streamer._storage.directio import direct_buffer


class _Shuffled:
    """Serves ``data`` by ranges that arrive in a few receives each, after random
    pauses, so later ranges often finish first."""

    range_size = 3 * 4096
    ranges_in_flight = 2

    def __init__(self, data: bytes, seed: int) -> None:
        self.data = data
        self.random = random.Random(seed)
        self.running = self.most = 0

    async def pin(self, path: str) -> Pinned:
        return Pinned(len(self.data), "v1")

    async def fetch_range(
        self, path: str, *, start: int, version: str, into: memoryview, landed: Landed
    ) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            filled = 0
            while filled < len(into):
                await trio.sleep(self.random.random() / 500)
                count = min(len(into) - filled, self.random.randrange(1, 6000))
                into[filled : filled + count] = self.data[start + filled : start + filled + count]
                filled += count
                await landed(filled)
        finally:
            self.running -= 1


@pytest.mark.parametrize("seed", range(8))
async def test_ranges_finishing_out_of_order_land_hashed_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    made = []

    def counted(size: int) -> memoryview:
        made.append(size)
        return direct_buffer(size)

    monkeypatch.setattr(inplace, "direct_buffer", counted)
    monkeypatch.setattr(inplace, "WRITE_CHUNK", 4096)
    data = os.urandom(11 * _Shuffled.range_size + 777)
    source = _Shuffled(data, seed)
    writer = await LocalStorage("local", tmp_path).open_writer(
        "big.bin", conflict=Conflict.OVERWRITE, tag="t"
    )
    seen: list[int] = []
    digest = await copy_in_place(source, "big.bin", len(data), writer, Progress(seen.append))
    await writer.commit(sha256=digest, mtime_ns=None)
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "big.bin").read_bytes() == data
    assert seen[-1] == len(data)
    assert source.most == len(made) == source.ranges_in_flight
