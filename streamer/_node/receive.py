"""The ``node-receive`` runner: take a Wings-style push, verify it, then commit it.

The request handler feeds the raw body into :class:`~.service.Incoming`; this
runner reads it (throttled to the node's ``download_limit``), splits the
``multipart/form-data`` parts (:mod:`.multipart`) and sends the ``archive``
part's bytes both to a SHA-256 hasher and to an
:class:`~streamer._pipeline.unpack.ExtractSink` that decompresses (gzip or
zstd by magic bytes) and safely extracts into a staging directory beside
``servers.root/<uuid>``.

Verify before commit: only when the body is complete and the ``checksum``
part (64 lowercase hex digits) equals the archive's digest (constant-time
compare) is staging moved into place, atomically, replacing any previous
tree. A missing checksum (with ``perform_checksum_checks``), a mismatch, a
truncated or hostile archive, a stalled or cancelled stream: staging is
removed and the previous tree is untouched. Then ``after_extract`` runs and
the Panel hears ``success``; on any failure it hears ``failure`` (unless a
newer push for the same server superseded this one).

Parts other than ``archive`` and ``checksum`` are ignored, as Wings does; the
checksum may come before or after the archive.
"""

from __future__ import annotations

import hmac
import logging
import re
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from .._concurrency import cleanup
from .._engine import FileTask, Job, JobControl
from .._errors import BadRequest, ChecksumMismatch, StreamerError
from .._pipeline import Sha256
from .._pipeline.unpack import ExtractSink
from . import servers
from .multipart import MultipartParser, PartData, PartEnd, PartStart

if TYPE_CHECKING:
    from .service import Incoming, NodeService

log = logging.getLogger(__name__)

ARCHIVE: Final = "archive"
IDLE_TIMEOUT_SECONDS: Final = 120.0
MAX_CHECKSUM_PART: Final = 256
_HEX64: Final = re.compile(rb"[0-9a-f]{64}")


class TransferStalled(StreamerError):
    status_code = 408
    code = "transfer_stalled"


class ReceiveRunner:
    """Runs ``node-receive`` jobs; see the module docstring."""

    resumable = False

    def __init__(self, node: NodeService, *, idle_timeout: float = IDLE_TIMEOUT_SECONDS) -> None:
        self._node = node
        self._idle_timeout = idle_timeout

    async def recover(self, job: Job) -> None:
        pass

    async def run(self, job: Job, control: JobControl) -> None:
        node = self._node
        incoming = node.incoming_for(job)
        server = incoming.claims.server
        transfers = node.config.transfers
        staging = servers.staging_dir(node.root, server, job.id)
        target = servers.server_dir(node.root, server)
        file = job.files[0]
        sink = ExtractSink(
            staging,
            max_members=transfers.max_archive_members,
            max_bytes=int(transfers.max_extracted_gib * (1 << 30)),
            max_window_size=transfers.zstd_max_window_mib << 20,
            durable=transfers.fsync_before_commit,
        )
        digest = Sha256()
        committed = succeeded = False
        control.file_started(file)
        try:
            try:
                checksum = await self._consume(incoming, sink, digest, control, file)
            finally:
                incoming.stop_input()
                digest.close()
            if transfers.perform_checksum_checks:
                _verify(checksum, digest.hexdigest)
            await trio.to_thread.run_sync(
                partial(servers.commit, staging, target, durable=transfers.fsync_before_commit)
            )
            committed = True
            log.info("server %s received and committed (job %s)", server, job.id)
            hooks = node.config.servers.hooks
            await servers.run_hook(
                "after_extract", hooks.after_extract, server, target, seconds=hooks.timeout_seconds
            )
            assert digest.hexdigest is not None
            file.source = ARCHIVE
            file.size = file.loaded
            job.total_bytes = file.size
            control.file_completed(file, sha256=digest.hexdigest, final_path=target)
            succeeded = True
        except StreamerError as exc:
            incoming.error = exc
            raise
        finally:
            await cleanup(sink.aclose)
            if not committed:
                await cleanup(trio.to_thread.run_sync, servers.remove_tree, staging)
            node.incoming_done(incoming, success=succeeded)
            if succeeded or not incoming.superseded:
                node.panel.report(server, success=succeeded, job_id=job.id)

    async def _consume(
        self,
        incoming: Incoming,
        sink: ExtractSink,
        digest: Sha256,
        control: JobControl,
        file: FileTask,
    ) -> bytes | None:
        """Read the body to its end; return the checksum part (``None`` if absent)."""
        parser = MultipartParser(incoming.boundary)
        bucket = self._node.download
        part: str | None = None
        archive = False
        checksum: bytearray | None = None
        async with incoming.receive:
            while True:
                with trio.move_on_after(self._idle_timeout) as idle:
                    try:
                        chunk = await incoming.receive.receive()
                    except trio.EndOfChannel:
                        break
                if idle.cancelled_caught:
                    raise TransferStalled(f"no data for {self._idle_timeout:g}s")
                await bucket.consume(len(chunk))
                for event in parser.feed(chunk):
                    if isinstance(event, PartData):
                        if part == "archive":
                            await digest.feed(event.data)
                            await sink.write(event.data)
                            self._progress(sink, control, file)
                        elif part == "checksum":
                            assert checksum is not None
                            checksum += event.data
                            if len(checksum) > MAX_CHECKSUM_PART:
                                raise BadRequest("checksum part too long", code="invalid_checksum")
                    elif isinstance(event, PartStart):
                        part = event.name
                        if part == "archive":
                            if archive:
                                raise BadRequest("two archive parts", code="duplicate_part")
                            archive = True
                        elif part == "checksum":
                            if checksum is not None:
                                raise BadRequest("two checksum parts", code="duplicate_part")
                            checksum = bytearray()
                    elif isinstance(event, PartEnd):
                        if part == "archive":
                            await digest.flush()
                            await sink.finish()
                            self._progress(sink, control, file)
                        part = None
        parser.finish()
        if not archive:
            raise BadRequest("the request has no 'archive' part", code="missing_archive")
        return None if checksum is None else bytes(checksum)

    @staticmethod
    def _progress(sink: ExtractSink, control: JobControl, file: FileTask) -> None:
        """Bytes of the tar stream extracted so far; the member being written is shown
        as the current file's path."""
        file.source = sink.current or ARCHIVE
        control.file_progress(file, sink.bytes_out)


def _verify(checksum: bytes | None, actual: str | None) -> None:
    if checksum is None:
        raise ChecksumMismatch(
            "the request has no 'checksum' part and transfers.perform_checksum_checks is on",
            code="missing_checksum",
        )
    declared = checksum.strip()
    if not _HEX64.fullmatch(declared):
        raise ChecksumMismatch(
            "the checksum part is not 64 lowercase hex digits", code="invalid_checksum"
        )
    assert actual is not None
    if not hmac.compare_digest(declared, actual.encode()):
        raise ChecksumMismatch("the archive does not match its checksum; nothing was committed")
