"""The destination half of an archive transfer: compressed tar bytes in, a tree out.

:class:`ExtractSink` is a pipeline sink. Chunks written to it go to one worker
thread that decompresses them (format from the magic bytes, output bounded, see
:mod:`.compression`), parses the tar stream (:class:`~.tarstream.TarReader`)
and recreates the tree under a staging directory with
:class:`~.extract.SafeExtractor`, which refuses anything unsafe. The thread
pulls from a short queue, so at most ``max_pending`` chunks wait and the
writer feels back-pressure; an error in the thread surfaces at the writer's
next :meth:`ExtractSink.write` (or :meth:`ExtractSink.finish`), which is how a
hostile archive stops the upload early.

With ``durable`` the disk writes of every extracted file are started as soon
as it is complete (``sync_file_range``), overlapping them with the rest of
the extraction, and :meth:`ExtractSink.finish` flushes the filesystem once
(``syncfs``) before it returns: a tree committed afterwards never shows
missing content after a crash. One flush for the tree is far cheaper than one
``fsync`` per file (each is a journal commit and a disk cache flush), at the
price of also flushing what else is dirty on that filesystem.

Limits: ``max_members``; ``max_bytes`` caps the decompressed stream (headers
and padding included) and, through the tar reader, the declared content sizes;
``max_window_size`` caps a zstd frame's window.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Final

import trio

from .._errors import StorageError, StreamerError
from .._syncfs import sync_filesystem
from .compression import DEFAULT_MAX_WINDOW, ArchiveFormat, open_decoder
from .extract import SafeExtractor
from .tarstream import ArchiveLimitExceeded, Member, TarReader

log = logging.getLogger(__name__)

_OUTPUT_PIECE: Final = 256 * 1024


class _Eof:
    pass


class _Abort:
    pass


_EOF: Final = _Eof()
_ABORT: Final = _Abort()


class _Aborted(Exception):
    """Raised inside the worker thread to unwind it after :meth:`ExtractSink.aclose`."""


class ExtractSink:
    """Extract a compressed tar stream into ``staging``; see the module docstring.

    Write chunks with :meth:`write`, then call :meth:`finish` (raises if the
    archive was incomplete or refused); always call :meth:`aclose` (it stops
    the thread and waits for it, so the caller may then delete ``staging``).
    ``current`` names the member being written, for progress displays.
    """

    def __init__(
        self,
        staging: str,
        *,
        max_members: int | None = None,
        max_bytes: int | None = None,
        max_window_size: int = DEFAULT_MAX_WINDOW,
        max_pending: int = 4,
        durable: bool = True,
    ) -> None:
        self._staging = staging
        self._durable = durable
        self._max_members = max_members
        self._max_bytes = max_bytes
        self._max_window = max_window_size
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[bytes | _Eof | _Abort] = queue.SimpleQueue()
        self._slots = trio.Semaphore(max_pending)
        self._done = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._aborting = False
        self._finished = False
        # Worker-side read state.
        self._buffer = b""
        self._offset = 0
        self._input_ended = False
        # Progress, written by the worker, read by anyone.
        self.current: str | None = None
        self.format: ArchiveFormat | None = None
        self.members = 0
        self.bytes_out = 0

    # -- trio side -----------------------------------------------------------

    async def write(self, chunk: bytes) -> None:
        """Queue ``chunk`` for the worker; raise the worker's error if it failed."""
        if self._thread is None:
            self._start()
        self._raise_if_failed()
        await self._slots.acquire()
        self._raise_if_failed()
        self._queue.put(chunk)

    async def finish(self) -> None:
        """End of input: wait for the worker; raise what made it fail, if anything."""
        if self._thread is None:
            self._start()
        if not self._finished:
            self._finished = True
            self._queue.put(_EOF)
        await self._done.wait()
        self._raise_if_failed()

    async def aclose(self) -> None:
        """Stop the worker (if still running) and wait until it has let go of staging."""
        if self._thread is None:
            return
        if not self._done.is_set():
            self._aborting = True
            self._queue.put(_ABORT)
            await self._done.wait()

    def _start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name="extract", daemon=True)
        self._thread.start()

    def _raise_if_failed(self) -> None:
        if self._done.is_set() and self._error is not None:
            raise self._error
        if self._done.is_set() and not self._finished:
            raise StreamerError("the extractor stopped early", code="internal_error")

    def _on_done(self) -> None:
        self._done.set()
        for _ in range(self._max_pending):  # wake writers waiting for a slot
            self._slots.release()

    # -- worker thread ---------------------------------------------------------

    def read(self, n: int, /) -> bytes:
        """The decoder's source: the next queued bytes (blocking), ``b""`` at the end."""
        if self._offset >= len(self._buffer):
            if self._input_ended:
                return b""
            item = self._queue.get()
            if isinstance(item, _Abort) or self._aborting:
                raise _Aborted
            self._notify(self._slots.release)
            if isinstance(item, _Eof):
                self._input_ended = True
                return b""
            self._buffer, self._offset = item, 0
        if self._offset == 0 and n >= len(self._buffer):
            self._offset = len(self._buffer)
            return self._buffer
        out = self._buffer[self._offset : self._offset + n]
        self._offset += len(out)
        return out

    def _run(self) -> None:
        try:
            self._extract()
        except _Aborted:
            pass
        except StreamerError as exc:
            self._error = exc
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "OSError")
            self._error = StorageError(f"extracting into staging failed: {exc}", code=code)
        except BaseException as exc:  # a bug must fail the transfer, not hang it
            log.exception("extractor crashed")
            self._error = StreamerError(f"{type(exc).__name__}: {exc}", code="internal_error")
        finally:
            self._notify(self._on_done)

    def _extract(self) -> None:
        decoder = open_decoder(self, max_window_size=self._max_window)
        self.format = decoder.format
        reader = TarReader(max_members=self._max_members, max_total_bytes=self._max_bytes)
        on_file = _start_writeback if self._durable else None
        with SafeExtractor(
            self._staging, max_members=self._max_members, on_file_complete=on_file
        ) as extractor:
            while piece := decoder.read(_OUTPUT_PIECE):
                self.bytes_out += len(piece)
                if self._max_bytes is not None and self.bytes_out > self._max_bytes:
                    raise ArchiveLimitExceeded(
                        f"archive decompresses to more than {self._max_bytes} bytes"
                    )
                events = reader.feed(piece)
                for event in events:
                    if isinstance(event, Member):
                        self.current = event.name
                extractor.feed(events)
                self.members = extractor.members
            reader.finish()
            extractor.finish()
        if self._durable:
            _sync_filesystem(self._staging)
        self.current = None

    def _notify(self, fn: Callable[[], object]) -> None:
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE: Final = 2


def _start_writeback(fd: int) -> None:
    """Start writing a finished file to disk without waiting (Linux; else nothing)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _sync_filesystem(path: str) -> None:
    """Flush the filesystem holding ``path``: one journal commit and cache flush for
    the whole tree, instead of one per file. Where syncfs cannot be trusted
    (:mod:`streamer._syncfs`), ``sync()`` of everything, which reports no errors;
    a failed syncfs raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not sync_filesystem(fd):
            os.sync()
    finally:
        os.close(fd)
