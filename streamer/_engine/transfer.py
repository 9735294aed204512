"""Storage-to-storage transfers: the request's shape, its plan and its conflicts.

A :class:`TransferSpec` is seed 000's request body. :func:`plan` walks its items
into :class:`FileTask` s (files and whole directories, ``path`` relative to the
source path) and gives the spec to record for the job (a Hub source with the
commit it was listed at); :func:`check_conflicts` answers the seed's
check-conflicts call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from .. import _paths
from .._errors import BadRequest, SourceNotFound
from .._storage import Conflict, Entry, Storage, VersionedSource
from .._storage.registry import Locations
from .jobs import FileTask

LARGE_FOLDER_FILES = 1000
LARGE_FOLDER_BYTES = 10 * 2**30
MAX_ITEMS = 10_000

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class _Side(
    msgspec.Struct, forbid_unknown_fields=True, rename="camel", frozen=True, tag_field="type"
):
    """Either side of a transfer, told apart by its ``type`` field."""


class LocationEndpoint(_Side, frozen=True):
    """A configured location: ``{type, locationId, path}`` (for S3 the id is the bucket)."""

    location_id: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, examples=["local-0"])]
    path: Annotated[str, msgspec.Meta(max_length=4096, examples=["models"])] = ""


class LocalEndpoint(LocationEndpoint, tag="local", frozen=True):
    pass


class S3Endpoint(LocationEndpoint, tag="s3", frozen=True):
    pass


class HuggingFaceSource(_Side, tag="huggingface", frozen=True):
    """A Hugging Face Hub repository: every file of ``revision``, or only ``files``.

    ``commit`` is the commit ``revision`` pointed at when the job was planned: the
    node records it in the job (so ``job.source`` shows it) and every file, after
    a restart too, comes from that commit. A request that sets it imports that
    commit (``revision`` then only names it).
    """

    repo: Annotated[str, msgspec.Meta(pattern=r"^[\w.-]+(/[\w.-]+)?$", max_length=200)]
    revision: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "main"
    files: list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]] | None = None
    repo_type: Literal["model", "dataset", "space"] = "model"
    commit: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{40}$")] | None = None


class UrlSource(_Side, tag="url", frozen=True):
    """Plain HTTP(S) files, each saved under the last segment of its URL path."""

    urls: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=8192)]],
        msgspec.Meta(min_length=1, max_length=MAX_ITEMS),
    ]


Source = LocalEndpoint | S3Endpoint | HuggingFaceSource | UrlSource
Destination = LocalEndpoint | S3Endpoint


class Item(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A file or directory to transfer, relative to the source path."""

    path: Annotated[str, msgspec.Meta(max_length=4096, examples=["config.json"])]
    type: Literal["file", "directory"]


class TransferSpec(msgspec.Struct, forbid_unknown_fields=True, rename="camel", frozen=True):
    """The body of ``POST /api/transfer`` and ``POST /api/transfer/check-conflicts``.

    ``items`` are required for location sources (local, s3) and ignored by
    imports (huggingface, url), which name their files themselves.
    ``conflictResolution`` defaults to ``skip``, which never destroys data.
    """

    source: Source
    destination: Destination
    items: Annotated[list[Item], msgspec.Meta(max_length=MAX_ITEMS)] = []
    conflict_resolution: Literal["overwrite", "skip", "rename"] = "skip"

    @property
    def conflict(self) -> Conflict:
        return Conflict(self.conflict_resolution)

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Plan:
    """The storages of a transfer, the files it will copy, and the spec to record
    for its job: the request's, with the version an import listed filled in
    (the Hub commit), so that the job's runs read that version."""

    source: Storage
    destination: Storage
    files: list[FileTask]
    spec: TransferSpec

    @property
    def total_bytes(self) -> int:
        return sum(max(f.size, 0) for f in self.files)  # UNKNOWN_SIZE counts as 0


