"""The runner for storage-to-storage copies (cross-storage, s3-upload, s3-download)
and for imports (huggingface, url).

Files of a job are copied with bounded parallelism; each goes source → sha256 →
progress → destination writer through :func:`~streamer._pipeline.pump`, and is
published only after every byte was hashed and the size matched the plan (a
size planned as ``UNKNOWN_SIZE``, from an HTTP import without Content-Length,
is recorded as read instead) and the content matched every SHA-256 declared:
the listing's (``Entry.sha256``) and the one the source learns while being read
(:class:`~streamer._storage.DeclaringSource`: an S3 object's
``x-amz-meta-sha256``, which a listing does not carry). A mismatch fails the
file with ``ChecksumMismatch`` and nothing is published.

A file of more than one chunk (> 1 MiB) from a source serving ranges (S3, local
disk) to a writer that takes bytes in place (local disk) is fetched as parallel
ranges written where they belong, each hashed from its own buffer in order
(:mod:`streamer._engine.inplace`).

A file of more than one chunk from a source read by offset (local disk) to a writer that
lends its parts' buffers (S3 multipart) is read straight into the parts and
hashed there (:mod:`streamer._engine.intoparts`): no chunks, no copy.

A destination that publishes more cheaply when it knows the digest first
(:class:`~streamer._storage.DigestFirst`: S3 multipart objects) is told it:
the declared SHA-256 when the source has one, else the file hashed before
the copy when the source can (:class:`~streamer._storage.HashableSource`: a
local file). The bytes copied are hashed all the same, and the writer refuses
to publish if they hash to anything else (the file changed in between). When the
writer signs each part by its SHA-256 (S3 over plain http), that pre-pass also
hashes the parts, in a second thread: the upload then hashes each byte once, not
twice, and a part that changed since is refused by the server. The pre-pass of the
next big file runs while one uploads (:class:`_DigestsAhead`).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import msgspec
import outcome
import trio

from .._concurrency import cleanup, for_each, open_nursery
from .._errors import SOURCE_CHANGED, ChecksumMismatch, StorageError, StreamerError
from .._pipeline import Progress, Sha256, pump
from .._storage import (
    Conflict,
    CopyResult,
    DeclaringSource,
    DigestFirst,
    FileDigest,
    HashableSource,
    PartLender,
    PositionalSource,
    PositionalWriter,
    RangedSource,
    ServerSideCopy,
    Storage,
    Writer,
)
from .._storage.base import UNKNOWN_SIZE, Declare
from .._storage.registry import Locations
from .._storage.s3writer import S3Writer
from .engine import JobControl
from .inplace import copy_in_place
from .intoparts import copy_into_parts
from .jobs import FileTask, Job
from .transfer import TransferSpec

# Small files are many and cheap in memory: copy many at once so their fsyncs share
# journal commits and their requests' round trips overlap. Files of one chunk at most
# are read whole (<= 1 MiB each): up to 64 KiB, 64 at once (a 1,000-file S3 tree:
# 436 -> 664 files/s against 16); bigger, 16 at once (64 of them could hold 64 MiB: a
# 2,000 x 512 KiB local tree's peak RSS 132 -> 84 MB).
# Bigger small files go 8 at once (what a pump, ranges in place or an S3 part buffer
# hold of each: memory <= 8 x 8 MiB); big files are few and hold several chunks
# each: one at a time.
SMALL_CHUNK = 1 << 20
SMALL_FILE = 8 << 20
IN_FLIGHT_BY_SIZE = ((64 << 10, 64), (SMALL_CHUNK, 16), (SMALL_FILE - 1, 8))
"""(largest size, files at once) of each group of small files, smallest first;
bigger files (and those of unknown size: the third group) as :data:`LARGE_FILES_IN_FLIGHT`."""
LARGE_FILES_IN_FLIGHT = 1
LARGE_CHUNK = 4 << 20
LARGE_FILE = 64 << 20
# Files of more than one chunk skip the pump between S3 and local disk. Downloads come
# as ranges written in place: the prefetching pump held whole parts plus chunks (a 64 MiB
# object: 180 MB peak RSS, 124 MB/s; in place: 147 MB, 204 MB/s, a third of the CPU).
# So do local copies (1 GiB: peak RSS 114 -> 76 MB, same 1.1-1.2 GB/s as the pump).
# Uploads are read into the lent part buffers. A tree of 48 x 6 MiB files: peak RSS
# 173 -> 113 MiB down and 181 -> 126 MiB up, each faster, against the pump for both.
IN_PLACE_FILE = SMALL_CHUNK  # bigger files from ranged sources are fetched in place
INTO_PARTS_FILE = SMALL_CHUNK  # bigger files from positional sources fill lent parts


def chunk_size_for(size: int, writer: Writer) -> int:
    """Bigger chunks for big files: fewer thread hops, same flat memory bound. Not
    when the writer gathers whole parts anyway (S3): bigger chunks would only add
    to the memory held, ~7 chunks in the pump on top of its parts."""
    if size < LARGE_FILE or isinstance(writer, S3Writer):
        return SMALL_CHUNK
    return LARGE_CHUNK


def staging_tag(job: Job, file: FileTask) -> str:
    return f"{job.id}-{file.index}"


@dataclass(frozen=True, slots=True)
class Ends:
    """A job's source and destination, with what each can do beyond :class:`Storage`
    found once per job: each field is the storage itself when it has that ability,
    else ``None``. (A Protocol ``isinstance`` costs 6-15 µs on Python 3.11; five per
    file were about a tenth of a small file's CPU.) Writers are still asked per file,
    and only for files big enough to use what they can do."""

    source: Storage
    destination: Storage
    server_side: ServerSideCopy | None
    digest_first: DigestFirst | None
    hashable: HashableSource | None
    declaring: DeclaringSource | None
    ranged: RangedSource | None
    positional: PositionalSource | None

    @classmethod
    def of(cls, source: Storage, destination: Storage) -> Ends:
        return cls(
            source,
            destination,
            server_side=destination if isinstance(destination, ServerSideCopy) else None,
            digest_first=destination if isinstance(destination, DigestFirst) else None,
            hashable=source if isinstance(source, HashableSource) else None,
            declaring=source if isinstance(source, DeclaringSource) else None,
            ranged=source if isinstance(source, RangedSource) else None,
            positional=source if isinstance(source, PositionalSource) else None,
        )


class CopyRunner:
    """Copies the files of a job between two storages; see the module docstring."""

    resumable = True

    def __init__(self, locations: Locations, *, in_place_file: int = IN_PLACE_FILE) -> None:
        """``in_place_file``: files bigger than this from ranged sources go in place."""
        self._locations = locations
        self._in_place_file = in_place_file

    def _ends(self, job: Job) -> tuple[Ends, Conflict]:
        spec = msgspec.convert(job.spec, TransferSpec)
        source = self._locations.source(spec.source)
        destination = self._locations.destination(spec.destination)
        return Ends.of(source, destination), spec.conflict

    async def recover(self, job: Job) -> None:
        ends, _ = self._ends(job)
        for file in job.files:
            if not file.status.finished:
                await ends.destination.sweep(file.destination, tag=staging_tag(job, file))

    async def run(self, job: Job, control: JobControl) -> None:
        ends, conflict = self._ends(job)
        todo = [f for f in job.files if not f.status.finished]

        async with open_nursery() as nursery:
            digests = _DigestsAhead(nursery, ends, conflict, todo)

            async def copy(file: FileTask) -> None:
                try:
                    await self._copy(job, file, ends, conflict, control, digests)
                finally:
                    digests.forget(file)

            async with open_nursery() as copies:
                for files, in_flight in _by_size(todo):
                    copies.start_soon(for_each, files, in_flight, copy)
            nursery.cancel_scope.cancel()  # a digest taken ahead for a file not copied

    async def _copy(
        self,
        job: Job,
        file: FileTask,
        ends: Ends,
        conflict: Conflict,
        control: JobControl,
        digests: _DigestsAhead,
    ) -> None:
        control.file_started(file)
        try:
            if conflict is Conflict.SKIP and await ends.destination.stat(file.destination):
                control.file_skipped(file)
                return
            if ends.server_side is not None:
                copied = await ends.server_side.copy_within(
                    ends.source,
                    file.source,
                    file.destination,
                    conflict=conflict,
                    tag=staging_tag(job, file),
                )
                if copied is not None:
                    self._report_copy(control, file, copied)
                    return
            progress = Progress(lambda loaded: control.file_progress(file, loaded))
            writer = await _open_writer(file, ends, conflict, staging_tag(job, file), digests)
            try:
                declared: list[str] = []  # what the source declares, learned while reading
                sha256 = await _move_bytes(
                    file, ends, writer, progress, declared.append, self._in_place_file
                )
                if file.size == UNKNOWN_SIZE:  # an import that could not tell beforehand
                    control.file_sized(file, progress.total)
                elif progress.total != file.size:
                    raise StorageError(
                        f"{file.source} changed while being copied "
                        f"(size {file.size} → {progress.total})",
                        code=SOURCE_CHANGED,
                    )
                _verify(file, sha256, declared)
                final = await writer.commit(sha256=sha256, mtime_ns=file.mtime_ns)
            finally:
                await cleanup(writer.abort)
        except StreamerError as exc:
            control.file_failed(file, exc)
            return
        self._report_copy(control, file, CopyResult(final, progress.total, sha256))

    @staticmethod
    def _report_copy(control: JobControl, file: FileTask, result: CopyResult) -> None:
        if result.path is None:
            control.file_skipped(file)
        else:
            control.file_completed(file, sha256=result.sha256, final_path=result.path)


class _DigestsAhead:
    """The pre-pass digests of a job's files (:meth:`HashableSource.file_digest`),
    one file ahead: when a big file takes its digest, the next big file that will
    need one starts hashing in the background, on a core the upload leaves idle, so
    its own upload does not wait for it. Big files go one at a time, in list order
    (:data:`LARGE_FILES_IN_FLIGHT`), so "next" is the next such file in the list;
    smaller ones that need a digest (a part size under 8 MiB) take theirs when they
    ask. Under ``skip`` a file whose destination exists is not hashed ahead, and a
    file that ends without taking its digest has the one ahead cancelled
    (:meth:`forget`). A digest taken ahead is of the file as it was then; the
    writer's commit still checks the bytes sent against it, as for one taken just
    before."""

    def __init__(
        self, nursery: trio.Nursery, ends: Ends, conflict: Conflict, files: list[FileTask]
    ) -> None:
        self._nursery = nursery
        self._ends = ends
        self._conflict = conflict
        big = [file for file in files if file.size >= SMALL_FILE and self._hashed_first(file)]
        self._after = {a.index: b for a, b in itertools.pairwise(big)}
        self._ahead: dict[int, _Outcome] = {}
        self._taken: set[int] = set()

    def _wanted(self, file: FileTask) -> bool:
        """Whether the destination wants ``file``'s digest before its bytes."""
        first = self._ends.digest_first
        return first is not None and first.wants_sha256_first(file.size)

    def _hashed_first(self, file: FileTask) -> bool:
        """Whether that digest is ours to take (none declared; the source can hash)."""
        return (
            self._wanted(file) and file.expected_sha256 is None and self._ends.hashable is not None
        )

    async def take(self, file: FileTask) -> FileDigest | None:
        """``file``'s digest when its destination wants one first: the one its source
        declares, else hashed now, or awaited if hashed ahead; ``None`` when it is not
        wanted or the source cannot hash the file. Starts hashing the next big file."""
        if not self._wanted(file):
            return None
        if file.expected_sha256 is not None:
            return FileDigest(file.expected_sha256)
        if self._ends.hashable is None:
            return None
        self._taken.add(file.index)
        following = self._after.get(file.index)
        if (
            following is not None
            and following.index not in self._ahead
            and following.index not in self._taken
        ):
            self._ahead[following.index] = pending = _Outcome()
            self._nursery.start_soon(pending.capture, self._digest_ahead, following)
        ahead = self._ahead.pop(file.index, None)
        digest = None if ahead is None else await ahead.result()
        return digest if digest is not None else await self._digest(file)

    def forget(self, file: FileTask) -> None:
        """``file``'s copy is over: a digest of it still being taken ahead is not needed."""
        ahead = self._ahead.pop(file.index, None)
        if ahead is not None:
            ahead.cancel()

    async def _digest_ahead(self, file: FileTask) -> FileDigest | None:
        """:meth:`_digest`, unless ``skip`` will skip the file (``None``: then not hashed)."""
        if self._conflict is Conflict.SKIP and await self._ends.destination.stat(file.destination):
            return None
        return await self._digest(file)

    async def _digest(self, file: FileTask) -> FileDigest:
        hashable, first = self._ends.hashable, self._ends.digest_first
        assert hashable is not None and first is not None
        part_size = first.signed_part_size(file.size)
        return await hashable.file_digest(file.source, part_size=part_size)


class _Outcome:
    """A digest being taken in the background: awaited by whoever takes it, or
    cancelled (then it is ``None``, as for a file not hashed ahead)."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        self._result: outcome.Outcome[FileDigest | None] | None = None  # None: cancelled

    async def capture(
        self, digest: Callable[[FileTask], Awaitable[FileDigest | None]], file: FileTask
    ) -> None:
        with self._scope:
            try:
                self._result = outcome.Value(await digest(file))
            except Exception as exc:  # raised to the file's own copy, when it comes
                self._result = outcome.Error(exc)
        self._done.set()

    def cancel(self) -> None:
        self._scope.cancel()

    async def result(self) -> FileDigest | None:
        await self._done.wait()
        return None if self._result is None else self._result.unwrap()


def _by_size(files: list[FileTask]) -> list[tuple[list[FileTask], int]]:
    """``files`` in groups by size, each with how many of them to copy at once
    (:data:`IN_FLIGHT_BY_SIZE`); a file of unknown size goes with the 1-8 MiB ones."""
    tops = [top for top, _ in IN_FLIGHT_BY_SIZE]
    groups: list[list[FileTask]] = [[] for _ in range(len(tops) + 1)]
    for file in files:
        size = SMALL_FILE - 1 if file.size < 0 else file.size
        groups[bisect.bisect_left(tops, size)].append(file)
    limits = [n for _, n in IN_FLIGHT_BY_SIZE] + [LARGE_FILES_IN_FLIGHT]
    return list(zip(groups, limits, strict=True))


def _verify(file: FileTask, sha256: str, declared: list[str]) -> None:
    """``ChecksumMismatch`` unless ``sha256`` is every digest declared for ``file``."""
    for expected in filter(None, [file.expected_sha256, *declared]):
        if expected != sha256:
            raise ChecksumMismatch(
                f"{file.source}: content hashes to {sha256}, the source declares {expected}"
            )


async def _move_bytes(
    file: FileTask,
    ends: Ends,
    writer: Writer,
    progress: Progress,
    declare: Declare,
    in_place_file: int,
) -> str:
    """Copy ``file``'s bytes from ``ends.source`` into ``writer``, counted by ``progress``;
    returns their SHA-256 (hex); ``declare`` is told what the source declares it
    should be, if anything. A file bigger than ``in_place_file`` whose source serves
    ranges and whose writer takes them in place goes by :func:`copy_in_place`; one
    bigger than ``INTO_PARTS_FILE`` read by offset into a writer lending its parts, by
    :func:`copy_into_parts`; anything else streams through the pump (source →
    sha256 → progress → writer)."""
    ranged, positional = ends.ranged, ends.positional
    if file.size > in_place_file and ranged is not None and isinstance(writer, PositionalWriter):
        return await copy_in_place(ranged, file.source, file.size, writer, progress, declare)
    if file.size > INTO_PARTS_FILE and positional is not None and isinstance(writer, PartLender):
        return await copy_into_parts(positional, file.source, file.size, writer, progress)
    if 0 <= file.size <= SMALL_CHUNK:
        return await _move_small(file, ends, writer, progress, declare)
    digest = Sha256()
    chunks = _read(ends, file.source, chunk_size_for(file.size, writer), declare)
    await pump(chunks, [digest, progress], writer)
    assert digest.hexdigest is not None
    return digest.hexdigest


def _read(ends: Ends, path: str, chunk_size: int, declare: Declare) -> AsyncIterator[bytes]:
    """``ends.source.read``, telling ``declare`` what a :class:`DeclaringSource` declares."""
    if ends.declaring is not None:
        return ends.declaring.read_declaring(path, chunk_size=chunk_size, declare=declare)
    return ends.source.read(path, chunk_size=chunk_size)


async def _move_small(
    file: FileTask, ends: Ends, writer: Writer, progress: Progress, declare: Declare
) -> str:
    """:func:`_move_bytes` for a file planned to fit in one chunk: read whole, hashed
    inline, written in one call, without a pump's tasks and channels (their cost
    dominated small files). A file that grew is still read only to one byte past
    its planned size (the caller then reports the change)."""
    pieces: list[bytes] = []
    size = 0
    chunks = _read(ends, file.source, SMALL_CHUNK, declare)
    try:
        async for chunk in chunks:
            pieces.append(chunk)
            size += len(chunk)
            if size > file.size:
                break
    finally:
        aclose = getattr(chunks, "aclose", None)  # an async generator: stop it now
        if aclose is not None:
            await aclose()
    data = b"".join(pieces)
    progress.add(len(data))
    if data:
        await writer.write(data)
    return hashlib.sha256(data).hexdigest()


async def _open_writer(
    file: FileTask, ends: Ends, conflict: Conflict, tag: str, digests: _DigestsAhead
) -> Writer:
    """The destination's writer for ``file``, told the file's size when it takes it
    (S3: parts sized to fit its part limit), and the digest up front when that helps
    the destination and the digest is declared or cheap to get (module doc)."""
    digest_first = ends.digest_first
    if digest_first is None:
        return await ends.destination.open_writer(file.destination, conflict=conflict, tag=tag)
    digest = await digests.take(file)
    return await digest_first.open_writer(
        file.destination,
        conflict=conflict,
        tag=tag,
        size=None if file.size == UNKNOWN_SIZE else file.size,
        sha256=None if digest is None else digest.sha256,
        mtime_ns=None if digest is None else file.mtime_ns,
        part_sha256s=() if digest is None else digest.part_sha256s,
    )
