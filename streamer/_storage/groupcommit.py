"""Group commit of small local files: many files made durable by one flush.

A small file written whole (one chunk, held in memory by its writer) costs, if
committed alone, a thread hop to create its temp file, one to write it and one to
fsync, publish and fsync its directory: per file one journal commit and some
twenty GIL hand-overs between the event loop and a worker thread. Here, commits
queue up while a batch is being written, and each batch is one thread hop:

1. every file of the batch is written to its temp name (``.streamer-<tag>.part``)
   beside its destination, with its mtime;
2. one ``syncfs`` per filesystem of the batch makes all of it durable (or, where
   syncfs cannot be trusted to report errors (see :mod:`streamer._syncfs`), or
   for a batch of one, an ``fsync`` per file);
3. only then is each temp moved to its final name under its conflict policy;
4. one ``fsync`` per directory of the batch makes the names durable (where the
   batch spans several directories and step 2 could use syncfs: one ``syncfs`` per
   filesystem again, a fixed cost where directory fsyncs grew with the tree);

and then each file's committer learns its own outcome. So, as for a file
committed alone, a final name only ever points at durable bytes, a file is
reported committed only once its name is durable, and a failure (or a cancel
before its batch starts) leaves nothing but temp files, which are removed. A
batch once started runs to its end: a committer cancelled meanwhile waits for
it, as a single commit's thread would be waited for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import outcome

from .._errors import StreamerError
from .._fileio import write_all
from .._syncfs import sync_filesystem
from .batches import Batched, ThreadBatches
from .localfs import fsync_dir


@dataclass(eq=False, kw_only=True)
class Staged(Batched[str | None]):
    """One small file to commit: its bytes, where its temp goes, how to publish it.

    Both callables run in the batch's thread: ``prepare()`` returns the temp
    file's path (its directory made), ``publish(temp)`` moves the durable temp to
    its final name and returns that name (``None``: skipped, the temp removed).
    Either may raise OSError or a StreamerError: that file then fails alone.
    """

    prepare: Callable[[], str]
    data: bytes
    mtime_ns: int | None
    publish: Callable[[str], str | None]
    temp: str | None = field(default=None, init=False)


def commit_batch(batch: list[Staged], *, use_syncfs: bool = True) -> None:
    """Steps 1 to 4 of the module docstring for ``batch``; each file's ``result`` is set
    (a file's OSError is its own; a failed flush fails every file it covered)."""
    written: list[tuple[Staged, int]] = []
    for item in batch:
        try:
            item.temp = item.prepare()
            written.append((item, _write_temp(item.temp, item)))
        except (OSError, StreamerError) as exc:
            item.result = outcome.Error(exc)
    flushes = _Flushes(written, use_syncfs=use_syncfs)
    try:
        try:
            flushes.data()
        except OSError as exc:
            for item, _ in written:
                item.result = outcome.Error(exc)
        _publish(written)
        failed = flushes.names({_directory(item) for item, _ in written if _published(item)})
    finally:
        for _, fd in written:
            os.close(fd)
    for item, _ in written:
        if _published(item) and _directory(item) in failed:
            item.result = outcome.Error(failed[_directory(item)])
        elif isinstance(item.result, outcome.Error):  # a failed file leaves no temp behind
            with contextlib.suppress(OSError):
                os.unlink(item.temp or "")


def _directory(item: Staged) -> str:
    assert item.temp is not None
    return os.path.dirname(item.temp)


def _published(item: Staged) -> bool:
    return isinstance(item.result, outcome.Value) and item.result.value is not None


def _publish(written: list[tuple[Staged, int]]) -> None:
    """Step 3: move each durable temp (no result yet) to its final name."""
    for item, _ in written:
        if item.result is not None:
            continue
        assert item.temp is not None
        try:
            item.result = outcome.Value(item.publish(item.temp))
        except (OSError, StreamerError) as exc:
            item.result = outcome.Error(exc)


def _write_temp(temp: str, item: Staged) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o666)
    try:
        write_all(fd, item.data)
        if item.mtime_ns is not None:
            os.utime(fd, ns=(item.mtime_ns, item.mtime_ns))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return fd


class _Flushes:
    """The flushes of one batch (steps 2 and 4): where ``syncfs`` is allowed, one per
    filesystem of the batch for its data and one for its names (each filesystem
    found by one ``fstat`` per directory: a directory's files are on its filesystem);
    else, or for a single file, an ``fsync`` per file and per directory."""

    def __init__(self, written: list[tuple[Staged, int]], *, use_syncfs: bool) -> None:
        self._written = written
        self._use_syncfs = use_syncfs
        self._devices: dict[int, int] = {}  # st_dev -> an open file on it
        self._device_of: dict[str, int] = {}  # directory -> its st_dev

    def data(self) -> None:
        """Make every written temp durable (OSError: the flush failed)."""
        if len(self._written) > 1 and self._use_syncfs:
            for item, fd in self._written:
                directory = _directory(item)
                if directory not in self._device_of:
                    device = os.fstat(fd).st_dev
                    self._device_of[directory] = device
                    self._devices.setdefault(device, fd)
            if all([sync_filesystem(fd) for fd in self._devices.values()]):
                return
        self._devices.clear()  # a filesystem whose syncfs cannot be trusted: fsync each
        for _, fd in self._written:
            os.fsync(fd)

    def names(self, directories: set[str]) -> dict[str, OSError]:
        """Make the names published in ``directories`` durable; the directories whose
        flush failed, with the error."""
        if len(directories) > 1 and self._devices:
            failed: dict[str, OSError] = {}
            for device, fd in self._devices.items():
                try:
                    sync_filesystem(fd)  # trusted: data() found it so
                except OSError as exc:
                    failed |= {d: exc for d in directories if self._device_of[d] == device}
            return failed
        return _fsync_directories(directories)


def _fsync_directories(directories: set[str]) -> dict[str, OSError]:
    failed: dict[str, OSError] = {}
    for directory in directories:
        try:
            fsync_dir(directory)
        except OSError as exc:
            failed[directory] = exc
    return failed


class GroupCommit:
    """Batches :class:`Staged` commits (see the module docstring); one per storage.

    While a batch runs, new commits queue; when it ends, one of the committers
    still waiting runs the next batch with all of them (:mod:`.batches`).
    ``max_batch`` bounds a batch (and the file descriptors it holds open).
    """

    def __init__(self, *, max_batch: int = 256, use_syncfs: bool = True) -> None:
        self._batches: ThreadBatches[Staged] = ThreadBatches(
            lambda batch: commit_batch(batch, use_syncfs=use_syncfs), max_batch=max_batch
        )

    @property
    def batches(self) -> int:
        """Batches run so far (for tests and metrics)."""
        return self._batches.batches

    async def commit(self, item: Staged) -> str | None:
        """Write, flush and publish ``item`` in the next batch; its final name, or
        ``None`` when skipped. Raises the item's own OSError."""
        await self._batches.submit(item)
        assert item.result is not None
        return item.result.unwrap()