def kind_of(spec: TransferSpec) -> str:
    """Seed 001's transfer type for a request."""
    source, destination = spec.source, spec.destination
    if isinstance(source, HuggingFaceSource):
        return "huggingface"
    if isinstance(source, UrlSource):
        return "url"
    if isinstance(source, LocalEndpoint) and isinstance(destination, S3Endpoint):
        return "s3-upload"
    if isinstance(source, S3Endpoint) and isinstance(destination, LocalEndpoint):
        return "s3-download"
    return "cross-storage"


async def plan(spec: TransferSpec, locations: Locations) -> Plan:
    """Resolve the storages and expand the request into files.

    Raises 400s for bad paths, unknown locations or items of the wrong type, and
    404 (:class:`SourceNotFound`) for an item that does not exist.
    """
    source = locations.source(spec.source)
    destination = locations.destination(spec.destination)
    destination_base = _paths.clean_base(spec.destination.path, what="destination.path")
    by_destination: dict[str, FileTask] = {}

    def add(entry: Entry, target: str) -> None:
        if not target:
            raise BadRequest("an item maps onto the destination root; name a file")
        known = by_destination.get(target)
        if known is not None and known.source != entry.path:
            raise BadRequest(f"{known.source!r} and {entry.path!r} both map to {target!r}")
        by_destination[target] = FileTask(
            len(by_destination),
            entry.path,
            target,
            entry.size,
            entry.mtime_ns,
            expected_sha256=entry.sha256,
        )

    if isinstance(spec.source, LocationEndpoint):
        if not spec.items:
            raise BadRequest("items: name at least one file or directory to transfer")
        source_base = _paths.clean_base(spec.source.path, what="source.path")
        for item in spec.items:
            relative = _paths.clean_relative(item.path)
            for entry, below in await _expand(source, source_base, relative, item):
                add(entry, _paths.join(destination_base, relative, below))
    else:  # imports list their own files, already as clean relative paths
        for entry in await source.walk(""):
            add(entry, _paths.join(destination_base, _paths.clean_relative(entry.path)))
        spec = _pinned(spec, source)
    return Plan(source, destination, list(by_destination.values()), spec)


def _pinned(spec: TransferSpec, source: Storage) -> TransferSpec:
    """``spec`` with the commit a Hub source was listed at recorded in its source."""
    if isinstance(spec.source, HuggingFaceSource) and isinstance(source, VersionedSource):
        pinned = msgspec.structs.replace(spec.source, commit=source.version)
        return msgspec.structs.replace(spec, source=pinned)
    return spec


async def _expand(source: Storage, base: str, relative: str, item: Item) -> list[tuple[Entry, str]]:
    """Each file of an item with its path below the item."""
    path = _paths.join(base, relative)
    if item.type == "file":
        entry = await source.stat(path)
        if entry is None:
            raise SourceNotFound(f"source file {path!r} does not exist")
        if entry.is_dir:
            raise BadRequest(f"{path!r} is a directory; send it with type 'directory'")
        return [(entry, "")]
    entries = await source.walk(path)
    prefix = len(path) + 1 if path else 0
    return [(e, e.path[prefix:]) for e in entries]


async def check_conflicts(spec: TransferSpec, locations: Locations) -> dict[str, Any]:
    """Seed 000's check-conflicts answer: which files already exist at the destination."""
    planned = await plan(spec, locations)
    conflicts: list[str] = []
    free: list[str] = []
    for file in planned.files:
        exists = await planned.destination.stat(file.destination) is not None
        (conflicts if exists else free).append(file.source)
    answer: dict[str, Any] = {"conflicts": conflicts, "nonConflicting": free}
    warning = large_folder_warning(len(planned.files), planned.total_bytes)
    if warning is not None:
        answer["warning"] = warning
    return answer


def large_folder_warning(count: int, total: int) -> dict[str, Any] | None:
    """Seed 000's ``large_folder`` warning for ``count`` files of ``total`` bytes, if due
    (also shown by ``streamer cp --dry-run`` for uploads, which the node does not plan)."""
    if count <= LARGE_FOLDER_FILES and total <= LARGE_FOLDER_BYTES:
        return None
    return {
        "type": "large_folder",
        "fileCount": count,
        "totalSize": total,
        "message": f"This folder contains {count} files ({round(total / 2**30)} GB). "
        "Transfer may take significant time.",
    }
