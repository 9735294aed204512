"""The exchange: create, stage, serve, receive, finalise, delete and sweep transfers.

* ``direction: upload`` (server → worker): :meth:`Exchange.create` encrypts the
  source file into ``<directory>/<id>.enc`` while hashing it; the worker then
  downloads it, decrypted on the fly (:meth:`Exchange.download`, ranges welcome).
* ``direction: download`` (worker → server): the worker's body is encrypted as it
  arrives (:meth:`Exchange.receive`); a cut upload keeps its whole chunks and
  resumes from :meth:`Exchange.received`. Once complete the staging is decrypted
  into a temp file beside the destination, hashed, checked and renamed into place.

Every request first passes :meth:`Exchange.live`, which turns a transfer past its
expiry into ``expired`` (and drops its staging). The sweeper (:meth:`Exchange.run`)
does the same for transfers nobody asks about.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING

import trio

from .. import _paths
from .._concurrency import cleanup, run_every
from .._errors import BadRequest, ChecksumMismatch, Conflict, NotFound, StreamerError
from .._pipeline import Sha256, aead, capped, pump, write_through
from .._storage import Conflict as ConflictPolicy
from .._storage import Writer
from . import staging
from .models import Transfer, TransferRequest, TransferStatus
from .store import TransferStore
from .tokens import TokenSigner

if TYPE_CHECKING:
    from .._storage.registry import Locations

log = logging.getLogger("streamer.exchange")

READ_CHUNK = 1 << 20


class Gone(StreamerError):
    status_code = 410
    code = "transfer_expired"


class IncompleteUpload(StreamerError):
    status_code = 409
    code = "incomplete_upload"


class Exchange:
    """See the module docstring. ``clock`` gives seconds since the epoch (tests drive it)."""

    def __init__(
        self,
        directory: str,
        *,
        master_key: bytes,
        signer: TokenSigner,
        locations: Locations,
        default_ttl: float = 3600.0,
        max_ttl: float = 86400.0,
        sweep_interval: float = 300.0,
        chunk_size: int = aead.DEFAULT_CHUNK_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self.store = TransferStore(directory)
        self.signer = signer
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.sweep_interval = sweep_interval
        self._master_key = master_key
        self._locations = locations
        self._chunk_size = chunk_size
        self._clock = clock
        self._busy: set[str] = set()

    def close(self) -> None:
        self.store.close()

    def staging_path(self, transfer_id: str) -> str:
        return os.path.join(self.directory, f"{transfer_id}.enc")

    # -- lifecycle ---------------------------------------------------------

    async def create(self, request: TransferRequest) -> tuple[Transfer, str]:
        """Record a transfer (staging its file for ``upload``); return it and its token."""
        ttl = request.expires_in or self.default_ttl
        if ttl > self.max_ttl:
            raise BadRequest(f"expires_in {ttl:g} exceeds exchange.max_ttl {self.max_ttl:g}")
        path = _paths.clean_base(request.path)
        if not path:
            raise BadRequest("path must name a file, not the location root")
        self._locations.get("local", request.location_id)  # 400 for an unknown location
        now = self._clock()
        transfer = Transfer(
            id=str(uuid.uuid4()),
            worker_id=request.worker_id,
            direction=request.direction,
            location_id=request.location_id,
            path=path,
            original_filename=request.original_filename or path.rsplit("/", 1)[-1],
            content_type=request.content_type,
            checksum=request.checksum.lower() if request.checksum else None,
            sha256=None,
            file_size=request.file_size,
            status=TransferStatus.PENDING,
            created_at=now,
            expires_at=now + ttl,
            metadata=request.metadata,
        )
        if request.direction == "upload":
            self._busy.add(transfer.id)  # keeps the sweeper off its temp file
            try:
                await self._stage(transfer)
            finally:
                self._busy.discard(transfer.id)
        self.store.save(transfer)
        token = self.signer.issue(
            transfer.id, transfer.worker_id, transfer.scope, transfer.expires_at
        )
        return transfer, token

    async def _stage(self, transfer: Transfer) -> None:
        storage = self._locations.get("local", transfer.location_id)
        final = self.staging_path(transfer.id)
        temp = final + ".part"
        writer = await staging.StagingWriter.create(
            temp, self._master_key, chunk_size=self._chunk_size
        )
        digest = Sha256()
        try:
            source = storage.read(transfer.path, chunk_size=READ_CHUNK)
            await pump(source, [digest], writer)
            await writer.finish()
            await writer.close()
            assert digest.hexdigest is not None
            size = writer.encryptor.plaintext_bytes
            if transfer.checksum and transfer.checksum != digest.hexdigest:
                raise ChecksumMismatch(
                    f"{transfer.path} hashes to {digest.hexdigest}, not the declared "
                    f"{transfer.checksum}"
                )
            if transfer.file_size is not None and transfer.file_size != size:
                raise ChecksumMismatch(
                    f"{transfer.path} has {size} bytes, not the declared {transfer.file_size}",
                    code="SizeMismatch",
                )
            await trio.to_thread.run_sync(os.replace, temp, final)
        finally:
            await cleanup(writer.close)
            await trio.to_thread.run_sync(staging.remove, temp)
        transfer.sha256 = digest.hexdigest
        transfer.file_size = size

    def get(self, transfer_id: str) -> Transfer:
        transfer = self.store.get(transfer_id)
        if transfer is None:
            raise NotFound(f"no transfer {transfer_id!r}")
        return transfer

    async def live(self, transfer_id: str) -> Transfer:
        """The transfer, if it has not expired (410 ``transfer_expired`` otherwise)."""
        transfer = self.get(transfer_id)
        if transfer.status is TransferStatus.EXPIRED:
            raise Gone(f"transfer {transfer_id} has expired")
        if transfer.expires_at <= self._clock():
            await self._expire(transfer)
            raise Gone(f"transfer {transfer_id} has expired")
        return transfer

    async def current(self, transfer_id: str) -> Transfer:
        """The transfer, marked expired first if its time is up."""
        transfer = self.get(transfer_id)
        if transfer.expires_at <= self._clock() and _expires(transfer):
            await self._expire(transfer)
        return transfer

    async def delete(self, transfer_id: str) -> None:
        self.get(transfer_id)
        if transfer_id in self._busy:
            raise Conflict(f"transfer {transfer_id} is receiving an upload; retry when it ends")
        await self._drop_staging(transfer_id)
        self.store.delete(transfer_id)

    async def _drop_staging(self, transfer_id: str) -> None:
        path = self.staging_path(transfer_id)
        for p in (path, path + ".part"):
            await trio.to_thread.run_sync(staging.remove, p)

    async def _expire(self, transfer: Transfer) -> None:
        self._mark_expired(transfer)
        await self._drop_staging(transfer.id)

    def _mark_expired(self, transfer: Transfer) -> None:
        """Unfinished transfers, and staged files already downloaded (their staging goes
        now), become ``expired``; a completed upload keeps ``completed`` (it has no staging)."""
        if _expires(transfer):
            transfer.status = TransferStatus.EXPIRED
            if transfer.completed_at is None:
                transfer.error_message = "the transfer expired"
            self.store.save(transfer)

    async def sweep(self) -> int:
        """Expire every transfer past its expiry and drop its staging; return how many."""
        # An upload in flight may finish (it began in time); the next sweep takes it.
        swept = [t for t in self.store.expired(self._clock()) if t.id not in self._busy]
        for transfer in swept:  # records first: nobody may use them from now on
            self._mark_expired(transfer)
        for transfer in swept:
            await self._drop_staging(transfer.id)
        # Staging files without a record (deleted mid-write, crashed start) go too.
        known = self.store.ids()
        for name in await trio.to_thread.run_sync(os.listdir, self.directory):
            stem = name.split(".", 1)[0]
            if name.endswith((".enc", ".enc.part")) and stem not in known | self._busy:
                await trio.to_thread.run_sync(staging.remove, os.path.join(self.directory, name))
        return len(swept)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sweeper: once at start, then every ``sweep_interval`` seconds."""
        await run_every(
            self.sweep_interval,
            self.sweep,
            errors=(OSError, StreamerError),
            logger=log,
            what="exchange sweep",
            task_status=task_status,
        )

    # -- server → worker ---------------------------------------------------

    def begin(self, transfer: Transfer) -> None:
        """Mark a transfer started (first byte requested or received)."""
        if transfer.status is TransferStatus.PENDING:
            transfer.status = TransferStatus.IN_PROGRESS
            transfer.started_at = self._clock()
            self.store.save(transfer)

    async def download(self, transfer: Transfer, start: int, end: int) -> AsyncIterator[bytes]:
        """Plaintext bytes ``start .. end - 1`` of a staged transfer, decrypted on the fly.

        A response that reaches the last byte completes the transfer.
        """
        self.begin(transfer)
        to_end = end == transfer.file_size
        async for piece in staging.read_plaintext(
            self.staging_path(transfer.id),
            self._master_key,
            start=start,
            end=None if to_end else end,
        ):
            yield piece
        current = self.store.get(transfer.id)
        if current is None:  # deleted while it was being sent
            return
        current.bytes_transferred = max(current.bytes_transferred, end)
        if to_end and current.status is TransferStatus.IN_PROGRESS:
            current.status = TransferStatus.COMPLETED
            current.completed_at = self._clock()
        self.store.save(current)

    # -- worker → server ---------------------------------------------------

    async def received(self, transfer: Transfer) -> int:
        """Plaintext bytes of this upload safely on disk (where a resume starts)."""
        return await trio.to_thread.run_sync(
            staging.received_plaintext, self.staging_path(transfer.id)
        )

    async def receive(
        self,
        transfer: Transfer,
        body: AsyncIterable[bytes],
        *,
        offset: int | None,
        total: int | None,
        checksum: str | None,
    ) -> Transfer:
        """Take (part of) the worker's upload; finalise it once complete.

        ``offset`` None starts over; otherwise it must equal :meth:`received` (409).
        ``total`` (bytes of the whole file, when known) decides completeness; when
        unknown, the end of ``body`` completes the upload. Returns the updated record.
        """
        if transfer.finished:
            raise Conflict(f"transfer {transfer.id} is already {transfer.status.value}")
        if transfer.id in self._busy:
            raise Conflict(f"transfer {transfer.id} is receiving on another request")
        self._busy.add(transfer.id)
        try:
            return await self._receive(transfer, body, offset, total, checksum)
        finally:
            self._busy.discard(transfer.id)

    async def _receive(
        self,
        transfer: Transfer,
        body: AsyncIterable[bytes],
        offset: int | None,
        total: int | None,
        checksum: str | None,
    ) -> Transfer:
        path = self.staging_path(transfer.id)
        if checksum:
            if transfer.checksum and transfer.checksum != checksum:
                raise BadRequest("X-Checksum-Sha256 differs from the transfer's checksum")
            transfer.checksum = checksum
        if total is not None:
            if transfer.file_size is not None and transfer.file_size != total:
                raise BadRequest(
                    f"upload length {total} differs from file_size {transfer.file_size}"
                )
            transfer.file_size = total
        fresh = offset is None or not await trio.to_thread.run_sync(os.path.exists, path)
        if offset is not None:
            have = await self.received(transfer)
            if offset != have:
                raise Conflict(
                    f"Upload-Offset {offset} does not match the {have} bytes received",
                    code="offset_mismatch",
                )
        self.begin(transfer)
        if fresh:
            writer = await staging.StagingWriter.create(
                path, self._master_key, chunk_size=self._chunk_size, durable=False
            )
        else:
            writer = await staging.StagingWriter.resume(path, self._master_key, durable=False)
        # The whole file arrives on this request: it also goes straight into place
        # (hashed on the way), so a complete upload needs no second, decrypting pass.
        # The encrypted staging is still written: it is what a cut upload resumes from.
        direct = await self._open_destination(transfer) if fresh else None
        complete = False
        started = trio.current_time()
        try:

            async def write(data: bytes) -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(writer.write, data)
                    if direct is not None:
                        nursery.start_soon(direct.write, data)

            await write_through(
                capped(
                    body,
                    transfer.file_size,
                    seen=writer.encryptor.plaintext_bytes,
                    too_long=_too_long,
                ),
                write,
            )
            complete = transfer.file_size in (None, writer.encryptor.plaintext_bytes)
            if complete and direct is None:
                await writer.finish()
        finally:
            await cleanup(writer.close)
            if direct is not None and not complete:
                await cleanup(direct.abort)
            with trio.CancelScope(shield=True):
                if complete:
                    transfer.bytes_transferred = writer.encryptor.plaintext_bytes
                    transfer.file_size = writer.encryptor.plaintext_bytes
                else:
                    transfer.bytes_transferred = await self.received(transfer)
                self.store.save(transfer)
        log.info(
            "transfer %s: received %d bytes in %.2fs%s",
            transfer.id,
            transfer.bytes_transferred,
            trio.current_time() - started,
            "" if complete else " (incomplete)",
        )
        if complete:
            started = trio.current_time()
            if direct is None:
                direct = await self._decrypt_staging(transfer)
            await self._publish(transfer, direct)
            log.info(
                "transfer %s: verified into %s:%s in %.2fs",
                transfer.id,
                transfer.location_id,
                transfer.path,
                trio.current_time() - started,
            )
        return transfer

    async def _open_destination(self, transfer: Transfer) -> _Destination:
        storage = self._locations.get("local", transfer.location_id)
        writer = await storage.open_writer(
            transfer.path, conflict=ConflictPolicy.OVERWRITE, tag=f"exchange-{transfer.id}"
        )
        return _Destination(writer)

    async def _decrypt_staging(self, transfer: Transfer) -> _Destination:
        """A resumed upload: decrypt its complete staging into a fresh destination."""
        direct = await self._open_destination(transfer)
        try:
            source = staging.read_plaintext(self.staging_path(transfer.id), self._master_key)
            await pump(source, [], direct)
        except BaseException:
            await cleanup(direct.abort)
            with trio.CancelScope(shield=True):
                await self._drop_staging(transfer.id)
            raise
        return direct

    async def _publish(self, transfer: Transfer, direct: _Destination) -> None:
        """Verify the upload's bytes in ``direct`` and rename them into place (the
        transfer completes), or fail the transfer; the staging goes either way."""
        try:
            sha256 = await direct.digest()
            if transfer.checksum and sha256 != transfer.checksum:
                raise ChecksumMismatch(
                    f"the upload hashes to {sha256}, declared {transfer.checksum}"
                )
            await direct.writer.commit(sha256=sha256, mtime_ns=None)
        except StreamerError as exc:
            transfer.status = TransferStatus.FAILED
            transfer.error_message = exc.message
            raise
        else:
            transfer.status = TransferStatus.COMPLETED
            transfer.sha256 = sha256
            transfer.completed_at = self._clock()
        finally:
            await cleanup(direct.abort)
            with trio.CancelScope(shield=True):
                await self._drop_staging(transfer.id)
                self.store.save(transfer)


class _Destination:
    """The upload's plaintext on its way into place: a storage writer, hashed as fed."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._hash = Sha256()

    async def write(self, data: bytes) -> None:
        await self._hash.feed(data)
        await self.writer.write(data)

    async def digest(self) -> str:
        await self._hash.flush()
        assert self._hash.hexdigest is not None
        return self._hash.hexdigest

    async def abort(self) -> None:
        self._hash.close()
        await self.writer.abort()


def _expires(transfer: Transfer) -> bool:
    """Whether reaching its expiry turns ``transfer`` into ``expired``."""
    return not transfer.finished or (
        transfer.status is TransferStatus.COMPLETED and transfer.direction == "upload"
    )


def _too_long(limit: int) -> IncompleteUpload:
    return IncompleteUpload(
        f"the upload exceeds its declared size of {limit} bytes", code="upload_too_long"
    )
