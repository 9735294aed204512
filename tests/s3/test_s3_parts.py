"""PartBuffer: chunks of any size cut into parts, each byte copied once."""

from __future__ import annotations

from streamer._storage.s3parts import PartBuffer

from .helpers import randbytes


def cut(buffer: PartBuffer, data: bytes, chunk: int) -> list[bytes]:
    """Feed ``data`` in ``chunk``-sized pieces; the parts taken, recycled once copied."""
    parts: list[bytes] = []
    for offset in range(0, len(data), chunk):
        rest = memoryview(data)[offset : offset + chunk]
        while rest:
            if buffer.full:
                part = buffer.take()
                parts.append(bytes(part))
                buffer.recycle(part)
            rest = buffer.fill(rest)
    if len(buffer):
        parts.append(bytes(buffer.take()))
    return parts


def test_parts_are_whole_and_in_order_whatever_the_chunks() -> None:
    data = randbytes(10 * 7 + 3)
    for chunk in (1, 3, 7, 8, 100):
        buffer = PartBuffer(7)
        parts = cut(buffer, data, chunk)
        assert b"".join(parts) == data
        assert [len(p) for p in parts] == [7] * 10 + [3]


def test_recycled_buffers_are_reused_and_a_taken_part_is_not_overwritten() -> None:
    buffer = PartBuffer(4)
    buffer.fill(memoryview(b"abcd"))
    first = buffer.take()  # the first part grew with the data
    buffer.fill(memoryview(b"efgh"))
    second = buffer.take()
    buffer.recycle(second)
    buffer.fill(memoryview(b"ij"))
    third = buffer.take()
    assert third.obj is second.obj  # the spare buffer came back
    assert (bytes(first), bytes(third)) == (b"abcd", b"ij")
    buffer.recycle(memoryview(b"xyz"))  # not a part buffer: ignored
    buffer.fill(memoryview(b"k"))
    assert bytes(buffer.take()) == b"k"
