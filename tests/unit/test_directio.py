"""Direct (O_DIRECT) positional writes: aligned chunks bypass the page cache, the rest
and every write on a filesystem that refuses are buffered, and the file is the same."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
import trio

from streamer._storage import Conflict, LocalStorage, directio
from streamer._storage.directio import ALIGN, DirectWrites, direct_buffer


def test_direct_buffers_are_page_aligned() -> None:
    for size in (1, 4096, 100_000):
        buffer = direct_buffer(size)
        assert len(buffer) == size and not buffer.readonly and not any(buffer)
        assert ctypes.addressof(ctypes.c_char.from_buffer(buffer)) % ALIGN == 0


def _takes_direct(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    direct = DirectWrites(fd)
    enabled = direct.enabled
    direct.close()
    os.close(fd)
    return enabled


def _direct_or_skip(path: Path) -> tuple[int, DirectWrites]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    direct = DirectWrites(fd)
    if not direct.enabled:
        os.close(fd)
        pytest.skip("this filesystem refuses O_DIRECT")
    return fd, direct


def test_only_aligned_chunks_go_direct(tmp_path: Path) -> None:
    fd, direct = _direct_or_skip(tmp_path / "f")
    try:
        chunk = direct_buffer(2 * ALIGN)
        chunk[:] = os.urandom(len(chunk))
        assert direct.write(chunk, ALIGN)
        assert not direct.write(chunk, ALIGN + 1)  # offset off the boundary
        assert not direct.write(chunk[: ALIGN - 1], 0)  # ragged length
        assert not direct.write(chunk[:0], 0)
        assert direct.enabled
        assert os.pread(fd, 2 * ALIGN, ALIGN) == bytes(chunk)
    finally:
        direct.close()
        os.close(fd)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSPC], ids=["refused", "disk-full"])
def test_a_refusal_turns_direct_writes_off_and_other_errors_are_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    fd, direct = _direct_or_skip(tmp_path / "f")

    def fail(fd: int, data: memoryview, offset: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(directio, "pwrite_all", fail)
    try:
        if code == errno.EINVAL:
            assert not direct.write(direct_buffer(ALIGN), 0)
            assert not direct.enabled
        else:
            with pytest.raises(OSError, match="No space"):
                direct.write(direct_buffer(ALIGN), 0)
            assert direct.enabled
    finally:
        direct.close()
        os.close(fd)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered-only"])
async def test_positional_writes_land_the_same_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Concurrent chunks (aligned ones and a ragged tail) through a local writer make
    the same file whether or not the platform allows O_DIRECT."""
    if not direct:
        monkeypatch.setattr(directio, "_O_DIRECT", 0)
    went_direct = []
    write = DirectWrites.write

    def spy(self: DirectWrites, data: memoryview, offset: int) -> bool:
        went_direct.append(write(self, data, offset))
        return went_direct[-1]

    monkeypatch.setattr(DirectWrites, "write", spy)
    size = 10 * ALIGN + 123
    source = direct_buffer(size)
    source[:] = os.urandom(size)
    storage = LocalStorage("local", tmp_path)
    writer = await storage.open_writer("big.bin", conflict=Conflict.OVERWRITE, tag="t")
    await writer.preallocate(size)
    offsets = list(range(0, size, 2 * ALIGN))
    random.shuffle(offsets)
    async with trio.open_nursery() as nursery:
        for offset in offsets:
            nursery.start_soon(writer.write_at, offset, source[offset : offset + 2 * ALIGN])
    await writer.commit(sha256="", mtime_ns=None)
    landed = (tmp_path / "big.bin").read_bytes()
    assert hashlib.sha256(landed).digest() == hashlib.sha256(source).digest()
    if direct and _takes_direct(tmp_path / "probe"):
        assert went_direct.count(True) == len(offsets) - 1  # all but the ragged tail
    if not direct:
        assert not any(went_direct)
