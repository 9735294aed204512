"""Encrypted staging files: ``<id>.enc`` = AEAD stream header + chunks (see ``aead``).

Blocking file work runs in worker threads, one hop per chunk (read + decrypt, or
encrypt + write), so memory holds a chunk or two whatever the file size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

import outcome
import trio

from .._errors import NotFound
from .._pipeline import aead
from .._storage.writeback import Writeback


class StagingWriter:
    """Appends ciphertext to a staging file; fresh (``create``) or resumed (``resume``)."""

    def __init__(
        self, path: str, f: BinaryIO, encryptor: aead.Encryptor, *, durable: bool = True
    ) -> None:
        self.path = path
        self._f: BinaryIO | None = f
        self.encryptor = encryptor
        self.durable = durable
        self._writeback = Writeback(f.fileno()) if durable else None
        """Fsync on finish/close. Uploads skip it: their staging is transient (decrypted
        into an fsynced destination, then deleted) and a chunk lost to a power cut fails
        authentication rather than passing silently."""

    @classmethod
    async def create(
        cls, path: str, master_key: bytes, *, chunk_size: int, durable: bool = True
    ) -> StagingWriter:
        def open_new() -> StagingWriter:
            enc = aead.Encryptor.new(master_key, chunk_size=chunk_size)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            f = os.fdopen(fd, "wb", buffering=0)
            _write_all(f, enc.header)
            return cls(path, f, enc, durable=durable)

        return await trio.to_thread.run_sync(open_new)

    @classmethod
    async def resume(cls, path: str, master_key: bytes, *, durable: bool = True) -> StagingWriter:
        """Continue after the last whole chunk on disk (a torn chunk is cut off)."""

        def open_existing() -> StagingWriter:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            f = os.fdopen(fd, "r+b", buffering=0)
            try:
                header = f.read(aead.HEADER_SIZE)
                parsed = aead.parse_header(header)
                size = os.fstat(fd).st_size
                n = aead.whole_chunks(size, parsed.chunk_size)
                end = aead.ciphertext_offset(n, parsed.chunk_size)
                f.truncate(end)
                f.seek(end)
                return cls(path, f, aead.Encryptor.resume(master_key, header, n), durable=durable)
            except BaseException:
                f.close()
                raise

        return await trio.to_thread.run_sync(open_existing)

    async def write(self, plaintext: bytes) -> None:
        """Encrypt and append; only whole chunks reach the disk."""
        await trio.to_thread.run_sync(self._write_sync, plaintext, False)

    async def finish(self) -> None:
        """Append the last chunk and fsync: the stream is complete."""
        await trio.to_thread.run_sync(self._write_sync, b"", True)

    def _write_sync(self, plaintext: bytes, last: bool) -> None:
        assert self._f is not None, "write after close"
        sealed = self.encryptor.finish() if last else self.encryptor.feed(plaintext)
        if sealed:
            _write_all(self._f, sealed)
            if self._writeback is not None:
                self._writeback.wrote(len(sealed))
        if last and self.durable:
            os.fsync(self._f.fileno())

    async def close(self) -> None:
        """Fsync what was written and close (idempotent; safe under cancellation)."""
        f, self._f = self._f, None
        if f is not None:

            def sync_close() -> None:
                try:
                    if self.durable:
                        os.fsync(f.fileno())
                finally:
                    f.close()

            await trio.to_thread.run_sync(sync_close)


def _write_all(f: BinaryIO, data: bytes) -> None:
    """Unbuffered writes may be short: loop until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


def received_plaintext(path: str) -> int:
    """Plaintext bytes held in whole chunks of a partial staging file (0 if none)."""
    try:
        with open(path, "rb") as f:
            header = f.read(aead.HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return 0
    if len(header) < aead.HEADER_SIZE:
        return 0
    chunk = aead.parse_header(header).chunk_size
    return aead.whole_chunks(size, chunk) * chunk


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def read_plaintext(
    path: str, master_key: bytes, *, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """Decrypted bytes ``start .. end - 1`` (``end=None``: to the end, verified complete).

    Seeks to the chunk holding ``start``; every byte yielded was authenticated.
    Raises :class:`~streamer._pipeline.aead.DecryptionError` on tampering.
    """

    def open_at() -> tuple[BinaryIO, aead.Decryptor, int]:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except FileNotFoundError:
            raise NotFound("the transfer has no staged data") from None
        try:
            header = f.read(aead.HEADER_SIZE)
            chunk_size = aead.parse_header(header).chunk_size
            index, skip = aead.chunk_for_offset(start, chunk_size)
            f.seek(aead.ciphertext_offset(index, chunk_size))
            return f, aead.Decryptor(master_key, header, start_chunk=index), skip
        except BaseException:
            f.close()
            raise

    f, decryptor, skip = await trio.to_thread.run_sync(open_at)
    sealed = decryptor.chunk_size + aead.TAG_SIZE
    remaining = None if end is None else end - start

    def next_plaintext() -> tuple[bytes, bool]:
        data = f.read(sealed)
        if not data:
            return decryptor.finish(), True  # raises if the stream was cut short
        return decryptor.feed(data), False

    ahead = _Ahead(next_plaintext)
    try:
        ahead.start()
        done = False
        while not done and (remaining is None or remaining > 0):
            plain, done = await ahead.result()
            if not done and (remaining is None or remaining > len(plain) - skip):
                ahead.start()  # read + decrypt the next chunk while this one is sent
            if skip and plain:  # a short last chunk arrives only at finish(): skip then
                cut = min(skip, len(plain))
                plain, skip = plain[cut:], skip - cut
            if remaining is not None:
                plain = plain[:remaining]
                remaining -= len(plain)
            if plain:
                yield plain
    finally:
        with trio.CancelScope(shield=True):
            await ahead.settle()  # the thread must be done with the file before it closes
        f.close()


class _Ahead:
    """One blocking call at a time, run in a thread *without* waiting for it, so the
    caller can do other work (send the previous chunk) meanwhile."""

    def __init__(self, fn: Callable[[], tuple[bytes, bool]]) -> None:
        self._fn = fn
        self._token = trio.lowlevel.current_trio_token()
        self._done: trio.Event | None = None
        self._outcome: outcome.Outcome[tuple[bytes, bool]] | None = None

    def start(self) -> None:
        assert self._done is None, "one call at a time"
        done = self._done = trio.Event()

        def deliver(result: outcome.Outcome[tuple[bytes, bool]]) -> None:
            self._outcome = result
            self._token.run_sync_soon(done.set)

        trio.lowlevel.start_thread_soon(self._fn, deliver)

    async def result(self) -> tuple[bytes, bool]:
        assert self._done is not None, "nothing started"
        await self._done.wait()
        result, self._outcome, self._done = self._outcome, None, None
        assert result is not None
        return result.unwrap()

    async def settle(self) -> None:
        """Wait for a call in flight (its result or error is dropped)."""
        if self._done is not None:
            await self._done.wait()
            self._outcome = self._done = None
