"""Whole writes to file descriptors: ``os.write``/``os.pwrite`` may write less than
asked (a signal, a full pipe, some filesystems); these loop until every byte is down.
Blocking: call them from a worker thread. Shared by the local storage's writers and
the worker client's downloads (a module of its own, so the client does not import
the storages)."""

from __future__ import annotations

import os

Buffer = bytes | bytearray | memoryview


def write_all(fd: int, data: Buffer) -> None:
    """Write all of ``data`` at ``fd``'s current position."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (the file position is left alone)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
